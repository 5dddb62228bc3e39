"""``batchbench demo``: the main job on the built-in default.

Runs the shipped ``default`` sweep (the built-in ``mlp`` model on the local reference stack:
max batch size × batch timeout × replicas against the unbatched baseline) and ends with
the paths of the run folder and its HTML report.
"""

from __future__ import annotations

from pathlib import Path

from harness.plan.spec import load_preset, with_placement
from harness.report import write_report
from harness.store.results import new_run_id
from harness.sweep.loop import run_sweep

DEMO_PRESET = "default"


def run_demo(
    out: Path, placement: tuple[str | None, str | None, str | None] = (None, None, None)
) -> Path:
    """Run the default sweep into ``out/<run-id>``, with the command line's ``placement``
    (mode, server CPUs, generator CPUs) when given; returns the run folder."""
    spec = with_placement(load_preset(DEMO_PRESET), *placement)
    run_dir = run_sweep(spec, Path(out) / new_run_id(spec.name), report=False)
    report = write_report(run_dir)
    print(f"run folder: {run_dir.resolve()}")
    print(f"report: {report.resolve()}")
    return run_dir
