"""The one place that hands out trials: ``TrialDealer``.

Every backend asks the dealer for its next trial (the local runner's parent process, the Ray
driver); workers only train and report. Each claim runs under the storage's machine-wide lock
(``storage_lock``), so several commands on one storage never claim the same grid point, and it
first fails the stale RUNNING trials of dead processes (``search.records.liveness``), so their
points run again.

A grid study is run from its missing points, not with Optuna's ``GridSampler`` (which counts
FAIL as done and shuffles its grid with the sampler seed): a point is done when a COMPLETE or
PRUNED trial has its parameters under the study's fixed settings, and taken while a live trial
runs it. Points whose trials failed or were interrupted in earlier runs come first, then the
rest in the grid's order, whatever ``--seed`` and the number of workers; a point that failed in
this run waits for the next run. Other studies ask their sampler
(``study.ask`` and the searched values drawn here), so a seeded single-process search draws
the same trials on every run.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from objectives import get_objective
from objectives.config import config_to_dict
from objectives.errors import HPSearchError
from search.driver.trial import grid_search_space, suggest_values
from search.records.liveness import OWNER_ATTR, Owner, stale_reason
from search.records.storage import storage_lock
from search.study.spec import StudySpec

STALE_ERROR = "worker died: {reason} before the trial ended"


class SamplerError(HPSearchError):
    """The study's sampler raised while drawing a trial (every later draw would likely too)."""


