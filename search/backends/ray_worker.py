"""The Ray Tune trainable: one Optuna trial, run in a Ray worker by the local backend's code.

The driver has already created the Optuna trial and drawn its parameters (``ask`` plus the
study's sampler); the worker opens it with ``optuna.Trial(study, trial_id)`` on the same
storage and runs ``TrialRunner`` on it, so a Ray trial records exactly what a local one does.
``TuneTrialReporter`` also hands each step's metric to ``tune.report`` for the scheduler.

The scheduler never kills a trial (a killed function cannot save its artifacts): when it
decides to stop one, the driver sets the ``STOP_ATTR`` system attribute on the Optuna trial,
and ``SchedulerStopPruner`` turns that into ``should_stop() == True`` at the objective's
next step, which then ends the way a pruned local trial does. Each worker process keeps its
study, its ``TrialRunner`` and the run's data between trials (Tune reuses the actors).
"""

from __future__ import annotations

import math
import socket
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.errors import ConfigError, HPSearchError
from objectives.runtime import Runtime
from search.driver.claims import hand_over
from search.driver.trial import TrialReporter, TrialRunner
from search.records.liveness import Heartbeat, Owner
from search.records.storage import open_storage
from search.study.spec import StudySpec

TRIAL_ID_KEY = "optuna_trial_id"  # the Tune config key holding the Optuna trial id
TRIAL_IDS_KEY = "optuna_trial_ids"  # ... or the ids of a pack of lanes
STOP_ATTR = "ray_scheduler_stop"  # system attr: the step at which the scheduler stopped it
HPSEARCH_ERROR_ATTR = "hpsearch_error"  # system attr: bad input that ends the whole run
HARD_STOP_REASON = "stopped by the Ray scheduler (the objective ignored should_stop)"
# Result keys of a trial that failed in the worker outside the objective (opening the
# storage, the data, the trial): the driver records the error on the Optuna trial.
WORKER_ERROR_KEY = "hpsearch_worker_error"
WORKER_TRACEBACK_KEY = "hpsearch_worker_traceback"
WORKER_ERROR_STOPS_KEY = "hpsearch_worker_error_stops_run"  # bad input every trial would hit
# Refilling a pack: the worker reports its free lanes under REFILL_WANT_KEY at an epoch
# boundary; the driver deals that many trials and marks each with the REFILL_ATTR system
# attribute (the trial id of the pack's first trial), where the worker finds them.
REFILL_WANT_KEY = "hpsearch_refill_wanted"
REFILL_ATTR = "ray_pack"
REFILL_JOINED_ATTR = "ray_pack_joined"  # set by the worker: the pack that started the trial


@dataclass(frozen=True)
class WorkerSetup:
    """What every trial of a run needs in its worker (sent to the object store once)."""

    spec: StudySpec
    study_name: str
    storage_url: str
    artifact_dir: Path
    data_dir: Path
    device: str
    threads: int
    cache_dir: Path
    run_id: str
    use_study_pruner: bool  # True when no Ray scheduler prunes (the study's pruner acts)
    lanes: int = 1  # Optuna trials per Ray trial, trained at once as lanes
    command: str = ""  # the run's command line, recorded in each trial's provenance


class SchedulerStopPruner(optuna.pruners.BasePruner):
    """Prune when the driver has marked the trial as stopped by the Ray scheduler, or when
    ``inner`` (the study's own pruner, or none) says so."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return STOP_ATTR in trial.system_attrs or self.inner.prune(study, trial)


class TuneTrialReporter(TrialReporter):
    """The local ``TrialReporter`` that also reports each step's study metric to Ray Tune."""

    def report(self, step: int, metrics: Any) -> None:
        from ray import tune

        super().report(step, metrics)
        value = metrics.get(self.metric)
        value = float(value) if value is not None else math.nan
        tune.report({self.metric: value if math.isfinite(value) else math.nan, "step": step})


class _TuneTrialRunner(TrialRunner):
    reporter_cls = TuneTrialReporter


_PROCESS: dict[str, Any] = {}  # this worker process's study, runner and data, per run


def run_trial(config: dict[str, Any], setup: WorkerSetup, data: list[Any]) -> None:
    """Tune's function trainable: run the Optuna trial ``config[TRIAL_ID_KEY]`` to its end.

    ``data`` holds at most one object ref to the run's loaded data set (a list, so Tune does
    not fetch it for every trial). The trial ends as COMPLETE, PRUNED or FAIL in Optuna
    here. An error outside the objective (the storage or data cannot be opened here) is
    reported to Tune as a result with ``WORKER_ERROR_KEY``, and the driver records it; only a
    process that dies leaves the driver to say so.
    """
    try:
        study, runner = _prepare(setup, data)
        storage = study._storage
        if TRIAL_IDS_KEY in config:
            _run_pack(study, runner.runtime, setup, [int(i) for i in config[TRIAL_IDS_KEY]])
            return
        trial_id = int(config[TRIAL_ID_KEY])
        hand_over(storage, trial_id, Owner.of())  # this process runs it now: liveness sees it
        with Heartbeat(storage, trial_id):
            _run_to_end(study, runner, trial_id)
    except Exception as exc:
        from ray import tune

        tune.report({WORKER_ERROR_KEY: f"{type(exc).__name__}: {exc}",
                     WORKER_TRACEBACK_KEY: traceback.format_exc()[-4000:],
                     WORKER_ERROR_STOPS_KEY: isinstance(exc, HPSearchError)})


