"""What the driver shares with its backends: the run's ``Work``, dealing and the progress bar.

The parent side: ``claim`` (the dealer's next trial, retrying storage errors), ``Budget`` and
``deal_trials`` (claims within the run's count and deadline) and ``Progress`` (the bar). The
worker side: ``open_worker`` (a worker's study and trial runner), ``run_claimed_trial`` (one
dealt trial to its end, with a heartbeat), ``tell`` and ``trial_event`` (how a trial's end is
told to Optuna and shown). ``search.driver.runner`` runs trials with them in its own process,
``search.backends.processes`` in worker processes and ``search.backends.lanes`` as lanes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from objectives import get_objective
from objectives.errors import ConfigError, HPSearchError
from objectives.runtime import Runtime
from search.driver.claims import TrialDealer
from search.driver.trial import TrialRunner
from search.records import interrupts
from search.records.liveness import Heartbeat, Owner
from search.records.storage import open_storage
from search.study.components import make_pruner
from search.study.spec import StudySpec

Event = tuple[str, dict[str, Any]]
CLAIM_ATTEMPTS = 4  # a storage error in a claim is retried this often


@dataclass(frozen=True)
class Work:
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


def open_worker(work: Work) -> tuple[optuna.Study, TrialRunner]:
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
            tell(study, trial, None, TrialState.FAIL)
            raise
        except Exception:
            state = TrialState.FAIL  # the runner stored the error on the trial
        tell(study, trial, value, state)
    return trial_event(storage, trial_id)


def tell(study: optuna.Study, trial: optuna.Trial, value: float | None,
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
                                  f"trial ({type(exc).__name__}: {first_line(exc)}); check that "
                                  "it is reachable and rerun to resume") from None
            time.sleep(0.5 * 2 ** attempt)
    return None


class Budget:
    """The trials a run may still deal, and why it stopped dealing (None while it may)."""

    def __init__(self, n_trials: int, work: Work):
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


def deal_trials(dealer: TrialDealer, budget: Budget, owner: Owner, want: int,
                progress: Progress) -> list[int]:
    """Claim up to ``want`` trials for ``owner`` within the budget."""
    interrupts.check()  # an interrupt swallowed since the last deal stops the run here
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Progress:
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


