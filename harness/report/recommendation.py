"""The report's recommendation: the recommender's, never a ranking of the report's own.

When the run folder holds ``recommendation.json`` (``batchbench recommend``, possibly with SLO
overrides on its command line) the report shows exactly that; otherwise it asks
``harness.decide.recommend`` for the spec's own constraints and objective, in memory. Either way the
answer is brought into one small shape the report's sections share (see :func:`normalize`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.decide.recommend import recommend
from harness.errors import UserError
from harness.store.run_folder import RunFolder


@dataclass(frozen=True)
class ShownRecommendation:
    """``recommendation.json`` reduced to what the report uses.

    ``key`` is the chosen candidate's key: a point key without its repeat (grid runs) or a
    configuration key (max-rate runs); ``point_keys`` are the stored points behind it.
    """

    source: str
    status: str | None
    mode: str | None
    sentence: str
    key: str | None = None
    point_keys: list[str] = field(default_factory=list)
    description: str | None = None
    met_slo: bool | None = None
    max_rate_rps: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    constraints: list[dict[str, Any]] = field(default_factory=list)
    margins: list[dict[str, Any]] = field(default_factory=list)
    why: list[str] = field(default_factory=list)
    runners_up: list[str] = field(default_factory=list)
    pareto: list[str] = field(default_factory=list)
    baselines: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    batching_parameters: str | None = None
    commands: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] | None = None  # ties and margins (recommendation.json's)
    confirmed: bool = False  # the figures come from a confirmation run
    per_model: dict[str, Any] = field(default_factory=dict)  # model -> figures, batching file

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve(run: RunFolder, stored: Mapping[str, Any] | None) -> ShownRecommendation:
    """The recommendation in the report's shape: the stored one, else freshly ranked."""
    if stored is not None:
        return normalize(stored, "recommendation.json")
    if run.spec is None:
        return _none(f"the run's spec no longer validates: {run.spec_error}")
    try:
        ranked = recommend(run)
    except UserError as exc:
        return _none(str(exc))
    return normalize(ranked.as_dict(), "harness.decide.recommend")


def _none(why: str) -> ShownRecommendation:
    return normalize({"status": "no_candidates", "sentence": f"No recommendation: {why}"}, "none")


def normalize(raw: Mapping[str, Any], source: str) -> ShownRecommendation:
    """``recommendation.json`` (as written, or as ``Recommendation.as_dict`` gives it) reduced."""
    chosen = raw.get("chosen") or {}
    return ShownRecommendation(
        source=source,
        status=raw.get("status"),
        mode=raw.get("mode"),
        sentence=raw.get("sentence") or "No recommendation.",
        key=chosen.get("key"),
        point_keys=list(chosen.get("point_keys") or []),
        description=chosen.get("description"),
        met_slo=chosen.get("meets_constraints") if chosen else None,
        max_rate_rps=chosen.get("max_rate_rps"),
        metrics=chosen.get("metrics") or {},
        constraints=list(raw.get("constraints") or []),
        margins=list(raw.get("margins") or []),
        why=list(raw.get("why") or []),
        runners_up=[c.get("key") for c in raw.get("runners_up") or [] if c.get("key")],
        pareto=[c.get("key") for c in raw.get("pareto_front") or [] if c.get("key")],
        baselines=_baselines(raw.get("baselines") or {}),
        excluded=list(raw.get("excluded") or []),
        batching_parameters=raw.get("batching_parameters"),
        commands=raw.get("commands") or {},
        decision=raw.get("decision"),
        confirmed=bool(raw.get("confirmed")),
        per_model=dict(raw.get("per_model") or {}),
    )


def _baselines(baselines: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each reference the recommender compared against, when it differs from the choice."""
    names = {"unbatched": "the unbatched baseline", "tfserving_default": "TF Serving's defaults"}
    out = []
    for name, base in baselines.items():
        if base and not base.get("same_as_chosen") and base.get("gain") is not None:
            out.append({"name": name, "title": names.get(name, name), **base})
    return out
