"""``batchbench ab``: two arms measured in interleaved rounds inside one job, compared paired.

A stored baseline was measured at another time, on a machine in another state; the noise
between two runs is larger than the noise inside one, and a gate built on it either cries wolf
or misses real changes. Here both arms (a base and a head that differ by model, server
program, flags or batching file) run the same points in the same job: round by round, the arms
in A B / B A order, each measurement on fresh servers. Each round gives one ratio per point and
metric; the paired interval of those ratios is judged with compare's thresholds, and the same
files are written (``compare.json``, ``compare.md``, ``compare-junit.xml``) with the same exit
codes (0 pass, 1 regression, 2 usage or data error).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.ci import publish
from harness.decide.compare import compare_sides, load_side
from harness.errors import UserError
from harness.plan.rounds import Arm, plan_rounds
from harness.plan.spec import SweepSpec
from harness.store.results import new_run_id, write_json
from harness.sweep.rounds import fixed_points, run_steps, steps_as_dicts

AB_FILE = "ab.json"
DEFAULT_ROUNDS = 4
BASE, HEAD = "base", "head"


def run_ab(
    spec: SweepSpec,
    base: Arm,
    head: Arm,
    *,
    rounds: int = DEFAULT_ROUNDS,
    out: Path | None = None,
    thresholds: Mapping[str, float] | None = None,
    step_summary: Path | None = None,
    live: bool | None = None,
) -> int:
    """Measure both arms in ``rounds`` interleaved rounds into ``out``, compare them paired,
    write compare's files into ``out``; 0 when HEAD did not regress against BASE, 1 when it
    did."""
    if rounds < 2:
        raise UserError(f"--rounds: a paired comparison needs at least 2 rounds (got {rounds})")
    out = out or Path("reports") / new_run_id(f"{spec.name}-ab")
    points = fixed_points(spec)
    steps = plan_rounds([base.name, head.name], points, rounds)
    print(
        f"A/B: {base.describe()} vs {head.describe()}\n"
        f"{len(points)} point(s) x 2 arms x {rounds} rounds = {len(steps)} measurements, "
        f"each on fresh servers; folder: {out}",
        flush=True,
    )
    if not base.differences() and not head.differences():
        print("the arms are identical: this is an A/A check of the gate's false alarms")
    folders = run_steps(spec, [base, head], steps, out, live=live)
    write_json(
        out / AB_FILE,
        {
            "arms": [{"name": a.name, **a.differences()} for a in (base, head)],
            "rounds": rounds,
            "steps": steps_as_dicts(steps),
        },
    )
    comparison = compare_sides(
        load_side(folders[base.name]), load_side(folders[head.name]), thresholds, paired=True
    )
    return publish(comparison, out, step_summary)
