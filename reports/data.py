"""Read studies, trials and their artifacts from an Optuna storage into plain records.

Nothing here draws or trains. ``StudyStore`` opens a storage URL once; ``load(name)`` gives a
``StudyInfo`` (or ``None`` when the storage has no such study) whose ``TrialInfo`` records
carry everything the figures use: params, the intermediate values, the per-epoch history,
final metrics, the effective config and artifact ids.
"""

from __future__ import annotations

import io
import json
import statistics
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from search.driver.seeds import median_index
from search.records.provenance import study_commands
from search.records.storage import artifact_dir_for, open_storage

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
# What numpy, zipfile and json raise on a truncated or corrupt file.
DECODE_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile,
                 zlib.error)


@dataclass(frozen=True)
class TrialInfo:
    """One trial as the figures need it."""

    number: int
    state: str  # one of STATES
    value: float | None
    params: dict[str, Any]
    intermediate: dict[int, float]  # the study metric per step
    history: dict[str, list[float]]  # every reported metric per epoch
    metrics: dict[str, float]  # final metrics (complete trials)
    config: dict[str, Any]  # the full effective config
    artifacts: dict[str, str]  # file name -> artifact id
    user_attrs: dict[str, Any] = field(repr=False, default_factory=dict)
    duration_s: float | None = None
    note: str = ""  # pruned reason or error
    study: str = ""  # the study's name

    # A trial over seeds (search.driver.seeds) stores its seeds, per-seed final metrics and per-seed
    # histories; ``history`` and ``metrics`` are then the per-seed means.
    @property
    def seeds(self) -> list[int]:
        """The trial's training seeds (empty for a one-seed trial recorded without them)."""
        return [int(s) for s in self.user_attrs.get("seeds") or []]

    @property
    def over_seeds(self) -> bool:
        """True when the trial trained several seeds and its curves are their means."""
        return len(self.seeds) > 1

    @property
    def seed_metrics(self) -> list[dict[str, float]]:
        """Per-seed final metrics, ``{"seed": s, <metric>: value, ...}`` each."""
        return [dict(m) for m in self.user_attrs.get("seed_metrics") or []]

    @property
    def seed_histories(self) -> list[dict[str, list[float]]]:
        """Per-seed histories, one ``{metric: [per-epoch values]}`` per seed."""
        return [dict(h) for h in self.user_attrs.get("seed_histories") or []]

    def seed_values(self, metric: str) -> list[float]:
        """The final ``metric`` of each seed that recorded it."""
        return [float(m[metric]) for m in self.seed_metrics if m.get(metric) is not None]

    def seed_curves(self, key: str) -> list[list[float]]:
        """The per-epoch ``key`` of each seed that recorded it."""
        return [list(h[key]) for h in self.seed_histories if h.get(key)]

    def seed_sd(self, metric: str) -> float | None:
        """The sample standard deviation of ``metric`` over the seeds; None unless the trial
        has at least two seeds that recorded it."""
        values = self.seed_values(metric)
        return statistics.stdev(values) if self.over_seeds and len(values) > 1 else None

    @property
    def median_seed(self) -> int | None:
        """The seed whose validation accuracy is the median (the lower middle one of an even
        count), as ``search.driver.seeds`` picks it; the recorded ``median_seed`` when the seeds
        have no validation accuracy; None for a trial not over seeds."""
        if not self.over_seeds:
            return None
        ranked = [m for m in self.seed_metrics if m.get("val_accuracy") is not None]
        if ranked:
            return int(ranked[median_index([float(m["val_accuracy"]) for m in ranked])]["seed"])
        recorded = self.user_attrs.get("median_seed")
        return None if recorded is None else int(recorded)

    def label(self, keys: tuple[str, ...] | list[str] = ()) -> str:
        """``"#3 lr=0.001"``: the trial number and the given config keys (default: params)."""
        if keys:
            parts = [f"{k}={_short(self.config.get(k))}" for k in keys]
        else:
            parts = [f"{k}={_short(v)}" for k, v in self.params.items()]
        return " ".join([f"#{self.number}", *parts])


@dataclass(frozen=True)
class StudyInfo:
    """One study: its settings, what it is for, and its trials."""

    name: str
    direction: str  # "maximize" or "minimize"
    metric: str
    objective: str
    description: str
    command: str
    trials: tuple[TrialInfo, ...]
    attrs: dict[str, Any] = field(repr=False, default_factory=dict)  # the study's user attrs
    # The runs that made it, oldest first: {command, backend, first_trial, trials} each
    # (search.records.provenance.study_commands).
    commands: tuple[dict[str, Any], ...] = ()

    @property
    def seeds(self) -> int:
        """Seeds per trial (the study's ``seeds``; 1 for a study made without it)."""
        return int(self.attrs.get("seeds") or 1)

    @property
    def aggregate(self) -> str:
        """How a trial's value sums up its seeds: ``mean`` or ``lcb``."""
        return str(self.attrs.get("aggregate") or "mean")

    def counts(self) -> dict[str, int]:
        """Trials per state (every state in STATES, zero when absent)."""
        return {state: sum(t.state == state for t in self.trials) for state in STATES}

    def complete(self) -> list[TrialInfo]:
        return [t for t in self.trials if t.state == "COMPLETE"]

    def finished(self) -> list[TrialInfo]:
        """Complete and pruned trials: those with curves worth drawing."""
        return [t for t in self.trials if t.state in ("COMPLETE", "PRUNED")]

    def ranked(self) -> list[TrialInfo]:
        """Complete trials, best first."""
        return sorted(self.complete(), key=lambda t: t.value,
                      reverse=self.direction == "maximize")


