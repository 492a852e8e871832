"""Run a study: create or resume it in the storage, then run trials in one or more processes.

``run_study(spec, options)`` is the library entry point behind ``python -m search.run``. The
parent process is the only one that claims trials (``TrialDealer``: it asks the sampler or picks
the next missing grid point, under the storage's lock) and hands each to an idle worker; the
workers only train, report and tell Optuna how their trial ended, with a heartbeat while it
runs. A worker that dies has its trial marked FAIL with the reason and is replaced, and its
ticket goes back, so the run still adds what it was asked for. Workers exit when the parent
dies; a later command fails the trials they left RUNNING (``search.records.liveness``). Ctrl-C ends
running trials as FAIL, keeps finished ones, and the next run resumes.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
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
from tqdm.auto import tqdm

from objectives import get_objective
from objectives.config import config_to_dict
from objectives.errors import ConfigError, HPSearchError
from objectives.runtime import Runtime, resolve_device
from search.backends.lanes import group_for_workers, lane_group_of, pack_cost, run_pack
from search.driver.claims import TrialDealer, hand_over
from search.driver.trial import TrialRunner
from search.records import interrupts
from search.records.liveness import Heartbeat, Owner, watch_parent
from search.records.provenance import data_fingerprint, record_run
from search.records.storage import DEFAULT_STORAGE, artifact_dir_for, open_storage, storage_lock
from search.study.components import make_pruner, make_sampler
from search.study.notes import write_study_note
from search.study.spec import StudySpec

Event = tuple[str, dict[str, Any]]
CLAIM_ATTEMPTS = 4  # a storage error in a claim is retried this often
MAX_DEATHS_IN_A_ROW = 3  # workers dying without a trial ending in between stop the run
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
    work = _Work(spec=spec, study_name=study_name, storage_url=options.storage_url,
                 artifact_dir=artifact_dir, device=device, data_dir=options.data_dir,
                 threads=options.threads or default_threads(spec, options),
                 cache_dir=options.cache_dir, run_id=run_id,
                 deadline=time.time() + options.timeout if options.timeout else None,
                 lanes=resolve_lanes(spec, options.lanes, device), command=options.command)

    start = time.perf_counter()
    progress = _Progress(n_trials, spec.direction, enabled=options.progress and n_trials > 0)
    stopped_by = "grid"
    previous_handlers = interrupts.install((signal.SIGINT,))
    try:
        if n_trials and options.jobs == 1:
            stopped_by = _run_inline(work, dealer, n_trials, progress)
        elif n_trials:
            stopped_by = _WorkerPool(work, dealer, options.jobs, progress).run(n_trials)
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


@dataclass(frozen=True)
class _Work:
    """What every worker needs to run trials (picklable for worker processes)."""

    spec: StudySpec
    study_name: str
    storage_url: str
    artifact_dir: Path
    device: str
    data_dir: Path
    threads: int
    cache_dir: Path
    run_id: str
    deadline: float | None
    lanes: int = 1  # trials per worker trained at once as lanes of one model
    command: str = ""  # the run's command line, recorded in each trial's provenance

    def timed_out(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    @property
    def trials_per_pack(self) -> int:
        """Trials dealt to a pack at once: a trial over N seeds takes N of its lanes."""
        return max(1, self.lanes // self.spec.seeds)


def open_worker(work: _Work) -> tuple[optuna.Study, TrialRunner]:
    """A worker's study (with the study's pruner) and trial runner."""
    get_objective(work.spec.objective)  # imports torch where the objective uses it
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(work.threads)
    # Failed trials are reported as one line by the parent, not as Optuna's traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # The dealer drew every parameter already; this sampler never has to.
    study = optuna.load_study(study_name=work.study_name, storage=open_storage(work.storage_url),
                              sampler=optuna.samplers.RandomSampler(),
                              pruner=make_pruner(work.spec))
    interrupts.protect_storage(study._storage)  # Ctrl-C never cuts a write in half
    runtime = Runtime(data_dir=work.data_dir, device=work.device, cache_dir=work.cache_dir,
                      previews=work.spec.previews)
    return study, TrialRunner(work.spec, runtime, work.artifact_dir, work.run_id,
                              command=work.command)


def run_claimed_trial(study: optuna.Study, runner: TrialRunner, trial_id: int) -> dict[str, Any]:
    """Run a dealt trial to its end, with a heartbeat, and tell Optuna how it ended.

    Returns the trial's progress event. An ``HPSearchError`` (bad input every trial would hit)
    and ``KeyboardInterrupt`` end the trial as FAIL and propagate.
    """
    storage = study._storage
    trial = optuna.Trial(study, trial_id)
    value: float | None = None
    with Heartbeat(storage, trial_id):
        try:
            value = runner(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except (HPSearchError, KeyboardInterrupt) as exc:
            if isinstance(exc, HPSearchError):
                storage.set_trial_user_attr(trial_id, "error", f"{type(exc).__name__}: {exc}")
            _tell(study, trial, None, TrialState.FAIL)
            raise
        except Exception:
            state = TrialState.FAIL  # the runner stored the error on the trial
        _tell(study, trial, value, state)
    return trial_event(storage, trial_id)


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None,
          state: TrialState) -> None:
    """``study.tell``, retried on storage errors (a dropped connection, a locked file)."""
    for attempt in range(CLAIM_ATTEMPTS):
        try:
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            return
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        except Exception:
            if attempt == CLAIM_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)


def trial_event(storage: optuna.storages.BaseStorage, trial_id: int) -> dict[str, Any]:
    """The progress bar's view of a trial: number, state, value and its error or reason."""
    trial = storage.get_trial(trial_id)
    return {"trial_id": trial_id, "number": trial.number, "state": trial.state.name,
            "value": trial.value,
            "note": trial.user_attrs.get("error") or trial.user_attrs.get("pruned_reason", "")}


