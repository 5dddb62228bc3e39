"""The order of interleaved measurements: A/B arms, or the candidates of a confirmation run.

Measuring one arm after the other lets anything that drifts during a job (the machine's other
load, thermal state, a neighbour's build) pass for a difference between them. Interleaving in
rounds, with the order rotated and reversed from round to round (A B, B A, B A, A B ...), puts
every arm in every position equally often, so a drift weighs on all arms alike and a paired
analysis per round cancels it. Pure functions: the driver (harness.sweep.rounds) runs the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from harness.plan.points import Point

T = TypeVar("T")


def balanced_rounds(arms: Sequence[T], rounds: int) -> list[list[T]]:
    """The order of ``arms`` in each round: rotated by one every second round and reversed in
    every odd round. Two arms: A B, B A, B A, A B, ... (the ABBA design); N arms: every arm
    takes every position equally often over 2N rounds, and precedes each other arm as often as
    it follows it."""
    out = []
    for r in range(rounds):
        shift = (r // 2) % max(1, len(arms))
        order = list(arms[shift:]) + list(arms[:shift])
        out.append(order[::-1] if r % 2 else order)
    return out


@dataclass(frozen=True)
class Arm:
    """One side of an A/B comparison: what its servers differ by from the spec's own.

    Each field left empty keeps the spec's: the model base path, the server program (a command
    line), flags added to every replica, and a batching parameters file served instead of
    each batching configuration's own.
    """

    name: str
    model_base_path: Path | None = None
    command: tuple[str, ...] = ()
    server_flags: tuple[str, ...] = field(default=())
    batching_file: Path | None = None

    def differences(self) -> dict[str, Any]:
        """What this arm sets, as given (empty: the spec as it is)."""
        out: dict[str, Any] = {
            "model_base_path": str(self.model_base_path) if self.model_base_path else None,
            "command": list(self.command) or None,
            "server_flags": list(self.server_flags) or None,
            "batching_file": str(self.batching_file) if self.batching_file else None,
        }
        return {k: v for k, v in out.items() if v is not None}

    def describe(self) -> str:
        """``head (server_flags: --x=1)``; ``base (as the spec)``."""
        what = "; ".join(f"{k}: {_text(v)}" for k, v in self.differences().items())
        return f"{self.name} ({what or 'as the spec'})"


def _text(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class Step:
    """One measurement of the plan: ``point`` (its ``repeat`` is the round) on ``arm``."""

    round: int
    arm: str
    point: Point


def plan_rounds(arms: Sequence[str], points: Sequence[Point], rounds: int) -> list[Step]:
    """Every point on every arm in every round: round by round, point by point, the arms in
    :func:`balanced_rounds` order; each measurement's point carries its round as its repeat,
    so the same point of one round has the same key on every arm."""
    orders = balanced_rounds(list(arms), rounds)
    return [
        Step(r, arm, replace(point, repeat=r))
        for r, order in enumerate(orders)
        for point in points
        for arm in order
    ]


def plan_confirmation(points: Sequence[Point], rounds: int, arm: str = "confirm") -> list[Step]:
    """Candidates re-measured in rounds: all of them each round, in :func:`balanced_rounds`
    order (rotated and reversed round to round), each carrying its round as its repeat."""
    return [
        Step(r, arm, replace(point, repeat=r))
        for r, order in enumerate(balanced_rounds(list(points), rounds))
        for point in order
    ]
