"""The reporter: how an objective talks to whatever runs it, without knowing who that is.

An objective calls ``report`` once per epoch, asks ``should_stop`` after it, keeps small
values with ``log`` and large payloads with ``save_artifact``. ``search/`` adapts this to
Optuna trials and Ray Tune; ``RecordingReporter`` keeps everything in memory for retraining
and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Reporter(Protocol):
    """What an objective may tell its runner."""

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of one step (an epoch, or a boosting round)."""

    def should_stop(self) -> bool:
        """Whether the runner wants the objective to stop early (pruning)."""

    def log(self, key: str, value: Any) -> None:
        """Keep a small JSON-serialisable value (a short series, a list of ids)."""

    def save_artifact(self, name: str, data: bytes) -> None:
        """Keep a large payload (per-batch losses, a prediction map) as a file named ``name``."""


class RecordingReporter:
    """A reporter that keeps everything in memory and never asks to stop.

    ``history`` maps each metric to its per-step values; ``logs`` and ``artifacts`` hold what
    ``log`` and ``save_artifact`` were given.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.logs: dict[str, Any] = {}
        self.artifacts: dict[str, bytes] = {}

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        self.steps.append(step)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))

    def should_stop(self) -> bool:
        return False

    def log(self, key: str, value: Any) -> None:
        self.logs[key] = value

    def save_artifact(self, name: str, data: bytes) -> None:
        self.artifacts[name] = data
