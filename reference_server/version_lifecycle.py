"""Which versions to load and unload next: TF Serving's availability-preserving policy, pure.

The file-system source says which versions are *aspired* (on disk and chosen by the model's
version policy); the manager compares that with the versions it holds. As in TF Serving's
``AvailabilityPreservingPolicy``, a version that is no longer aspired is unloaded only when an
aspired version is AVAILABLE (or nothing is aspired any more), so a model never goes from
serving to not serving because a newer version is still loading or failed to load.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass


class VersionState(enum.IntEnum):
    """ModelVersionStatus.State values (get_model_status.proto)."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionPlan:
    """Versions to load (newest first) and to unload, for one model."""

    load: tuple[int, ...] = ()
    unload: tuple[int, ...] = ()


def versions_to_load(
    aspired: Iterable[int], current: Mapping[int, VersionState], failed: Collection[int] = ()
) -> tuple[int, ...]:
    """Aspired versions not held yet, newest first.

    A version that failed to load stays failed while it is aspired (TF Serving does not retry
    it after its load retries); one that was unloaded cleanly may be loaded again.
    """
    wanted = [
        v
        for v in aspired
        if v not in failed
        and current.get(v, VersionState.END) in (VersionState.START, VersionState.END)
    ]
    return tuple(sorted(wanted, reverse=True))


def versions_to_unload(
    aspired: Iterable[int], current: Mapping[int, VersionState]
) -> tuple[int, ...]:
    """AVAILABLE versions no longer aspired that can go without losing availability.

    They all go when nothing is aspired or an aspired version is AVAILABLE; otherwise only
    the newest of them stays (TF Serving unloads surplus un-aspired versions one by one).
    """
    aspired = set(aspired)
    serving_unaspired = sorted(
        v for v, s in current.items() if v not in aspired and s == VersionState.AVAILABLE
    )
    aspired_serving = any(current.get(v) == VersionState.AVAILABLE for v in aspired)
    if not aspired or aspired_serving:
        return tuple(serving_unaspired)
    return tuple(serving_unaspired[:-1])


def plan_versions(
    aspired: Iterable[int], current: Mapping[int, VersionState], failed: Collection[int] = ()
) -> VersionPlan:
    """Both halves of the next step: what to load now, and what may be unloaded now."""
    aspired = tuple(aspired)
    return VersionPlan(
        load=versions_to_load(aspired, current, failed),
        unload=versions_to_unload(aspired, current),
    )
