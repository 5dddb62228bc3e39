"""The ``bayesian`` search strategy: Optuna's TPE over a space's coordinates.

Kept apart from harness.plan.search because importing Optuna costs time every other command
need not pay. See harness.plan.search for the shared parts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState

from harness.plan.points import Point
from harness.plan.search import Goal, Observation, SearchWalk, Summary
from harness.plan.space import Coordinate, Space

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDY_NAME = "search"
# The sampler may keep proposing points already measured; after this many proposals in a row
# that measure nothing new, the search has converged as far as it can tell.
MAX_IDLE_PROPOSALS = 30
# A constraint value for a figure that is missing (an infinite miss): Optuna needs finite ones.
MISSING = 1e6


def journal_storage(path: Path) -> optuna.storages.BaseStorage:
    """An Optuna storage in one append-only file (the run folder's), safe to resume."""
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def startup_trials(budget: int) -> int:
    """Random trials before TPE models the space: a third of the budget, 3 to 10."""
    return max(3, min(10, budget // 3))


class BayesianSearch(SearchWalk):
    """TPE, seeded, the SLO as Optuna constraints (each SLO metric's relative miss, 0 when
    met: Optuna counts a trial feasible when every constraint is <= 0); stops at the budget or
    after ``patience`` measured trials without a new best. ``storage`` None: in memory."""

    strategy = "bayesian"

    def __init__(
        self,
        space: Space,
        goal: Goal,
        budget: int,
        *,
        patience: int,
        seed: int,
        storage: optuna.storages.BaseStorage | None = None,
        known: Mapping[str, tuple[Summary | None, Sequence[Summary]]] | None = None,
    ) -> None:
        super().__init__(space, goal, budget, known)
        self.patience = patience
        with warnings.catch_warnings():  # multivariate TPE is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=startup_trials(budget),
                multivariate=True,
            )
        self.study = optuna.create_study(
            study_name=STUDY_NAME,
            storage=storage,
            sampler=sampler,
            direction="maximize" if goal.higher_is_better else "minimize",
            load_if_exists=True,
        )

    def _walk(self) -> Iterator[Point]:
        self._resume()
        yield from self._trials()

    def _resume(self) -> None:
        """Take up a stored study: its measured trials count; one cut short by a kill is told
        from the stored point when it was written, else marked failed (to be proposed anew)."""
        for trial in self.study.get_trials(deepcopy=False):
            key = trial.user_attrs.get("key")
            if trial.state == TrialState.RUNNING:
                self.study.tell(trial.number, state=TrialState.FAIL)
                if key in self._known:
                    self.study.add_trial(self._completed(trial, self._known[key]))
            if key in self._known and key not in self._visited:
                self._visited.add(key)
                self._record(self._coordinate(trial.params), self._known[key])

    def _trials(self) -> Iterator[Point]:
        idle = 0
        while self._since_best() < self.patience:
            if len(self._visited) >= min(self.budget, len(self.space)):
                self.stopped = "budget" if self.budget < len(self.space) else "space measured"
                return
            if idle >= MAX_IDLE_PROPOSALS:
                self.stopped = "sampler converged"
                return
            trial = self.study.ask()
            coordinate = tuple(
                trial.suggest_int(axis.name, 0, len(axis.values) - 1) for axis in self.space.axes
            )
            point = self.space.point(coordinate)
            if point is None:  # excluded by a matrix rule: infeasible, never to be proposed
                trial.set_constraint("excluded", 1.0)
                self.study.tell(trial, 0.0)
                idle += 1
                continue
            idle = idle + 1 if point.key in self._visited else 0
            trial.set_user_attr("key", point.key)
            yield from self._visit(coordinate)
            self._tell(trial, self._known[point.key])
        self.stopped = f"no new best in {self.patience} trials"

    def _tell(self, trial: Trial, obs: Observation) -> None:
        for key, value in self._constraints(obs).items():
            trial.set_constraint(key, value)
        self.study.tell(trial, self._value(obs))

    def _constraints(self, obs: Observation) -> dict[str, float]:
        """Each SLO metric's relative miss, and ``failed`` (1 for a point that failed or that
        the recommender leaves out): a failed point is an infeasible trial, so the sampler
        learns to avoid it instead of proposing it again."""
        failed = obs.estimate is None
        misses = {m: 0.0 if failed else min(obs.misses.get(m, 0.0), MISSING) for m in self.goal.slo}
        return {"failed": 1.0 if failed else 0.0, **misses}

    @staticmethod
    def _value(obs: Observation) -> float:
        # An infeasible trial ranks below every feasible one whatever its value (Optuna's
        # constrained TPE), so a failed point's placeholder value never decides anything.
        return obs.estimate if obs.estimate is not None else 0.0

    def _completed(self, cut: FrozenTrial, obs: Observation) -> FrozenTrial:
        """The trial a kill cut short, as measured: its point was written before the kill."""
        return optuna.trial.create_trial(
            params=cut.params,
            distributions=cut.distributions,
            value=self._value(obs),
            user_attrs=cut.user_attrs,
            system_attrs={f"constraints:{m}": v for m, v in self._constraints(obs).items()},
        )

    def _coordinate(self, params: Mapping[str, Any]) -> Coordinate:
        return tuple(int(params[axis.name]) for axis in self.space.axes)

    def _since_best(self) -> int:
        """Measured trials since the best so far last changed (all of them: no best yet)."""
        since, best = 0, None
        for trial in self.trials:
            if trial["best_key"] != best and trial["best_key"] is not None:
                since, best = 0, trial["best_key"]
            else:
                since += 1
        return since
