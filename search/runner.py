"""Run a study: create or resume it in the storage, then run trials in one or more processes.

``run_study(spec, options)`` is the library entry point behind ``python -m search.run``. Each
worker process loads the study from the shared storage, claims trials from a shared count
(so ``--trials`` is what the whole run adds) and sends each finished trial to the parent,
which draws the progress bar. Ctrl-C ends running trials as FAIL, keeps finished ones, and
the next run resumes.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import queue
import shlex
import signal
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from objectives import get_objective
from objectives.errors import ConfigError, HPSearchError
from objectives.runtime import Runtime, resolve_device
from search.components import make_pruner, make_sampler
from search.notes import write_study_note
from search.provenance import data_fingerprint
from search.spec import StudySpec
from search.storage import DEFAULT_STORAGE, artifact_dir_for, open_storage
from search.trial import TrialRunner, grid_search_space

Event = tuple[str, dict[str, Any]]


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


def run_study(spec: StudySpec, options: RunOptions) -> RunSummary:
    """Create or resume ``spec``'s study and add ``options.n_trials`` trials to it."""
    if options.n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {options.n_trials}")
    if options.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {options.jobs}")
    device = resolve_device(options.device)
    study_name = options.study_name or spec.name
    artifact_dir = options.artifact_dir or artifact_dir_for(options.storage_url)
    study = create_or_load_study(spec, study_name, options)
    n_trials = options.n_trials
    if spec.is_grid:
        n_trials = min(n_trials, requeue_failed_grid_points(study, spec))
    run_id = uuid.uuid4().hex[:12]
    work = _Work(spec=spec, study_name=study_name, storage_url=options.storage_url,
                 artifact_dir=artifact_dir, device=device, data_dir=options.data_dir,
                 seed=options.seed, threads=options.threads or default_threads(spec, options),
                 cache_dir=options.cache_dir, run_id=run_id,
                 deadline=time.time() + options.timeout if options.timeout else None)

    start = time.perf_counter()
    progress = _Progress(n_trials, spec.direction, enabled=options.progress and n_trials > 0)
    stopped_by = "trials"
    try:
        if n_trials == 0:
            stopped_by = "grid"
        elif options.jobs == 1:
            stopped_by = _run_worker(work, 0, _LocalTickets(n_trials), progress.handle)
        else:
            stopped_by = _run_processes(work, options.jobs, n_trials, progress)
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    finally:
        progress.close()
        fail_running_trials(study, run_id)
    return _summarise(study, run_id, artifact_dir, options.storage_url,
                      time.perf_counter() - start, stopped_by if progress.error is None
                      else f"error: {progress.error}")