def claim(dealer: TrialDealer, owner: Owner) -> int | None:
    """The dealer's next trial, retrying storage errors; Ctrl-C waits until it is made."""
    for attempt in range(CLAIM_ATTEMPTS):
        try:
            with interrupts.deferred():
                return dealer.next_trial(owner)
        except HPSearchError:
            raise
        except Exception as exc:
            if attempt == CLAIM_ATTEMPTS - 1:
                raise ConfigError(f"the storage failed {CLAIM_ATTEMPTS} times while claiming a "
                                  f"trial ({type(exc).__name__}: {_first_line(exc)}); check that "
                                  "it is reachable and rerun to resume") from None
            time.sleep(0.5 * 2 ** attempt)
    return None


class _Budget:
    """The trials a run may still deal, and why it stopped dealing (None while it may)."""

    def __init__(self, n_trials: int, work: _Work):
        self.left = n_trials
        self.work = work
        self.stop: str | None = None

    def take(self, want: int) -> int:
        if self.stop is None and self.work.timed_out():
            self.stop = "timeout"
        if self.stop is not None:
            return 0
        taken = min(want, self.left)
        self.left -= taken
        return taken

    def give_back(self, count: int) -> None:
        self.left += count


def _deal(dealer: TrialDealer, budget: _Budget, owner: Owner, want: int,
          progress: _Progress) -> list[int]:
    """Claim up to ``want`` trials for ``owner`` within the budget."""
    taken = budget.take(want)
    ids: list[int] = []
    for _ in range(taken):
        try:
            trial_id = claim(dealer, owner)
        except HPSearchError as exc:
            progress.handle(("error", {"message": str(exc)}))
            budget.stop = "error"
            break
        if trial_id is None:
            budget.stop = "grid"
            break
        ids.append(trial_id)
    budget.give_back(taken - len(ids))
    return ids


def _run_inline(work: _Work, dealer: TrialDealer, n_trials: int, progress: _Progress) -> str:
    """``--jobs 1``: claim and run trials (or packs of lanes) one after another here."""
    study, runner = open_worker(work)
    me = Owner.of()
    budget = _Budget(n_trials, work)

    def deal(want: int) -> list[int]:
        return _deal(dealer, budget, me, want, progress)

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


@dataclass
class _Slot:
    """One worker process, its task queue and the trials it runs."""

    process: Any
    tasks: Any
    trial_ids: set[int] = field(default_factory=set)
    busy: bool = False  # a task (one trial, or a pack of lanes) is running


