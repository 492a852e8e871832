"""Run a study: create or resume it in the storage, then run trials in one or more processes.

``run_study(spec, options)`` is the library entry point behind ``python -m search.run``. The
parent process is the only one that claims trials (``TrialDealer``: it asks the sampler or picks
the next missing grid point, under the storage's lock). With ``--jobs 1`` it runs them itself;
with ``--jobs K`` it hands each to an idle worker process (``search.backends.processes``), whose
trials end FAIL if it dies, so the run still adds what it was asked for. Workers exit when the
parent dies; a later command fails the trials they left RUNNING (``search.records.liveness``).
Ctrl-C ends running trials as FAIL, keeps finished ones, and the next run resumes.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from objectives import get_objective
from objectives.config import config_to_dict
from objectives.errors import ConfigError, HPSearchError
from objectives.runtime import resolve_device
from search.backends.lanes import run_pack
from search.backends.processes import WorkerPool
from search.driver.claims import TrialDealer
from search.driver.work import Budget, Progress, Work, deal_trials, open_worker, run_claimed_trial
from search.records import interrupts
from search.records.liveness import Owner
from search.records.provenance import data_fingerprint, record_run
from search.records.storage import DEFAULT_STORAGE, artifact_dir_for, open_storage, storage_lock
from search.study.components import make_pruner, make_sampler
from search.study.notes import write_study_note
from search.study.spec import StudySpec

DEFAULT_LANES_CPU = 8  # see README "Lanes": most of the gain at one thread, little memory
DEFAULT_LANES_CUDA = 32


@dataclass(frozen=True)
class RunOptions:
    """How to run a study (everything but the study itself)."""

    n_trials: int
    data_dir: Path
    storage_url: str = DEFAULT_STORAGE
    jobs: int = 1
    timeout: float | None = None
    device: str = "auto"
    seed: int | None = None
    artifact_dir: Path | None = None
    study_name: str | None = None
    threads: int | None = None
    cache_dir: Path = Path(".cache")
    progress: bool = True
    lanes: int | None = None  # None: the default for the objective and device
    command: str = field(default_factory=lambda: shlex.join(["python", *sys.argv]))


@dataclass(frozen=True)
class RunSummary:
    """What a run added to its study, and the study's best trial afterwards."""

    study_name: str
    storage_url: str
    artifact_dir: Path
    complete: int
    pruned: int
    failed: int
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    seconds: float
    stopped_by: str  # "trials", "grid", "timeout", "interrupt" or "error: ..."
    stale_failed: int = 0  # trials of dead processes this run found RUNNING and failed
    grid_was_complete: bool = False  # a grid study with nothing left to run


def check_run_options(options: RunOptions) -> None:
    """Refuse numbers that cannot make a run, before anything is opened."""
    if options.n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {options.n_trials}")
    if options.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {options.jobs}")
    if options.timeout is not None and not options.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got "
                          f"{options.timeout}")
    if options.threads is not None and options.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {options.threads}")
    if options.lanes is not None and options.lanes < 1:
        raise ConfigError(f"--lanes must be at least 1, got {options.lanes}")


