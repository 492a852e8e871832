"""``--jobs K``: K worker processes fed with trials by the parent (the driver's process).

The parent deals each idle worker a list of trial ids through its task queue: one trial, or
the first lanes of a pack. A pack of lanes asks for more (a ``want`` event) at each epoch
boundary and the parent answers with newly dealt trials, possibly none. A worker that dies has
its trials marked FAIL with the reason and is replaced; their tickets go back to the budget,
and workers dying ``MAX_DEATHS_IN_A_ROW`` times without a trial ending in between stop the run.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from objectives.errors import HPSearchError
from search.backends.lanes import group_for_workers, lane_group_of, pack_cost, run_pack
from search.driver.claims import TrialDealer, hand_over
from search.driver.work import (
    Budget,
    Progress,
    Work,
    deal_trials,
    first_line,
    open_worker,
    run_claimed_trial,
    trial_event,
)
from search.records import interrupts
from search.records.liveness import Owner, watch_parent

MAX_DEATHS_IN_A_ROW = 3  # workers dying without a trial ending in between stop the run


@dataclass
class _Slot:
    """One worker process, its task queue and the trials it runs."""

    process: Any
    tasks: Any
    trial_ids: set[int] = field(default_factory=set)
    busy: bool = False  # a task (one trial, or a pack of lanes) is running


class WorkerPool:
    """``--jobs K``: K worker processes fed with trials by this (the parent) process.

    A worker gets a list of trial ids: one trial, or the first lanes of a pack. A pack asks
    for more (``want``) at each epoch boundary and the parent answers with newly dealt
    trials, possibly none; ``done`` says the worker is idle again.
    """

    def __init__(self, work: Work, dealer: TrialDealer, jobs: int, progress: Progress):
        self.work = work
        self.dealer = dealer
        self.jobs = jobs
        self.progress = progress
        self.context = mp.get_context("spawn")  # fork would copy torch/SQLAlchemy state
        self.events = self.context.Queue()
        self.slots: dict[int, _Slot] = {}  # by worker pid
        self.deaths_in_a_row = 0
        self.budget: Budget | None = None

    def run(self, n_trials: int) -> str:
        self.budget = budget = Budget(n_trials, self.work)
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
                interrupts.check()  # an interrupt the garbage collector swallowed
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
        return deal_trials(self.dealer, self.budget, Owner.of(slot.process.pid), want,
                           self.progress)

    def _start_worker(self) -> None:
        tasks = self.context.SimpleQueue()
        process = self.context.Process(target=worker_main, daemon=True,
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


def worker_main(work: Work, tasks: Any, events: Any, parent_pid: int) -> None:
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
                              f"{type(exc).__name__}: {first_line(exc)}"}))
