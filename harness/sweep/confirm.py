"""Confirmation runs: the tied-best configurations measured again, interleaved, before deciding.

A sweep measures each configuration once per repeat, minutes apart from the others, so what
the machine did in between weighs on the ranking. A confirmation takes the configurations the
sweep could not tell apart from the best (at most ``top``, best first) and the unbatched
baseline when the sweep has one, and measures all of them in ``rounds`` rounds, the order
rotated and reversed every round (harness.plan.rounds), each on fresh servers. The results go
to ``RUN/confirm/`` (a run folder, the round as the repeat); the recommender then takes its
figures from there and compares the candidates paired by round.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness.decide.recommend import Recommendation, recommend
from harness.errors import UserError
from harness.plan.points import Point
from harness.plan.rounds import Arm, plan_confirmation
from harness.store.layout import CONFIRM_DIR
from harness.store.run_folder import load_run
from harness.sweep.rounds import run_steps


def confirmation_points(rec: Recommendation, top: int, swept: Sequence[Point]) -> list[Point]:
    """The tied-best set (capped at ``top``, in the tie-break's order) and the unbatched
    baseline the sweep measured at the chosen replicas, protocol and load (whatever its own
    verdict was: confirming is measuring it again); just the chosen one when nothing else ties
    or there is no tie analysis. Empty when nothing met the constraints."""
    if rec.chosen is None or not rec.chosen.feasible:
        return []
    by_key = {c.key: c for c in rec.ranking}
    keys = rec.decision.tied[:top] if rec.decision else [rec.chosen.key]
    if rec.chosen.key not in keys:  # the cap must not drop the pick itself
        keys = [rec.chosen.key, *keys[: top - 1]]
    points = [by_key[k].point for k in keys]
    chosen = rec.chosen.point
    baseline = next((p for p in swept if p.batching is None and _same_load(p, chosen)), None)
    if baseline is not None and baseline.group_key not in keys:
        points.append(baseline)
    return points


def _same_load(a: Point, b: Point) -> bool:
    return (a.replicas, a.protocol, a.load_kind, a.load) == (
        b.replicas,
        b.protocol,
        b.load_kind,
        b.load,
    )


def run_confirmation(
    run_dir: Path, top: int, rounds: int, *, live: bool | None = None
) -> Path | None:
    """Confirm ``run_dir``'s recommendation in ``rounds`` rounds; the confirmation folder, or
    None when there is nothing to confirm. A confirmation already there is replaced."""
    if rounds < 2:
        raise UserError(
            f"confirm.rounds: a paired comparison needs at least 2 rounds (got {rounds})"
        )
    data = load_run(run_dir)
    if data.searches is not None:
        raise UserError("confirm: re-measures fixed points; not for find_max_rate runs")
    # What to confirm is decided from the sweep itself, not from an earlier confirmation.
    swept = [r.point for r in data.results]
    points = confirmation_points(recommend(replace(data, confirmation=None)), top, swept)
    if not points:
        print("confirmation: no configuration met the constraints; nothing to confirm", flush=True)
        return None
    folder = Path(run_dir) / CONFIRM_DIR
    shutil.rmtree(folder, ignore_errors=True)
    steps = plan_confirmation(points, rounds, arm=CONFIRM_DIR)
    keys = ", ".join(p.key.removesuffix("-rep0") for p in points)
    print(
        f"confirmation: {len(points)} candidate(s) x {rounds} rounds, fresh servers each: {keys}",
        flush=True,
    )
    run_steps(data.checked_spec(), [Arm(CONFIRM_DIR)], steps, Path(run_dir), live=live)
    return folder