def run_study(spec: StudySpec, options: RunOptions) -> RunSummary:
    """Create or resume ``spec``'s study and add ``options.n_trials`` trials to it."""
    check_run_options(options)
    device = resolve_device(options.device)
    study_name = options.study_name or spec.name
    artifact_dir = options.artifact_dir or artifact_dir_for(options.storage_url)
    study = create_or_load_study(spec, study_name, options)
    run_id = uuid.uuid4().hex[:12]
    dealer = make_dealer(spec, study_name, options, run_id)
    stale = report_stale(dealer)
    n_trials = options.n_trials
    grid_was_complete = False
    if spec.is_grid:
        n_trials = min(n_trials, dealer.missing_points())
        grid_was_complete = n_trials == 0
    work = Work(spec=spec, study_name=study_name, storage_url=options.storage_url,
                 artifact_dir=artifact_dir, device=device, data_dir=options.data_dir,
                 threads=options.threads or default_threads(spec, options),
                 cache_dir=options.cache_dir, run_id=run_id,
                 deadline=time.time() + options.timeout if options.timeout else None,
                 lanes=resolve_lanes(spec, options.lanes, device), command=options.command)

    start = time.perf_counter()
    progress = Progress(n_trials, spec.direction, enabled=options.progress and n_trials > 0)
    stopped_by = "grid"
    previous_handlers = interrupts.install((signal.SIGINT,))
    try:
        if n_trials and options.jobs == 1:
            stopped_by = _run_inline(work, dealer, n_trials, progress)
        elif n_trials:
            stopped_by = WorkerPool(work, dealer, options.jobs, progress).run(n_trials)
        if stopped_by == "trials" and n_trials < options.n_trials:
            stopped_by = "grid"  # the grid's missing points were fewer than asked
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    finally:
        with interrupts.deferred():
            progress.close()
            fail_running_trials(study, run_id)
        interrupts.restore(previous_handlers)
    record_run(study, spec, options, run_id, backend="local")
    return _summarise(study, run_id, artifact_dir, options.storage_url,
                      time.perf_counter() - start, stopped_by if progress.error is None
                      else f"error: {progress.error}", stale + dealer.failed_stale,
                      grid_was_complete)


def make_dealer(spec: StudySpec, study_name: str, options: RunOptions,
                run_id: str) -> TrialDealer:
    """The run's trial dealer, with the study's sampler seeded by ``--seed``."""
    # Grids are dealt from their missing points; their sampler never draws.
    sampler = (optuna.samplers.RandomSampler() if spec.is_grid
               else make_sampler(spec, options.seed))
    study = optuna.load_study(study_name=study_name, storage=open_storage(options.storage_url),
                              sampler=sampler, pruner=make_pruner(spec))
    interrupts.protect_storage(study._storage)
    return TrialDealer(study, spec, options.storage_url, run_id)


def report_stale(dealer: TrialDealer) -> int:
    """Fail the trials that dead processes left RUNNING, and say how many."""
    count = dealer.fail_stale()
    dealer.failed_stale = 0
    if count:
        print(f"failed {count} trial(s) left RUNNING by processes that are gone; grid points "
              "among them run again", flush=True)
    return count


def resolve_lanes(spec: StudySpec, lanes: int | None, device: str) -> int:
    """Trials a worker trains at once: ``--lanes``, else the default for the device (one for
    objectives that cannot be laned)."""
    if get_objective(spec.objective).lanes is None:
        return 1
    if lanes is not None:
        return lanes
    # The default is a number of trials' worth: a trial over N seeds takes N lanes.
    trials = DEFAULT_LANES_CUDA if device.startswith("cuda") else DEFAULT_LANES_CPU
    return trials * spec.seeds


