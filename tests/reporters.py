"""Reporters for tests: what a runner would tell an objective, without a runner."""

from __future__ import annotations

from objectives.reporter import RecordingReporter


class StopAfter(RecordingReporter):
    """A recording reporter that asks to stop after ``steps`` reports, as a pruner would."""

    def __init__(self, steps: int):
        super().__init__()
        self.stop_after = steps

    def should_stop(self) -> bool:
        return len(self.steps) >= self.stop_after
