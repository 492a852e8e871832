"""Run dealt trials as lanes of one population (many small trials as one batched model).

``run_pack`` is the Optuna side of an objective's ``train_lanes``: each trial becomes a lane
with its own ``TrialReporter`` (so every epoch is reported to its trial and the study's pruner
decides per lane), each lane's end is recorded and told to Optuna exactly as a single trial's
would be, and ``refill`` brings newly dealt trials in at epoch boundaries so the pack stays
full. ``group_for_workers`` splits a first deal between workers by pack, so lanes that can
share a batched model land on the same worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from objectives import get_objective
from objectives.errors import HPSearchError
from search.driver.trial import TrialRunner, suggest_values
from search.driver.work import tell, trial_event  # the same recording as a single trial
from search.records.liveness import Heartbeat
from search.study.spec import StudySpec


def run_pack(study: optuna.Study, runner: TrialRunner, trial_ids: Sequence[int], capacity: int,
             refill: Callable[[int], list[int]], emit: Callable[[dict[str, Any]], None]) -> None:
    """Train the dealt trials as lanes until all have ended and ``refill`` deals no more.

    Args:
        study: The study, with its pruner.
        runner: Builds each trial's config and reporter, and records its end.
        trial_ids: The first trials (already dealt, RUNNING).
        capacity: The most lanes at once (a trial over N seeds takes N lanes).
        refill: Called at epoch boundaries with the trials that fit in the free lanes;
            returns newly dealt trial ids.
        emit: Called with each ended trial's progress event.

    Raises:
        HPSearchError: a lane's config was bad input that every trial would hit (after the
            pack ends, so no other lane is lost).
        KeyboardInterrupt: the running lanes are recorded as FAIL first.
    """
    storage = study._storage
    lanes = runner.objective.lanes
    capacity = max(capacity, runner.spec.seeds * len(trial_ids))  # every seed gets its lane
    live: set[int] = set()
    errors: list[HPSearchError] = []

    def start(ids: Sequence[int]) -> list[Any]:
        tasks = []
        for trial_id in ids:
            trial = optuna.Trial(study, trial_id)
            live.add(trial_id)
            try:
                config, reporter = runner.begin(trial)
                group, runs = runner.seed_runs(config, reporter)  # a lane per seed
            except HPSearchError as exc:
                errors.append(exc)
                storage.set_trial_user_attr(trial_id, "error", f"{type(exc).__name__}: {exc}")
                finish(trial, None, TrialState.FAIL)
                continue
            started = time.perf_counter()
            tasks += [lanes.LaneTask(seed_config, seed_reporter,
                                     tag=(trial, reporter, started, group, index))
                      for index, (seed_config, seed_reporter) in enumerate(runs)]
        return tasks

    def finish(trial: optuna.Trial, value: float | None, state: TrialState) -> None:
        tell(study, trial, value, state)
        live.discard(trial._trial_id)
        emit(trial_event(storage, trial._trial_id))

    def on_end(end: Any) -> None:
        trial, reporter, started, group, index = end.task.tag
        metrics, error = end.metrics, end.error
        if group is not None:  # a trial over seeds ends when its last seed does
            group.finish(index, metrics, error)
            if not group.done:
                return
            metrics, error = group.outcome(runner.spec.direction)
        value: float | None = None
        try:
            value = runner.end(trial, reporter, started, metrics=metrics, error=error)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except HPSearchError as exc:
            errors.append(exc)
            storage.set_trial_user_attr(trial._trial_id, "error", f"{type(exc).__name__}: {exc}")
            state = TrialState.FAIL
        except Exception:
            state = TrialState.FAIL  # the runner stored the error on the trial
        finish(trial, value, state)

    def more(free: int) -> list[Any]:
        trials = free // runner.spec.seeds  # a trial takes a lane per seed
        return [] if errors or not trials else start(refill(trials))

    with Heartbeat(storage, live):
        try:
            lanes.train_lanes(start(trial_ids), runner.runtime, on_end, capacity=capacity,
                              refill=more)
        except KeyboardInterrupt:
            for trial_id in list(live):
                storage.set_trial_user_attr(trial_id, "error", "interrupted (Ctrl-C)")
                tell(study, optuna.Trial(study, trial_id), None, TrialState.FAIL)
            raise
    if errors:
        raise errors[0]


def lane_group_of(study: optuna.Study, spec: StudySpec, trial_id: int) -> Any:
    """The pack a dealt trial's lane would join (from its stored parameters)."""
    objective = get_objective(spec.objective)
    trial = optuna.Trial(study, trial_id)
    values = {**spec.fixed, **suggest_values(trial, spec)}
    try:
        config = objective.make_config(values, source=f"trial {trial.number}")
    except HPSearchError:
        return None  # its worker records the error
    return objective.lanes.lane_group(config)


def group_for_workers(groups: dict[int, Any], workers: int, capacity: int,
                      cost: Callable[[Any, int], float]) -> list[list[int]]:
    """Split trial ids (keyed to their lane groups) into ``workers`` shares of at most
    ``capacity``, keeping each group together where it fits and balancing the estimated
    ``cost(group, lanes)`` of the packs each worker trains."""
    by_group: dict[Any, list[int]] = {}
    for trial_id, group in groups.items():
        by_group.setdefault(group, []).append(trial_id)
    chunks: list[tuple[Any, list[int]]] = []
    for group, ids in by_group.items():
        for first in range(0, len(ids), capacity):
            chunks.append((group, ids[first:first + capacity]))
    chunks.sort(key=lambda chunk: cost(chunk[0], len(chunk[1])), reverse=True)
    shares: list[list[int]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for group, ids in chunks:
        fits = [w for w in range(workers) if len(shares[w]) + len(ids) <= capacity]
        target = min(fits or range(workers), key=lambda w: loads[w])
        room = capacity - len(shares[target])
        shares[target] += ids[:room]
        loads[target] += cost(group, len(ids[:room]))
        for extra in ids[room:]:  # no worker had room for the whole chunk
            spill = min(range(workers), key=lambda w: len(shares[w]))
            shares[spill].append(extra)
    return shares


def pack_cost(group: Any, lanes: int) -> float:
    """A rough time per step of a pack: its per-operation overhead grows with depth, its
    arithmetic with lanes and width (the last element of an MLP lane group)."""
    width = group[-1] if isinstance(group, tuple) and isinstance(group[-1], int) else 16
    return 1.0 + 0.05 * lanes * math.sqrt(width / 16)