def _run_pack(study: optuna.Study, runtime: Runtime, setup: WorkerSetup, ids: list[int]) -> None:
    """A pack of lanes in this Ray trial, refilled by the driver as lanes end."""
    from search.backends.lanes import run_pack

    storage = study._storage
    owner = Owner.of()
    for trial_id in ids:
        hand_over(storage, trial_id, owner)
    started = set(ids)

    def dealt_not_started() -> list[int]:
        running = storage.get_all_trials(study._study_id, deepcopy=False,
                                         states=(TrialState.RUNNING,))
        return [t._trial_id for t in running
                if t.system_attrs.get(REFILL_ATTR) == ids[0] and t._trial_id not in started]

    def refill(free: int) -> list[int]:
        """Start what the driver dealt to this pack; ask it for the rest of ``free``.

        Tune hands the report to the driver before this trial goes on, so what the driver
        deals for it is usually there to read at once; what comes later is read at the next
        epoch boundary, and what this pack never starts the driver deals again elsewhere.
        """
        from ray import tune

        new = dealt_not_started()[:free]
        if len(new) < free:
            tune.report({REFILL_WANT_KEY: free - len(new)})
            new += [i for i in dealt_not_started() if i not in new][:free - len(new)]
        for trial_id in new:
            hand_over(storage, trial_id, owner)
            storage.set_trial_system_attr(trial_id, REFILL_JOINED_ATTR, ids[0])
            started.add(trial_id)
        return new

    # Lanes report to Optuna (the study's pruner decides per lane), not each to Tune.
    plain = TrialRunner(setup.spec, runtime, setup.artifact_dir, setup.run_id,
                        command=setup.command, backend="ray")
    try:
        run_pack(study, plain, ids, setup.lanes, refill, lambda event: None)
    except HPSearchError as exc:
        storage.set_trial_system_attr(ids[0], HPSEARCH_ERROR_ATTR, str(exc))


def _run_to_end(study: optuna.Study, runner: TrialRunner, trial_id: int) -> None:
    trial = optuna.Trial(study, trial_id)
    storage = study._storage
    value: float | None = None
    try:
        value = runner(trial)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except HPSearchError as exc:
        storage.set_trial_user_attr(trial_id, "error", f"{type(exc).__name__}: {exc}")
        storage.set_trial_system_attr(trial_id, HPSEARCH_ERROR_ATTR, str(exc))
        state = TrialState.FAIL
    except Exception as exc:
        if "error" not in storage.get_trial_user_attrs(trial_id):
            storage.set_trial_user_attr(trial_id, "error", f"{type(exc).__name__}: {exc}")
            storage.set_trial_user_attr(trial_id, "traceback", traceback.format_exc()[-4000:])
        state = TrialState.FAIL
    except BaseException:  # Tune stopped the trial inside tune.report (SystemExit)
        if STOP_ATTR in storage.get_trial_system_attrs(trial_id):
            storage.set_trial_user_attr(trial_id, "pruned_reason", HARD_STOP_REASON)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            storage.set_trial_user_attr(trial_id, "error", "interrupted: Ray stopped the "
                                        "trial before it ended")
            study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)


def _prepare(setup: WorkerSetup, data: list[Any]) -> tuple[optuna.Study, TrialRunner]:
    """This process's study and runner for the run (made at its first trial)."""
    cached = _PROCESS.get(setup.run_id)
    if cached is not None:
        return cached
    import torch

    torch.set_num_threads(setup.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if data:
        _preload(setup, data[0])
    from search.study.components import make_pruner

    inner = make_pruner(setup.spec) if setup.use_study_pruner else optuna.pruners.NopPruner()
    # The driver's sampler already drew every parameter; this one only has to be cheap.
    try:
        study = optuna.load_study(study_name=setup.study_name,
                                  storage=open_storage(setup.storage_url),
                                  sampler=optuna.samplers.RandomSampler(),
                                  pruner=SchedulerStopPruner(inner))
    except KeyError:  # Optuna's "Record does not exist": this worker sees another storage
        raise ConfigError(f"the Ray worker on {socket.gethostname()} finds no study "
                          f"{setup.study_name!r} in {setup.storage_url}: every Ray worker must "
                          "open the same storage; on a cluster use a database server "
                          "(--storage postgresql://...) or a file on a disk all nodes share"
                          ) from None
    runtime = Runtime(data_dir=setup.data_dir, device=setup.device, cache_dir=setup.cache_dir,
                      previews=setup.spec.previews)
    runner = _TuneTrialRunner(setup.spec, runtime, setup.artifact_dir, setup.run_id,
                              command=setup.command, backend="ray")
    _PROCESS.clear()  # a reused process keeps only the current run
    _PROCESS[setup.run_id] = (study, runner)
    return study, runner


def _preload(setup: WorkerSetup, ref: Any) -> None:
    """Hand the run's data (from the object store) to the objective's loader in this process."""
    import dataclasses

    import numpy as np
    import ray

    from objectives.euro_data import preload_euro

    data = ray.get(ref)
    # Object-store arrays are read-only; torch.from_numpy warns on those, so copy them once.
    copies = {f.name: np.array(getattr(data, f.name)) for f in dataclasses.fields(data)
              if isinstance(getattr(data, f.name), np.ndarray)}
    preload_euro(setup.data_dir, dataclasses.replace(data, **copies))
