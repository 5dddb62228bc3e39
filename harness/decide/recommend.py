"""The recommendation: which server configuration to run, and the files and commands to run it.

``recommend(run)`` puts together the ranking (``harness.decide.ranking``: pure, and plain about
it when no configuration met every constraint), its words (``harness.decide.words``) and, for a
server the sweep started, the ``batching_parameters.txt`` and command lines to deploy the choice
(``harness.decide.deploy``) into one :class:`Recommendation`; ``write_recommendation`` puts
``recommendation.json`` and ``batching_parameters.txt`` into the run folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.decide import deploy, words
from harness.decide.ranking import (
    P99,
    THROUGHPUT,
    Candidate,
    Constraint,
    Gain,
    Mode,
    Ranked,
    Status,
    combine_worst,
    default_slo,
    rank_run,
)
from harness.decide.ties import Decision
from harness.plan.spec import Objective, SweepSpec
from harness.store.layout import (
    BATCHING_FILE,
    MODEL_CONFIG_FILE,
    PER_MODEL_BATCHING_FILE,
    PER_MODEL_DIR,
    RECOMMENDATION_FILE,
)
from harness.store.results import PointResult, read_json, write_atomically, write_json
from harness.store.run_folder import RunFolder, load_run


@dataclass(frozen=True)
class Recommendation:
    """The ranked outcome of a run, in words and ready to deploy. ``as_dict()`` is
    ``recommendation.json``."""

    run_id: str
    mode: Mode
    status: Status
    constraints: list[Constraint]
    objective: Objective
    sentence: str
    chosen: Candidate | None
    runners_up: list[Candidate]
    ranking: list[Candidate]
    excluded: list[dict[str, str]]
    pareto: list[Candidate]
    baselines: dict[str, Any]  # as recommendation.json holds them (see _gain_dict)
    why: list[str]
    margins: list[dict[str, Any]]
    batching_text: str | None  # None: batching off, or a server the sweep did not start
    commands: dict[str, Any]
    decision: Decision | None = None  # ties and margins (harness.decide.ties)
    confirmed: bool = False  # figures from the run's confirmation (RUN/confirm/)
    # A multi-model sweep: per model, the chosen point's figures (worst repeat) and its
    # batching_params.pbtxt (None: batching off, or a server the sweep did not start).
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "status": self.status,
            "sentence": self.sentence,
            "constraints": [c.as_dict() for c in self.constraints],
            "objective": _objective_dict(self.objective),
            "chosen": _candidate_dict(self.chosen) if self.chosen else None,
            "margins": self.margins,
            "why": self.why,
            "runners_up": [_candidate_dict(c) for c in self.runners_up],
            "baselines": self.baselines,
            "pareto_front": [_pareto_entry(c) for c in self.pareto],
            "ranking": [_candidate_dict(c) for c in self.ranking],
            "excluded": self.excluded,
            "batching_parameters": self.batching_text,
            "commands": self.commands,
            "decision": self.decision.as_dict() if self.decision else None,
            "confirmed": self.confirmed,
            "per_model": self.per_model,
        }


def recommend(
    run: RunFolder | Path | str,
    *,
    slo: Mapping[str, float] | None = None,
    objective: Objective | None = None,
    top: int = 3,
) -> Recommendation:
    """Rank a run (a folder, or a :class:`RunFolder`) and pick the configuration to deploy.

    ``slo`` (metric ID → bound) and ``objective`` default to the spec's ``recommend`` section;
    ``top`` is how many runners-up to name (the best of each other configuration). When the
    run has a confirmation (``RUN/confirm/``) the ranking, its intervals and ties come from it.
    """
    data = run if isinstance(run, RunFolder) else load_run(run)
    spec = data.checked_spec()
    slo = dict(default_slo(spec) if slo is None else slo)
    objective = objective or spec.recommend.objective
    ranked, unconfirmed = _ranked(data, slo, objective, top)
    sentence, why = words.sentence(ranked, len(data.results)), words.reasons(ranked, spec)
    if unconfirmed:
        sentence += " " + unconfirmed
        why.append(unconfirmed)
    results = data.confirmation if ranked.confirmed and data.confirmation else data.results
    # A server the sweep did not start (an external target) is not ours to configure.
    deployed = ranked.chosen if spec.target.kind != "external" else None
    return Recommendation(
        run_id=data.run_id,
        mode=ranked.mode,
        status=ranked.status,
        constraints=ranked.constraints,
        objective=ranked.objective,
        sentence=sentence,
        chosen=ranked.chosen,
        runners_up=ranked.runners_up,
        ranking=ranked.ranking,
        excluded=ranked.excluded,
        pareto=ranked.pareto,
        baselines={name: _gain_dict(gain) for name, gain in ranked.baselines.items()},
        why=why,
        margins=ranked.margins,
        batching_text=deploy.batching_text(deployed, ranked.mode, data.run_id)
        if deployed
        else None,
        commands=deploy.server_commands(deployed.point, spec, data.root, data.environment)
        if deployed
        else {},
        decision=ranked.decision,
        confirmed=ranked.confirmed,
        per_model=_per_model(ranked.chosen, deployed, results, spec, data.run_id),
    )


def _per_model(
    chosen: Candidate | None,
    deployed: Candidate | None,
    results: Sequence[PointResult],
    spec: SweepSpec,
    run_id: str,
) -> dict[str, dict[str, Any]]:
    """Per hosted model: the chosen point's figures (worst over its repeats) and, for a
    server the sweep started, its batching_params.pbtxt. Empty for a one-model sweep."""
    if chosen is None or not spec.multi_model:
        return {}
    keys = set(chosen.point_keys)
    figures: dict[str, list[dict[str, float | None]]] = {}
    for result in results:
        if result.key in keys:
            for entry in result.by_model:
                figures.setdefault(entry["model"], []).append(entry["metrics"])
    texts = deploy.per_model_batching(deployed, spec, run_id) if deployed else {}
    return {
        model.served_name: {
            "metrics": combine_worst(figures.get(model.served_name, [])),
            "batching_parameters": texts.get(model.served_name),
        }
        for model in spec.hosted_models
    }


def _ranked(
    data: RunFolder, slo: Mapping[str, float], objective: Objective, top: int
) -> tuple[Ranked, str | None]:
    """The confirmation's ranking when the run has one that counted a point, else the sweep's;
    and, when the confirmation counted none, the words saying the pick is unconfirmed (rounds
    that all failed or were unstable confirm nothing, and refute nothing either)."""
    swept = rank_run(data.results, data.searches, data.environment, slo, objective, top)
    if data.confirmation is None or data.searches is not None:
        return swept, None
    confirmed = rank_run(
        data.confirmation, None, data.environment, slo, objective, top, confirmed=True
    )
    if confirmed.chosen is not None:
        return confirmed, None
    return swept, words.unconfirmed_text(confirmed.excluded)


def write_recommendation(rec: Recommendation, run_dir: Path | str) -> dict[str, Path]:
    """Write ``recommendation.json`` and (batching on) ``batching_parameters.txt``."""
    run_dir = Path(run_dir)
    paths = {"recommendation": write_json(run_dir / RECOMMENDATION_FILE, rec.as_dict())}
    batching = run_dir / BATCHING_FILE
    if rec.batching_text is not None:
        paths["batching_parameters"] = write_atomically(batching, rec.batching_text)
    else:
        # A file left from an earlier recommendation would contradict this one.
        batching.unlink(missing_ok=True)
    # Files left from an earlier recommendation would contradict this one.
    shutil.rmtree(run_dir / PER_MODEL_DIR, ignore_errors=True)
    if model_config := rec.commands.get("model_config"):
        paths["model_config"] = write_atomically(
            run_dir / PER_MODEL_DIR / MODEL_CONFIG_FILE, model_config
        )
    for model, entry in rec.per_model.items():
        if entry["batching_parameters"] is not None:
            path = run_dir / PER_MODEL_DIR / model / PER_MODEL_BATCHING_FILE
            paths[f"batching_params:{model}"] = write_atomically(path, entry["batching_parameters"])
    return paths


def read_recommendation(run_dir: Path) -> dict[str, Any] | None:
    """The ``recommendation.json`` a run folder holds, as written; None when it holds none."""
    path = Path(run_dir) / RECOMMENDATION_FILE
    return read_json(path) if path.is_file() else None


# --- recommendation.json -------------------------------------------------------------------------


def _candidate_dict(candidate: Candidate) -> dict[str, Any]:
    point = candidate.point
    return {
        "key": candidate.key,
        "config_key": point.server.key,
        "server": point.server.as_dict(),
        "protocol": point.protocol,
        "load_kind": point.load_kind,
        "load": point.load,
        "point_keys": candidate.point_keys,
        "repeats": len(candidate.point_keys),
        "metrics": candidate.metrics,
        "meets_constraints": candidate.feasible,
        "misses": candidate.misses,
        "worst_miss": candidate.worst_miss,
        "score": candidate.score,
        "max_rate_rps": candidate.max_rate_rps,
        "description": words.describe_config(point),
    }


def _gain_dict(gain: Gain | None) -> dict[str, Any] | None:
    if gain is None:
        return None
    return {
        "key": gain.base.key,
        "description": words.describe_config(gain.base.point),
        "same_as_chosen": gain.same_as_chosen,
        "meets_constraints": gain.base.feasible,
        "figure": gain.figure,
        "chosen_value": gain.chosen_value,
        "baseline_value": gain.baseline_value,
        "gain": gain.gain,
        "chosen_p99_ms": gain.chosen_p99_ms,
        "baseline_p99_ms": gain.baseline_p99_ms,
        "p99_change": gain.p99_change,
    }


def _pareto_entry(candidate: Candidate) -> dict[str, Any]:
    return {
        "key": candidate.key,
        "description": words.describe_config(candidate.point),
        THROUGHPUT: candidate.metrics.get(THROUGHPUT),
        P99: candidate.metrics.get(P99),
        "meets_constraints": candidate.feasible,
    }


def _objective_dict(objective: Objective) -> dict[str, Any]:
    return {k: v for k, v in objective.model_dump().items() if v is not None}


__all__ = [
    "Recommendation",
    "load_run",
    "read_recommendation",
    "recommend",
    "write_recommendation",
]