def default_threads(spec: StudySpec, options: RunOptions) -> int:
    """Torch threads per worker: one for small MLPs (two threads fight over the cores and run
    up to 20x slower) or several workers; otherwise the cores split between the workers."""
    if spec.objective == "mlp" or options.jobs > 1:
        return 1
    return max(1, (os.cpu_count() or 1) // options.jobs)


def create_or_load_study(spec: StudySpec, study_name: str, options: RunOptions) -> optuna.Study:
    """Create the study (or load it to resume, refusing changed settings) and describe it."""
    storage = open_storage(options.storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with storage_lock(options.storage_url):  # several commands may create it at once
        try:
            study = optuna.create_study(study_name=study_name, storage=storage,
                                        direction=spec.direction, load_if_exists=True)
        except ValueError as exc:
            raise ConfigError(f"study {study_name!r} in {options.storage_url} cannot be "
                              f"resumed: {exc}; use --study-name to start a new one") from None
        check_same_settings(study, spec, options.storage_url)
        study.set_user_attr("objective", spec.objective)
        study.set_user_attr("metric", spec.metric)
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([spec.metric])  # the dashboard's axes say val_accuracy
        study.set_user_attr("description", spec.description)
        study.set_user_attr("fixed", dict(spec.fixed))
        study.set_user_attr("searched", spec.searched_keys())
        study.set_user_attr("seeds", spec.seeds)
        study.set_user_attr("aggregate", spec.aggregate)
        study.set_user_attr("spec_file", str(spec.path) if spec.path else spec.name)
        study.set_user_attr("command", options.command)
        write_study_note(study, spec, data_fingerprint(
            options.data_dir / get_objective(spec.objective).dataset))
    return study


def check_same_settings(study: optuna.Study, spec: StudySpec, storage_url: str) -> None:
    """A resumed study keeps its objective and fixed settings: one line names each change."""
    name = study.study_name
    existing = study.user_attrs.get("objective")
    if existing is not None and existing != spec.objective:
        raise ConfigError(f"study {name!r} in {storage_url} was made with objective "
                          f"{existing!r}, not {spec.objective!r}; use --study-name for a new one")
    for key, default in (("seeds", 1), ("aggregate", "mean")):
        made_with = study.user_attrs.get(key, default) if existing is not None else None
        if made_with is not None and made_with != getattr(spec, key):
            raise ConfigError(f"study {name!r} in {storage_url} was made with {key} "
                              f"{made_with!r}, not {getattr(spec, key)!r}: its trial values "
                              f"would not compare; resume it with --{key} {made_with}, or use "
                              "--study-name NAME for a new study")
    stored = study.user_attrs.get("fixed")
    if existing is None or not isinstance(stored, dict):
        return
    objective = get_objective(spec.objective)
    try:
        before = config_to_dict(objective.make_config(stored, source="stored settings"))
    except ConfigError:
        before = dict(stored)
    after = config_to_dict(objective.make_config(spec.fixed, source=str(spec.path or spec.name)))
    changed = [f"{key} {before.get(key)!r} -> {after.get(key)!r}"
               for key in sorted(set(stored) | set(spec.fixed))
               if before.get(key) != after.get(key)]
    if changed:
        raise ConfigError(f"study {name!r} in {storage_url} was made with other fixed settings "
                          f"({'; '.join(changed)}); resume it with its own settings, or use "
                          "--study-name NAME for a new study with these")


def fail_running_trials(study: optuna.Study, run_id: str) -> int:
    """Mark this run's trials still RUNNING (interrupted, or their worker died) as FAIL."""
    storage = study._storage
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("run_id") != run_id:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "error", "interrupted: the run was "
                                        "stopped or its worker died before the trial ended")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            count += 1
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # its worker recorded the end itself after our list was read
    return count


def _run_inline(work: Work, dealer: TrialDealer, n_trials: int, progress: Progress) -> str:
    """``--jobs 1``: claim and run trials (or packs of lanes) one after another here."""
    study, runner = open_worker(work)
    me = Owner.of()
    budget = Budget(n_trials, work)

    def deal(want: int) -> list[int]:
        return deal_trials(dealer, budget, me, want, progress)

    def emit(event: dict[str, Any]) -> None:
        progress.handle(("trial", event))

    try:
        while ids := deal(work.trials_per_pack):
            if work.lanes > 1:
                run_pack(study, runner, ids, work.lanes, deal, emit)
            else:
                emit(run_claimed_trial(study, runner, ids[0]))
    except HPSearchError as exc:
        progress.handle(("error", {"message": str(exc)}))
        return "error"
    return budget.stop or "trials"


def _summarise(study: optuna.Study, run_id: str, artifact_dir: Path, storage_url: str,
               seconds: float, stopped_by: str, stale_failed: int = 0,
               grid_was_complete: bool = False) -> RunSummary:
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("run_id") == run_id]
    count = {state: sum(t.state == state for t in mine)
             for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    try:
        best = study.best_trial
    except ValueError:
        best = None
    return RunSummary(
        study_name=study.study_name, storage_url=storage_url, artifact_dir=artifact_dir,
        complete=count[TrialState.COMPLETE], pruned=count[TrialState.PRUNED],
        failed=count[TrialState.FAIL], best_number=best.number if best else None,
        best_value=best.value if best else None, best_params=dict(best.params) if best else {},
        seconds=seconds, stopped_by=stopped_by, stale_failed=stale_failed,
        grid_was_complete=grid_was_complete)
