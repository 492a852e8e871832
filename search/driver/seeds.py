"""A trial over seeds: one config trained with seeds s, s+1, ..., s+N-1, recorded as one trial.

One seed is not a result here (the same MLP config swings 3-6 points of validation accuracy
between seeds), so a study may ask for ``seeds: N``. ``SeedGroup`` gives each seed its own
objective reporter. When every seed has reported a step, the group reports the mean of each
metric to the trial's reporter, so the pruner and the dashboard see the mean; once the pruner
says stop, every seed stops. At the end the trial's metrics are the per-seed means (with the
metric's standard deviation and confidence bound beside them), and the per-seed metrics,
histories and artifacts are stored on the trial. The artifacts of the seed whose metric is
the median keep their plain names, so boundary maps and previews show a typical seed.

The seeds run as lanes of one pack where the objective has lanes, one after another where it
has not; this module does not care which.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from objectives.compute import merge_ledgers

CONFIDENCE = 0.95  # one-sided level of the ``lcb`` bound


def seed_statistics(values: Sequence[float], direction: str = "maximize",
                    confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean, sample standard deviation, min, max and the pessimistic t-based confidence bound
    on the mean of ``values`` (a lower bound when maximising, an upper one when minimising).

    With one value the standard deviation is NaN and the bound is the value itself.
    """
    if not values:
        raise ValueError("seed_statistics needs at least one value")
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else math.nan
    if n > 1:
        from scipy.stats import t  # scipy comes with scikit-learn

        margin = float(t.ppf(confidence, n - 1)) * sd / math.sqrt(n)
    else:
        margin = 0.0
    bound = mean - margin if direction == "maximize" else mean + margin
    return {"mean": mean, "sd": sd, "lcb": bound, "min": min(values), "max": max(values),
            "n": float(n)}


def median_index(values: Sequence[float]) -> int:
    """The index of the median value (the lower middle one for an even count)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2]


class SeedGroup:
    """Gathers the seeds of one trial and reports to the trial's reporter as one.

    Args:
        parent: The trial's reporter (``TrialReporter``): it gets the per-step means, the
            artifacts and, at the end, the per-seed records.
        seeds: The seeds, in order.
        metric: The study's metric (ranks the seeds for the median seed's artifacts).
    """

    def __init__(self, parent: Any, seeds: Sequence[int], metric: str):
        self.parent = parent
        self.seeds = list(seeds)
        self.metric = metric
        self.histories: list[dict[str, list[float]]] = [{} for _ in self.seeds]
        self.logs: list[dict[str, Any]] = [{} for _ in self.seeds]
        self.artifacts: list[dict[str, str]] = [{} for _ in self.seeds]
        self.results: dict[int, Mapping[str, float] | None] = {}
        self.errors: dict[int, BaseException] = {}
        self.stop = False
        self._pending: dict[int, dict[int, Mapping[str, float]]] = {}  # step -> seed -> metrics
        self._reported_step = -1  # the last step whose mean went to the trial
        self._asked_step = -1  # the last averaged step the pruner was asked about

    def reporter(self, index: int) -> SeedReporter:
        """The objective reporter of the ``index``-th seed."""
        return SeedReporter(self, index)

    @property
    def done(self) -> bool:
        return len(self.results) + len(self.errors) == len(self.seeds)

    def _report(self, index: int, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.histories[index].setdefault(key, []).append(float(value))
        waiting = self._pending.setdefault(step, {})
        waiting[index] = metrics
        if len(waiting) == len(self.seeds):  # every seed is at this step: report the mean
            del self._pending[step]
            self.parent.report(step, _mean_metrics(list(waiting.values())))
            self._reported_step = step

    def _should_stop(self) -> bool:
        if not self.stop and self._reported_step > self._asked_step:  # once per mean
            self._asked_step = self._reported_step
            self.stop = self.parent.should_stop()
        return self.stop

    def _save_artifact(self, index: int, name: str, data: bytes) -> None:
        stored_name = f"seed{self.seeds[index]}_{name}"
        self.parent.save_artifact(stored_name, data)
        self.artifacts[index][name] = stored_name

    def finish(self, index: int, metrics: Mapping[str, float] | None = None,
               error: BaseException | None = None) -> None:
        """Record how the ``index``-th seed ended; an error stops the other seeds too."""
        if error is not None:
            self.errors[index] = error
            self.stop = True
        else:
            self.results[index] = metrics

    def outcome(self, direction: str) -> tuple[dict[str, float] | None, BaseException | None]:
        """The trial's metrics (per-seed means, and the metric's ``_sd``, ``_lcb``, ``_min``
        and ``_max``) or the first seed's error, once every seed has finished; the per-seed
        records are stored on the trial's reporter."""
        error = self.errors[min(self.errors)] if self.errors else None
        finished = [i for i in range(len(self.seeds)) if self.results.get(i) is not None]
        per_seed = [dict(self.results[i] or {}) for i in finished]
        self.parent.log("seeds", self.seeds)
        self.parent.log("seed_metrics", [{"seed": self.seeds[i], **m}
                                         for i, m in zip(finished, per_seed, strict=True)])
        self.parent.log("seed_histories", self.histories)
        if error is not None or not per_seed:
            return None, error
        values = [m.get(self.metric, math.nan) for m in per_seed]
        typical = finished[median_index(values)]
        for name, stored_name in self.artifacts[typical].items():
            self.parent.artifacts[name] = self.parent.artifacts[stored_name]
        for key, value in self.logs[typical].items():
            self.parent.log(key, value)
        ledgers = [logs["compute"] for logs in self.logs if "compute" in logs]
        if ledgers:  # the trial's compute is every seed's
            self.parent.log("compute", merge_ledgers(ledgers))
        self.parent.log("median_seed", self.seeds[typical])
        metrics = _mean_metrics(per_seed)
        if all(math.isfinite(v) for v in values):
            stats = seed_statistics(values, direction)
            for key in ("sd", "lcb", "min", "max"):
                metrics[f"{self.metric}_{key}"] = stats[key]
        return metrics, None


class SeedReporter:
    """The objective reporter of one seed of a ``SeedGroup``."""

    def __init__(self, group: SeedGroup, index: int):
        self.group = group
        self.index = index

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        self.group._report(self.index, step, metrics)

    def should_stop(self) -> bool:
        return self.group._should_stop()

    def log(self, key: str, value: Any) -> None:
        self.group.logs[self.index][key] = value

    def save_artifact(self, name: str, data: bytes) -> None:
        self.group._save_artifact(self.index, name, data)


def _mean_metrics(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each metric's mean over the seeds that have it."""
    keys = dict.fromkeys(k for metrics in per_seed for k in metrics)
    return {key: statistics.fmean(float(m[key]) for m in per_seed if key in m) for key in keys}