class _WorkerPool:
    """``--jobs K``: K worker processes fed with trials by this (the parent) process.

    A worker gets a list of trial ids: one trial, or the first lanes of a pack. A pack asks
    for more (``want``) at each epoch boundary and the parent answers with newly dealt
    trials, possibly none; ``done`` says the worker is idle again.
    """

    def __init__(self, work: _Work, dealer: TrialDealer, jobs: int, progress: _Progress):
        self.work = work
        self.dealer = dealer
        self.jobs = jobs
        self.progress = progress
        self.context = mp.get_context("spawn")  # fork would copy torch/SQLAlchemy state
        self.events = self.context.Queue()
        self.slots: dict[int, _Slot] = {}  # by worker pid
        self.deaths_in_a_row = 0
        self.budget: _Budget | None = None

    def run(self, n_trials: int) -> str:
        self.budget = budget = _Budget(n_trials, self.work)
        try:
            for _ in range(self.jobs):
                self._start_worker()
            while True:
                self._reap_dead()  # this run's dead workers first: their trials say how
                idle = [s for s in self.slots.values() if not s.busy and s.process.is_alive()]
                if idle and budget.stop is None:
                    self._first_deal(idle)
                if not any(s.busy for s in self.slots.values()):
                    return budget.stop or "trials"
                self._wait_for_event()
                if self.deaths_in_a_row >= MAX_DEATHS_IN_A_ROW and budget.stop is None:
                    self.progress.handle(("error", {"message": (
                        f"{self.deaths_in_a_row} workers died in a row (see the failed trials "
                        "above); the run stops")}))
                    budget.stop = "error"
        except KeyboardInterrupt:
            self._stop_workers()
            raise
        finally:
            self._close()

    def _first_deal(self, idle: list[_Slot]) -> None:
        """Deal to idle workers: one trial each, or packs of lanes grouped so that lanes
        that share a batched model go to the same worker."""
        assert self.budget is not None
        lanes = self.work.lanes
        if lanes == 1:
            shares = [self._deal_to(slot, 1) for slot in idle]
        else:
            per_pack = self.work.trials_per_pack
            ids = self._deal_to(idle[0], per_pack * len(idle))
            groups = {i: lane_group_of(self.dealer.study, self.dealer.spec, i) for i in ids}
            shares = group_for_workers(groups, len(idle), per_pack, pack_cost)
            storage = self.dealer.study._storage
            for slot, share in zip(idle, shares, strict=True):
                for trial_id in share:
                    hand_over(storage, trial_id, Owner.of(slot.process.pid))
        for slot, share in zip(idle, shares, strict=True):
            if share:
                slot.trial_ids |= set(share)
                slot.busy = True
                slot.tasks.put(share)

    def _deal_to(self, slot: _Slot, want: int) -> list[int]:
        assert self.budget is not None
        return _deal(self.dealer, self.budget, Owner.of(slot.process.pid), want, self.progress)

    def _start_worker(self) -> None:
        tasks = self.context.SimpleQueue()
        process = self.context.Process(target=_worker_main, daemon=True,
                                       args=(self.work, tasks, self.events, os.getpid()))
        process.start()
        self.slots[process.pid] = _Slot(process, tasks)

    def _wait_for_event(self) -> None:
        """Handle one worker event, or the workers that died."""
        try:
            kind, payload = self.events.get(timeout=0.5)
        except queue.Empty:
            self._reap_dead()
            return
        slot = self.slots.get(payload.get("worker", -1))
        if kind == "trial":
            if slot is None or payload["trial_id"] not in slot.trial_ids:
                return  # already accounted for when its worker was reaped
            slot.trial_ids.discard(payload["trial_id"])
            self.deaths_in_a_row = 0
            self.progress.handle(("trial", payload))
        elif kind == "want" and slot is not None:
            ids = self._deal_to(slot, payload["n"])
            slot.trial_ids |= set(ids)
            slot.tasks.put(ids)
        elif kind == "done" and slot is not None:
            slot.busy = False
        elif kind == "error":
            self.progress.handle(("error", payload))
            self.deaths_in_a_row = MAX_DEATHS_IN_A_ROW  # stop: the error hits every trial

    def _reap_dead(self) -> None:
        """Fail the trials of workers that died and replace those workers."""
        for pid, slot in list(self.slots.items()):
            if slot.process.is_alive():
                continue
            del self.slots[pid]
            for trial_id in sorted(slot.trial_ids):
                self._fail_dead_workers_trial(slot, trial_id)
            self._start_worker()

    def _fail_dead_workers_trial(self, slot: _Slot, trial_id: int) -> None:
        assert self.budget is not None
        storage = self.dealer.study._storage
        code = slot.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        try:
            storage.set_trial_user_attr(trial_id, "error", f"worker died ({how}, pid "
                                        f"{slot.process.pid}) while running the trial")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.progress.handle(("trial", trial_event(storage, trial_id)))
            return  # it ended just before its worker did
        self.deaths_in_a_row += 1
        self.progress.handle(("trial", trial_event(storage, trial_id)))
        self.budget.give_back(1)  # a trial lost with its worker does not use up the count

    def _stop_workers(self) -> None:
        """After Ctrl-C: let the workers record their trials as FAIL, then end them.

        From a terminal the workers get the same SIGINT as the parent; when only the parent
        was signalled (SIGTERM), pass it on. The parent then marks what is left as FAIL.
        """
        workers = [s.process for s in self.slots.values()]
        deadline = time.time() + 2
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.time()))
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGINT)
        deadline = time.time() + 10
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.time()))

    def _close(self) -> None:
        for slot in self.slots.values():
            if slot.process.is_alive():
                with contextlib.suppress(Exception):
                    slot.tasks.put(None)
        deadline = time.time() + 30
        for slot in self.slots.values():
            slot.process.join(timeout=max(0.0, deadline - time.time()))
            if slot.process.is_alive():
                slot.process.terminate()
                slot.process.join(timeout=5)


