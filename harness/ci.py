"""``batchbench ci``: run the ``ci`` preset and gate on the baseline kept in the user's repo.

``run_ci`` is the whole command; ``gate`` is everything after the sweep (compare with the
baseline, or keep the run as the new baseline), a function of the run folder alone so it can
be tested without running a sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.decide.compare import (
    KEEP_RUNS,
    Comparison,
    Side,
    append_step_summary,
    compare_sides,
    load_side,
    summary_line,
    write_baseline,
    write_outputs,
)
from harness.errors import UserError

DEFAULT_BASELINE = Path(".batchbench") / "ci-baseline.json"
EXIT_PASS, EXIT_REGRESSION = 0, 1


def default_baseline_path(start: Path | None = None) -> Path:
    """``.batchbench/ci-baseline.json`` at the top of the git repo holding ``start`` (the
    working folder by default); in the working folder itself outside a repo."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder / DEFAULT_BASELINE
    return start / DEFAULT_BASELINE


def check_baseline(path: Path) -> None:
    """UserError telling how to make a baseline when there is none (before a sweep is run)."""
    if not path.is_file():
        raise UserError(
            f"no baseline at {path}: run `batchbench ci --update-baseline` on a known-good "
            f"commit (on the machine CI uses) and commit {path.name}"
        )


def gate(
    run_dir: Path,
    baseline: Path,
    *,
    update: bool = False,
    thresholds: Mapping[str, float] | None = None,
    step_summary: Path | None = None,
    keep: int = KEEP_RUNS,
) -> int:
    """Compare ``run_dir`` with ``baseline`` (0 pass, 1 regression) or, with ``update``, keep
    ``run_dir`` in the baseline with up to ``keep - 1`` earlier runs. Compare's files go into
    the run folder."""
    if update:
        path = write_baseline(run_dir, baseline, keep)
        runs = load_side(path).runs()
        print(f"baseline written: {path}, {runs} run(s) (commit it)")
        _warn_if_rough(load_side(path))
        return EXIT_PASS
    check_baseline(baseline)
    comparison = compare_sides(load_side(baseline), load_side(run_dir), thresholds)
    return publish(comparison, run_dir, step_summary)


def publish(comparison: Comparison, out: Path, step_summary: Path | None = None) -> int:
    """Write compare's files into ``out``, append the summary, print it; the exit code."""
    paths = write_outputs(comparison, out)
    if step_summary is not None:
        append_step_summary(comparison, step_summary)
    print(summary_line(comparison))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return EXIT_PASS if comparison.passed else EXIT_REGRESSION


def _warn_if_rough(side: Side) -> None:
    """A baseline from unstable points has wide intervals: the gate will catch less."""
    rough = [p.key for p in side.points if not (p.stable and p.valid)]
    if rough:
        print(
            f"warning: {len(rough)} of {len(side.points)} baseline points are unstable or "
            "invalid; their noise is wide, so only large regressions will be flagged. A quieter "
            "machine (or a dedicated CI runner) gives a sharper baseline."
        )


def run_ci(
    out: Path | None,
    baseline: Path | None,
    *,
    update: bool = False,
    thresholds: Mapping[str, float] | None = None,
    step_summary: Path | None = None,
    keep: int = KEEP_RUNS,
) -> int:
    """Run the ``ci`` preset into ``out`` (the run folder), then :func:`gate`."""
    from harness.plan.spec import load_preset
    from harness.sweep.loop import run_sweep

    baseline = baseline or default_baseline_path()
    if not update:
        check_baseline(baseline)  # before minutes of sweeping, not after
    # The report is written after the gate, so that it shows the comparison (compare.json).
    run_dir = run_sweep(load_preset("ci"), out, resume=False, report=False)
    code = gate(
        run_dir,
        baseline,
        update=update,
        thresholds=thresholds,
        step_summary=step_summary,
        keep=keep,
    )
    _write_report(run_dir)
    return code


def _write_report(run_dir: Path) -> None:
    try:
        from harness.report import write_report
    except ImportError:  # the report is optional to the gate
        return
    print(f"report: {write_report(run_dir)}")


def run_ci_ab(
    base_command: str,
    out: Path | None,
    *,
    rounds: int,
    thresholds: Mapping[str, float] | None = None,
    step_summary: Path | None = None,
) -> int:
    """The ``ci`` preset's points in interleaved rounds: BASE on ``base_command``'s server
    (e.g. the base branch installed in another environment), HEAD on this installation's."""
    import shlex

    from harness.ab import BASE, HEAD, run_ab
    from harness.plan.rounds import Arm
    from harness.plan.spec import load_preset

    base = Arm(BASE, command=tuple(shlex.split(base_command)))
    return run_ab(
        load_preset("ci"),
        base,
        Arm(HEAD),
        rounds=rounds,
        out=out,
        thresholds=thresholds,
        step_summary=step_summary,
    )
