"""Driver-side Ray Tune parts: Optuna ask as a Tune searcher, and a cooperative ASHA.

``OptunaAskSearcher`` has the run's ``TrialDealer`` create each Tune trial's Optuna trial in
the shared storage (the study's own sampler draws its parameters, or the next missing grid
point is taken), so local and Ray runs mix in one study. Workers
tell Optuna how their trial ended; ``on_trial_complete`` only sweeps what a dead worker left
RUNNING, and reports each finished trial to the progress bar. With lanes, a Tune trial is a
pack of Optuna trials, and when its lanes end the worker reports its free lanes: the searcher
deals that many more into the running pack (see ``ray_worker.REFILL_ATTR``).

``CooperativeASHA`` is Ray's ASHA whose STOP decisions are passed to the trial through the
storage instead of killing the trainable, so a stopped trial still saves its artifacts and
ends as PRUNED with all its intermediate values, like a pruned local trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search import Searcher

from objectives.errors import HPSearchError
from search.backends.ray_worker import (
    HPSEARCH_ERROR_ATTR,
    REFILL_ATTR,
    REFILL_WANT_KEY,
    STOP_ATTR,
    TRIAL_ID_KEY,
    TRIAL_IDS_KEY,
    WORKER_ERROR_KEY,
    WORKER_ERROR_STOPS_KEY,
    WORKER_TRACEBACK_KEY,
)
from search.driver.claims import TrialDealer
from search.driver.trial import suggest_values
from search.records.liveness import OWNER_ATTR, Owner
from search.study.spec import StudySpec

DIED_ERROR = ("worker died: the Ray worker running this trial ended (killed, out of memory "
              "or lost node) before the trial did")
HARD_STOP_AFTER = 3  # results a stopped trial may still report before Tune stops it by force


class OptunaAskSearcher(Searcher):
    """A Tune searcher that asks the Optuna study for each trial.

    Args:
        dealer: The run's trial dealer (the study, its sampler and the run id).
        spec: The study file (its space or grid).
        n_trials: Trials to create before answering ``FINISHED``.
        on_done: Called with ``(number, state name, value, note)`` when a trial ends; the note
            is its error or pruning reason.
        deadline: ``time.time()`` after which no trial starts (running ones finish, as with
            the local backend's ``--timeout``).
        lanes: Optuna trials per Tune trial: above 1, each Tune trial trains a pack of lanes.
    """

    def __init__(self, dealer: TrialDealer, spec: StudySpec, n_trials: int,
                 on_done: Callable[[int, str, float | None, str], None],
                 deadline: float | None = None, lanes: int = 1):
        super().__init__(metric=spec.metric, mode="max" if spec.direction == "maximize"
                         else "min")
        self.dealer = dealer
        self.study = dealer.study
        self.spec = spec
        self.owner = Owner.of()  # the driver, until a worker takes the trial over
        self.n_trials = n_trials
        self.on_done = on_done
        self.asked = 0
        self.optuna_ids: dict[str, list[int]] = {}
        self.lanes = lanes
        self.deadline = deadline
        self.timed_out = False
        self.grid_done = False
        self.error: str | None = None
        self.worker_errors: dict[str, dict[str, Any]] = {}  # by Tune trial id
        # Trials dealt to a pack that ended before starting them: dealt again first.
        self.undealt: list[int] = []
        self.refilled: set[int] = set()  # trials dealt to running packs

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.deadline is not None and time.time() >= self.deadline:
            self.timed_out = True
        if self.error is not None or self.timed_out or (self.asked >= self.n_trials
                                                         and not self.undealt):
            return Searcher.FINISHED
        ids = self._deal(self.lanes)
        if not ids:
            return Searcher.FINISHED
        self.optuna_ids[trial_id] = ids
        if self.lanes > 1:  # a pack: the worker reads each trial's values from the storage
            return {TRIAL_IDS_KEY: ids}
        trial = optuna.Trial(self.study, ids[0])
        params = suggest_values(trial, self.spec)  # the values the dealer drew
        return {TRIAL_ID_KEY: ids[0], "number": trial.number, **params}

    def _deal(self, wanted: int) -> list[int]:
        """Up to ``wanted`` trials within the run's budget: those a pack left unstarted
        first, then new ones from the dealer."""
        from search.driver.work import claim

        ids = self.undealt[:wanted]
        del self.undealt[:len(ids)]
        self.refilled.difference_update(ids)  # a second pack that never starts them: FAIL
        try:
            while len(ids) < wanted and self.asked < self.n_trials:
                optuna_id = claim(self.dealer, self.owner)
                if optuna_id is None:  # the grid has no point left
                    self.grid_done = True
                    break
                ids.append(optuna_id)
                self.asked += 1
        except HPSearchError as exc:
            self.error = str(exc)
        return ids

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if WORKER_ERROR_KEY in result:  # the worker failed outside the objective
            self.worker_errors[trial_id] = result
        wanted = result.get(REFILL_WANT_KEY)
        if wanted and trial_id in self.optuna_ids:
            self._refill(trial_id, int(wanted))

    def _refill(self, trial_id: str, wanted: int) -> None:
        """Deal trials to a running pack's free lanes (each marked with the pack's first
        trial, where the worker finds them)."""
        if self.deadline is not None and time.time() >= self.deadline:
            self.timed_out = True
        if self.error is not None or self.timed_out:
            return
        ids = self._deal(wanted)
        if ids:
            self.refilled.update(ids)
            pack = self.optuna_ids[trial_id]
            for optuna_id in ids:
                self.study._storage.set_trial_system_attr(optuna_id, REFILL_ATTR, pack[0])
            pack += ids

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if result and WORKER_ERROR_KEY in result:
            self.worker_errors[trial_id] = result
        failure = self.worker_errors.pop(trial_id, None)
        if failure is not None and failure.get(WORKER_ERROR_STOPS_KEY) and self.error is None:
            self.error = str(failure[WORKER_ERROR_KEY])
        for optuna_id in self.optuna_ids.pop(trial_id, []):
            if failure is None and optuna_id in self.refilled and self._never_started(optuna_id):
                self.undealt.append(optuna_id)  # the pack ended first: the next one runs it
            else:
                self._sweep(optuna_id, failure)

    def _never_started(self, optuna_id: int) -> bool:
        """Whether a dealt trial is still waiting, owned by this driver (no worker took it)."""
        trial = self.study._storage.get_trial(optuna_id)
        return (trial.state == TrialState.RUNNING
                and Owner.from_attr(trial.system_attrs.get(OWNER_ATTR)) == self.owner)

    def _sweep(self, optuna_id: int, failure: dict[str, Any] | None = None) -> None:
        """Record how a trial ended and report it: FAIL with the worker's error when it
        failed outside the objective, or with ``DIED_ERROR`` when its worker died first."""
        storage = self.study._storage
        trial = storage.get_trial(optuna_id)
        if trial.state == TrialState.RUNNING:  # the worker could not tell Optuna itself
            if failure is not None:
                storage.set_trial_user_attr(optuna_id, "error", str(failure[WORKER_ERROR_KEY]))
                storage.set_trial_user_attr(optuna_id, "traceback",
                                            str(failure.get(WORKER_TRACEBACK_KEY, "")))
            else:
                storage.set_trial_user_attr(optuna_id, "error", DIED_ERROR)
            storage.set_trial_state_values(optuna_id, TrialState.FAIL)
            trial = storage.get_trial(optuna_id)
        message = trial.system_attrs.get(HPSEARCH_ERROR_ATTR)
        if message is not None and self.error is None:
            self.error = str(message)
        note = trial.user_attrs.get("error") or trial.user_attrs.get("pruned_reason", "")
        self.on_done(trial.number, trial.state.name, trial.value, note)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna storage is the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the Optuna storage is the searcher's state."""


class CooperativeASHA(AsyncHyperBandScheduler):
    """ASHA that asks a trial to stop (through the Optuna storage) instead of killing it.

    A STOP decision sets the ``STOP_ATTR`` system attribute on the trial's Optuna trial and
    returns CONTINUE; the worker's pruner sees it at the objective's next ``should_stop``.
    A trial that keeps reporting ``HARD_STOP_AFTER`` more results is stopped by Tune.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, **asha: Any):
        super().__init__(**{"stop_last_trials": False, **asha})
        self.storage = storage
        self.asked_to_stop: dict[str, int] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.trial_id in self.asked_to_stop:
            self.asked_to_stop[trial.trial_id] += 1
            if self.asked_to_stop[trial.trial_id] > HARD_STOP_AFTER:
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision != TrialScheduler.STOP:
            return decision
        self.asked_to_stop[trial.trial_id] = 0
        self.storage.set_trial_system_attr(int(trial.config[TRIAL_ID_KEY]), STOP_ATTR,
                                           int(result.get("step", -1)))
        return TrialScheduler.CONTINUE