def _worker_main(work: _Work, tasks: Any, events: Any, parent_pid: int) -> None:
    """A worker process: run the trials (or packs of lanes) the parent hands over."""
    interrupts.install((signal.SIGINT,))
    watch_parent(parent_pid)
    me = os.getpid()
    closing = []

    def emit(event: dict[str, Any]) -> None:
        events.put(("trial", {**event, "worker": me}))

    def refill(free: int) -> list[int]:
        if closing:
            return []
        events.put(("want", {"worker": me, "n": free}))
        ids = tasks.get()
        if ids is None:  # the run is closing
            closing.append(True)
            return []
        return ids

    try:
        study, runner = open_worker(work)
        while not closing:
            ids = tasks.get()
            if ids is None:
                return
            if work.lanes > 1:
                run_pack(study, runner, ids, work.lanes, refill, emit)
            else:
                emit(run_claimed_trial(study, runner, ids[0]))
            events.put(("done", {"worker": me}))
    except KeyboardInterrupt:
        return
    except HPSearchError as exc:
        events.put(("error", {"worker": me, "message": str(exc)}))
    except Exception as exc:  # the storage failed beyond retries: say so, then exit
        events.put(("error", {"worker": me, "message": f"worker {me} stopped: "
                              f"{type(exc).__name__}: {_first_line(exc)}"}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Progress:
    """A progress bar of trials done, with pruned, failed and the best value so far."""

    def __init__(self, total: int, direction: str, enabled: bool):
        self.bar = tqdm(total=total, unit="trial", disable=not enabled, dynamic_ncols=True)
        self.maximize = direction == "maximize"
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.best: float | None = None
        self.error: str | None = None

    def handle(self, event: Event) -> None:
        kind, payload = event
        if kind == "error":
            self.error = payload["message"]
            return
        state, value = payload["state"], payload["value"]
        note = payload.get("note") or ""
        if state == "FAIL" or note.startswith("diverged"):
            verb = "failed" if state == "FAIL" else "pruned"
            self.bar.write(f"trial {payload['number']} {verb}: {note.splitlines()[0]}"
                           if note else f"trial {payload['number']} {verb}")
        self.counts[state] = self.counts.get(state, 0) + 1
        if state == "COMPLETE" and value is not None and (
                self.best is None or (value > self.best if self.maximize else value < self.best)):
            self.best = value
        # Count and bar drawn together: a refresh here would show the new counts on the old
        # bar, and update() then skips its own draw (tqdm's mininterval).
        self.bar.set_postfix({"done": self.counts["COMPLETE"], "pruned": self.counts["PRUNED"],
                              "failed": self.counts["FAIL"],
                              "best": "-" if self.best is None else f"{self.best:.4g}"},
                             refresh=False)
        self.bar.update(1)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


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