class TrialDealer:
    """Claims trials for one run of a study.

    Args:
        study: The study, loaded with the sampler that draws searched values.
        spec: The study file (its grid or space, and its fixed settings).
        storage_url: The storage's URL (for its lock).
        run_id: Stored on each claimed trial as the ``run_id`` user attribute.
    """

    def __init__(self, study: optuna.Study, spec: StudySpec, storage_url: str, run_id: str):
        self.study = study
        self.spec = spec
        self.storage_url = storage_url
        self.run_id = run_id
        self.failed_stale = 0  # stale trials this dealer has failed
        self.fixed = _fixed_config(spec) if spec.is_grid else {}  # built once, read per claim

    def next_trial(self, owner: Owner) -> int | None:
        """Create the next trial (RUNNING, owned by ``owner``) and return its id; None when
        a grid has no point left to run."""
        with storage_lock(self.storage_url):
            trials = self.study.get_trials(deepcopy=False)
            if self._fail_stale(trials):
                trials = self.study.get_trials(deepcopy=False)
            if self.spec.is_grid:
                point = self._next_grid_point(trials)
                return None if point is None else self._create_grid_trial(point, owner)
            return self._ask(trials, owner)

    def _ask(self, before: list[FrozenTrial], owner: Owner) -> int:
        """A new trial with the sampler's values; a sampler that fails leaves no orphan: the
        trial it was drawing for is FAIL with the sampler's error, and the run stops."""
        trial_id: int | None = None
        try:
            trial = self.study.ask()
            trial_id = trial._trial_id
            self._own(trial_id, owner)
            suggest_values(trial, self.spec)
            return trial_id
        except Exception as exc:
            if trial_id is None:  # ask() created the trial, then the sampler raised
                known = {t._trial_id for t in before}
                new = [t for t in self.study.get_trials(deepcopy=False)
                       if t._trial_id not in known and t.state == TrialState.RUNNING]
                trial_id = new[-1]._trial_id if new else None
            message = f"the sampler failed: {type(exc).__name__}: {exc}"
            if trial_id is not None:
                storage = self.study._storage
                storage.set_trial_user_attr(trial_id, "run_id", self.run_id)
                storage.set_trial_user_attr(trial_id, "error", message)
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
            raise SamplerError(f"{message.splitlines()[0]}; try another --sampler") from None

    def missing_points(self) -> int:
        """Grid points not yet done (0 for a study with a search space)."""
        if not self.spec.is_grid:
            return 0
        with storage_lock(self.storage_url):
            trials = self.study.get_trials(deepcopy=False)
            self._fail_stale(trials)
            trials = self.study.get_trials(deepcopy=False)
        done = _points(trials, self.spec, self.fixed, (TrialState.COMPLETE, TrialState.PRUNED))
        return len([p for p in grid_points(self.spec) if p not in done])

    def fail_stale(self) -> int:
        """Fail the study's stale RUNNING trials now; return how many."""
        with storage_lock(self.storage_url):
            return self._fail_stale(self.study.get_trials(deepcopy=False))

    def _fail_stale(self, trials: list[FrozenTrial]) -> int:
        storage = self.study._storage
        count = 0
        for trial in trials:
            if trial.state != TrialState.RUNNING:
                continue
            reason = stale_reason(trial)
            if reason is None:
                continue
            try:
                storage.set_trial_user_attr(trial._trial_id, "error",
                                            STALE_ERROR.format(reason=reason))
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                count += 1
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it ended by itself meanwhile
        self.failed_stale += count
        return count

    def _next_grid_point(self, trials: list[FrozenTrial]) -> tuple[Any, ...] | None:
        taken = _points(trials, self.spec, self.fixed,
                        (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        failed = _points(trials, self.spec, self.fixed, (TrialState.FAIL,))
        # A point that failed in this run is left for the next run (it would likely fail again).
        failed_here = _points([t for t in trials if t.user_attrs.get("run_id") == self.run_id],
                              self.spec, self.fixed, (TrialState.FAIL,))
        missing = [p for p in grid_points(self.spec) if p not in taken and p not in failed_here]
        missing.sort(key=lambda p: p not in failed)  # stable: failed first, then grid order
        return missing[0] if missing else None

    def _create_grid_trial(self, point: tuple[Any, ...], owner: Owner) -> int:
        space = grid_search_space(self.spec)
        params = dict(zip(space, point, strict=True))
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params=params,
            distributions={name: CategoricalDistribution(values)
                           for name, values in space.items()},
            user_attrs={"run_id": self.run_id},
            system_attrs={OWNER_ATTR: owner.to_attr()})
        return self.study._storage.create_new_trial(self.study._study_id, template_trial=template)

    def _own(self, trial_id: int, owner: Owner) -> None:
        hand_over(self.study._storage, trial_id, owner)
        self.study._storage.set_trial_user_attr(trial_id, "run_id", self.run_id)


def hand_over(storage: optuna.storages.BaseStorage, trial_id: int, owner: Owner) -> None:
    """Record that ``owner`` (a worker) now runs the trial."""
    storage.set_trial_system_attr(trial_id, OWNER_ATTR, owner.to_attr())


def grid_points(spec: StudySpec) -> list[tuple[Any, ...]]:
    """Every point of a grid study, in the grid's order, as tuples of parameter values."""
    return list(itertools.product(*grid_search_space(spec).values()))


def _points(trials: list[FrozenTrial], spec: StudySpec, expected: Mapping[str, Any],
            states: tuple[TrialState, ...]) -> set[tuple[Any, ...]]:
    """The grid points of ``trials`` in ``states`` that ran under the study's fixed settings
    (``expected``, as a trial stores them in its ``config``)."""
    names = list(grid_search_space(spec))
    points = set()
    for trial in trials:
        if trial.state not in states or any(n not in trial.params for n in names):
            continue
        config = trial.user_attrs.get("config")
        if isinstance(config, Mapping) and any(
                key in config and config[key] != value for key, value in expected.items()):
            continue  # made with other fixed settings: not this study's point
        points.add(tuple(trial.params[n] for n in names))
    return points


def _fixed_config(spec: StudySpec) -> dict[str, Any]:
    """The study's fixed settings as a trial stores them in its ``config`` attribute."""
    objective = get_objective(spec.objective)
    values = config_to_dict(objective.make_config(spec.fixed, source=str(spec.path or spec.name)))
    return {key: values[key] for key in spec.fixed}