class UnreadableArtifact(Exception):
    """A trial's artifact file exists but cannot be decoded (truncated, corrupt, wrong shape)."""

    def __init__(self, trial: TrialInfo, name: str, reason: str, path: Path | None = None):
        where = f" at {path}" if path is not None else ""
        super().__init__(f"{trial.study} trial #{trial.number}: {name} is unreadable "
                         f"({reason}){where}")
        self.trial = trial
        self.name = name
        self.reason = reason


def decode_error(exc: BaseException) -> str:
    """``BadZipFile: File is not a zip file``: the type and the first line of the message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class StudyStore:
    """Read-only access to the studies and artifacts of one storage URL."""

    def __init__(self, url: str, artifact_dir: Path | None = None):
        self.url = url
        self.storage = open_storage(url)
        self.artifact_dir = Path(artifact_dir or artifact_dir_for(url))
        self._artifacts = FileSystemArtifactStore(str(self.artifact_dir))
        self._cache: dict[str, bytes | None] = {}
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def names(self) -> list[str]:
        return sorted(optuna.get_all_study_names(self.storage))

    def study(self, name: str) -> optuna.Study | None:
        """The Optuna study (for optuna.visualization), or None when it is not stored."""
        if name not in self.names():
            return None
        return optuna.load_study(study_name=name, storage=self.storage)

    def load(self, name: str) -> StudyInfo | None:
        """The study as plain records, or None when the storage has no study of that name."""
        study = self.study(name)
        if study is None:
            return None
        attrs = study.user_attrs
        trials = tuple(_trial_info(t, name) for t in study.get_trials(deepcopy=False))
        return StudyInfo(
            name=name, direction=study.direction.name.lower(),
            metric=attrs.get("metric", "value"), objective=attrs.get("objective", ""),
            description=str(attrs.get("description", "")).strip(),
            command=attrs.get("command", ""), trials=trials, attrs=dict(attrs),
            commands=tuple(study_commands(attrs)))

    def artifact(self, trial: TrialInfo, name: str) -> bytes | None:
        """An artifact's bytes, or None when the trial has none of that name or it is gone."""
        artifact_id = trial.artifacts.get(name)
        if artifact_id is None:
            return None
        if artifact_id not in self._cache:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / name
                try:
                    download_artifact(artifact_store=self._artifacts, artifact_id=artifact_id,
                                      file_path=str(path))
                    self._cache[artifact_id] = path.read_bytes()
                except (FileNotFoundError, OSError, ArtifactNotFound):  # a missing folder
                    self._cache[artifact_id] = None
        return self._cache[artifact_id]

    def artifact_path(self, trial: TrialInfo, name: str) -> Path | None:
        """Where the artifact file lies (file-system artifact store), or None without one."""
        artifact_id = trial.artifacts.get(name)
        return None if artifact_id is None else self.artifact_dir / artifact_id

    def npz(self, trial: TrialInfo, name: str, keys: tuple[str, ...] = ()
            ) -> dict[str, np.ndarray] | None:
        """The arrays of an ``.npz`` artifact, or None when there is none; an unreadable file,
        or one without every name in ``keys``, raises ``UnreadableArtifact``."""
        data = self.artifact(trial, name)
        if data is None:
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except DECODE_ERRORS as exc:
            raise UnreadableArtifact(trial, name, decode_error(exc),
                                     self.artifact_path(trial, name)) from None
        absent = [key for key in keys if key not in arrays]
        if absent:
            raise UnreadableArtifact(trial, name, f"no {', '.join(absent)} array",
                                     self.artifact_path(trial, name))
        return arrays

    def npy(self, trial: TrialInfo, name: str) -> np.ndarray | None:
        """An ``.npy`` artifact, or None when there is none (``UnreadableArtifact`` if bad)."""
        data = self.artifact(trial, name)
        if data is None:
            return None
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except DECODE_ERRORS as exc:
            raise UnreadableArtifact(trial, name, decode_error(exc),
                                     self.artifact_path(trial, name)) from None

    def json(self, trial: TrialInfo, name: str) -> Any:
        """A JSON artifact, or None when there is none (``UnreadableArtifact`` if bad)."""
        data = self.artifact(trial, name)
        if data is None:
            return None
        try:
            return json.loads(data)
        except DECODE_ERRORS as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise UnreadableArtifact(trial, name, decode_error(exc),
                                     self.artifact_path(trial, name)) from None


def _trial_info(trial: optuna.trial.FrozenTrial, study: str) -> TrialInfo:
    attrs = dict(trial.user_attrs)
    return TrialInfo(
        number=trial.number, state=trial.state.name, value=trial.value,
        params=dict(trial.params), intermediate=dict(sorted(trial.intermediate_values.items())),
        history=dict(attrs.get("history") or {}), metrics=dict(attrs.get("metrics") or {}),
        config=dict(attrs.get("config") or {}), artifacts=dict(attrs.get("artifacts") or {}),
        user_attrs=attrs, duration_s=attrs.get("duration_s"),
        note=str(attrs.get("pruned_reason") or attrs.get("error") or ""), study=study)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
