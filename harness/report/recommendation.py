"""The report's recommendation: the recommender's, never a ranking of the report's own.

When the run folder holds ``recommendation.json`` (``batchbench recommend``, possibly with SLO
overrides on its command line) the report shows exactly that; otherwise it asks
``harness.decide.recommend`` for the spec's own constraints and objective, in memory. Either way the
answer is brought into one small shape the report's sections share (see :func:`normalize`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.decide import recommend as recommender
from harness.errors import UserError
from harness.plan.spec import validate_spec
from harness.store.results import PointResult


def resolve(
    run_info: Mapping[str, Any],
    results: Sequence[PointResult],
    stored: Mapping[str, Any] | None,
    max_rate: Mapping[str, Any] | None,
    root: Path | None = None,
) -> dict[str, Any]:
    """The recommendation in the report's shape: the stored one, else freshly ranked."""
    if stored is not None:
        return normalize(stored, "recommendation.json")
    try:
        spec = validate_spec(run_info.get("spec"), source="run.json (spec)")
    except UserError as exc:
        return _none(f"the run's spec no longer validates: {exc}")
    searches = None if max_rate is None else list(max_rate.get("searches", []))
    run = recommender.RunData(
        spec=spec,
        results=list(results),
        run_id=str(run_info.get("run_id", "")),
        environment=dict(run_info.get("environment") or {}),
        searches=searches,
        root=root,
        confirmation=recommender.load_confirmation(root) if root else None,
    )
    try:
        ranked = recommender.recommend(run)
    except UserError as exc:
        return _none(str(exc))
    return normalize(ranked.as_dict(), "harness.decide.recommend")


def _none(why: str) -> dict[str, Any]:
    return normalize({"status": "no_candidates", "sentence": f"No recommendation: {why}"}, "none")


def normalize(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``recommendation.json`` reduced to what the report uses.

    ``key`` is the chosen candidate's key: a point key without its repeat (grid runs) or a
    configuration key (max-rate runs); ``point_keys`` are the stored points behind it.
    """
    chosen = raw.get("chosen") or {}
    return {
        "source": source,
        "status": raw.get("status"),
        "mode": raw.get("mode"),
        "sentence": raw.get("sentence") or "No recommendation.",
        "key": chosen.get("key"),
        "point_keys": list(chosen.get("point_keys") or []),
        "description": chosen.get("description"),
        "met_slo": chosen.get("meets_constraints") if chosen else None,
        "max_rate_rps": chosen.get("max_rate_rps"),
        "metrics": chosen.get("metrics") or {},
        "constraints": list(raw.get("constraints") or []),
        "margins": list(raw.get("margins") or []),
        "why": list(raw.get("why") or []),
        "runners_up": [c.get("key") for c in raw.get("runners_up") or [] if c.get("key")],
        "pareto": [c.get("key") for c in raw.get("pareto_front") or [] if c.get("key")],
        "baselines": _baselines(raw.get("baselines") or {}),
        "excluded": list(raw.get("excluded") or []),
        "batching_parameters": raw.get("batching_parameters"),
        "commands": raw.get("commands") or {},
        "decision": raw.get("decision"),
        "confirmed": bool(raw.get("confirmed")),
    }


def _baselines(baselines: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each reference the recommender compared against, when it differs from the choice."""
    names = {"unbatched": "the unbatched baseline", "tfserving_default": "TF Serving's defaults"}
    out = []
    for name, base in baselines.items():
        if base and not base.get("same_as_chosen") and base.get("gain") is not None:
            out.append({"name": name, "title": names.get(name, name), **base})
    return out