def default_threads(spec: StudySpec, options: RunOptions) -> int:
    """Torch threads per worker: one for small MLPs (two threads fight over the cores and run
    up to 20x slower) or several workers; otherwise the cores split between the workers."""
    if spec.objective == "mlp" or options.jobs > 1:
        return 1
    return max(1, (os.cpu_count() or 1) // options.jobs)


def create_or_load_study(spec: StudySpec, study_name: str, options: RunOptions) -> optuna.Study:
    """Create the study (or load it to resume) and store its description on it."""
    storage = open_storage(options.storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(study_name=study_name, storage=storage,
                                    direction=spec.direction, load_if_exists=True)
    except ValueError as exc:
        raise ConfigError(f"study {study_name!r} in {options.storage_url} cannot be resumed: "
                          f"{exc}; use --study-name to start a new one") from None
    existing = study.user_attrs.get("objective")
    if existing is not None and existing != spec.objective:
        raise ConfigError(f"study {study_name!r} in {options.storage_url} was made with objective "
                          f"{existing!r}, not {spec.objective!r}; use --study-name for a new one")
    study.set_user_attr("objective", spec.objective)
    study.set_user_attr("metric", spec.metric)
    with warnings.catch_warnings():  # set_metric_names is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([spec.metric])  # the dashboard's axes say val_accuracy
    study.set_user_attr("description", spec.description)
    study.set_user_attr("fixed", dict(spec.fixed))
    study.set_user_attr("searched", spec.searched_keys())
    study.set_user_attr("spec_file", str(spec.path) if spec.path else spec.name)
    study.set_user_attr("command", options.command)
    write_study_note(study, spec, options.command, data_fingerprint(
        options.data_dir / get_objective(spec.objective).dataset))
    return study


def requeue_failed_grid_points(study: optuna.Study, spec: StudySpec) -> int:
    """Enqueue grid points whose every trial failed (Optuna counts FAIL as done); return how
    many points are still to run."""
    space = grid_search_space(spec)
    names = list(space)
    done, failed, queued = set(), set(), set()
    for trial in study.get_trials(deepcopy=False):
        key = tuple(trial.params.get(n, trial.system_attrs.get("fixed_params", {}).get(n))
                    for n in names)
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            done.add(key)
        elif trial.state == TrialState.FAIL:
            failed.add(key)
        elif trial.state == TrialState.WAITING:
            queued.add(key)
    for key in sorted(failed - done - queued, key=str):
        study.enqueue_trial(dict(zip(names, key, strict=True)))
    every = set(itertools.product(*space.values()))
    return len(every - done)


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
    seed: int | None
    threads: int
    cache_dir: Path
    run_id: str
    deadline: float | None


class _LocalTickets:
    """The trial count left to claim, for a single in-process worker."""

    def __init__(self, n: int):
        self.left = n

    def claim(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class _SharedTickets:
    """The trial count left to claim, shared between worker processes."""

    def __init__(self, value: Any):
        self.value = value

    def claim(self) -> bool:
        with self.value.get_lock():
            if self.value.value <= 0:
                return False
            self.value.value -= 1
            return True


def _run_worker(work: _Work, index: int, tickets: Any, emit: Callable[[Event], None]) -> str:
    """Claim and run trials until the count, the grid or the time runs out."""
    import torch

    torch.set_num_threads(work.threads)
    # Failed trials are reported as one line by the parent, not as Optuna's traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seed = None if work.seed is None else work.seed + index
    sampler = make_sampler(work.spec, seed)
    study = optuna.load_study(study_name=work.study_name, storage=open_storage(work.storage_url),
                              sampler=sampler, pruner=make_pruner(work.spec))
    runtime = Runtime(data_dir=work.data_dir, device=work.device, cache_dir=work.cache_dir)
    objective = TrialRunner(work.spec, runtime, work.artifact_dir, work.run_id)
    while True:
        if work.deadline is not None and time.time() >= work.deadline:
            return "timeout"
        if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
            return "grid"
        if not tickets.claim():
            return "trials"
        trial_ids: list[int] = []
        try:
            study.optimize(_remember(objective, trial_ids), n_trials=1)
        except HPSearchError as exc:
            emit(("error", {"message": str(exc)}))
            return "error"
        except Exception:
            pass  # recorded as FAIL on the trial, with its error; the study goes on
        if trial_ids:
            trial = study._storage.get_trial(trial_ids[0])
            emit(("trial", {"number": trial.number, "state": trial.state.name,
                            "value": trial.value,
                            "note": trial.user_attrs.get("error")
                            or trial.user_attrs.get("pruned_reason", "")}))


def _remember(objective: TrialRunner, trial_ids: list[int]) -> Callable[[optuna.Trial], float]:
    def wrapped(trial: optuna.Trial) -> float:
        trial_ids.append(trial._trial_id)
        return objective(trial)

    return wrapped


def _process_main(work: _Work, index: int, tickets_value: Any, events: Any) -> None:
    try:
        reason = _run_worker(work, index, _SharedTickets(tickets_value), events.put)
        events.put(("done", {"worker": index, "reason": reason}))
    except KeyboardInterrupt:
        events.put(("done", {"worker": index, "reason": "interrupt"}))
    except HPSearchError as exc:
        events.put(("error", {"message": str(exc)}))
        events.put(("done", {"worker": index, "reason": "error"}))


def _run_processes(work: _Work, jobs: int, n_trials: int, progress: _Progress) -> str:
    context = mp.get_context("spawn")  # fork would copy torch/SQLAlchemy state across processes
    tickets = context.Value("i", n_trials)
    events = context.Queue()
    workers = [context.Process(target=_process_main, args=(work, i, tickets, events),
                               daemon=True) for i in range(jobs)]
    for worker in workers:
        worker.start()
    reasons: list[str] = []
    try:
        while len(reasons) < jobs:
            try:
                kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    break
                continue
            if kind == "done":
                reasons.append(payload["reason"])
            else:
                progress.handle((kind, payload))
    except KeyboardInterrupt:
        _stop_workers(workers)
        raise
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
    if "interrupt" in reasons:
        raise KeyboardInterrupt
    for reason in ("error", "timeout", "grid"):
        if reason in reasons:
            return reason
    return "trials"


def _stop_workers(workers: list[Any]) -> None:
    """After Ctrl-C: let the workers record their trials as FAIL and exit.

    From a terminal the workers get the same SIGINT as the parent; when only the parent was
    signalled, pass it on. Workers still alive after that are terminated; the parent then marks
    their trials FAIL (``fail_running_trials``).
    """
    deadline = time.time() + 2
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.time()))
    for worker in workers:
        if worker.is_alive() and worker.pid is not None:
            os.kill(worker.pid, signal.SIGINT)
    deadline = time.time() + 10
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.time()))
        if worker.is_alive():
            worker.terminate()


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
        self.bar.set_postfix({"done": self.counts["COMPLETE"], "pruned": self.counts["PRUNED"],
                              "failed": self.counts["FAIL"],
                              "best": "-" if self.best is None else f"{self.best:.4g}"})
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _summarise(study: optuna.Study, run_id: str, artifact_dir: Path, storage_url: str,
               seconds: float, stopped_by: str) -> RunSummary:
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
        seconds=seconds, stopped_by=stopped_by)
