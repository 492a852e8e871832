"""A toy objective: a quadratic bowl with a per-step learning curve, for tests and benchmarks.

It trains nothing: step ``t`` of ``steps`` reports ``val_loss = (x - 1)^2 + (y + 0.5)^2 +
1 / (t + 1)``, so a trial's final loss is known in advance and worse trials stay worse at
every step (what a pruner needs). ``seed_spread`` moves the result up for odd seeds and down
for even ones (a config whose result depends on its seed, with a known mean). ``fail_above``
makes trials with ``x`` above it raise, and ``crash_above`` makes them kill their own process
(a dying worker); both exist to test how runners record faults. It reads no data and never
imports optuna or ray.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from objectives.config import ANY, SEED, Range, at_least
from objectives.reporter import Reporter
from objectives.runtime import Runtime

DATASET = "euro"  # read by no step; named so the data checks and provenance have a folder
METRICS = ("val_loss", "final_loss")


@dataclass(frozen=True)
class Config:
    """The point to evaluate and how the run behaves."""

    x: float = 0.0
    y: float = 0.0
    steps: int = 10  # reports per trial
    sleep_s: float = 0.0  # seconds of pretend work per step
    fail_above: float | None = None  # raise a RuntimeError when x > fail_above
    crash_above: float | None = None  # kill this process (SIGKILL) when x > crash_above
    seed_spread: float = 0.0  # + this for odd seeds, - for even ones: a seed-dependent result
    seed: int = 0

    RANGES: ClassVar[Mapping[str, Range]] = {
        "x": ANY, "y": ANY, "steps": at_least(1), "sleep_s": at_least(0),
        "fail_above": ANY, "crash_above": ANY, "seed_spread": ANY, "seed": SEED,
    }


def run(config: Config, reporter: Reporter, runtime: Runtime) -> dict[str, float]:
    """Report the bowl's value with a decaying offset per step; return the last one."""
    bowl = (config.x - 1.0) ** 2 + (config.y + 0.5) ** 2
    bowl += config.seed_spread * (1 if config.seed % 2 else -1)  # over seeds s, s+1: mean 0
    curve: list[float] = []
    for step in range(config.steps):
        if config.sleep_s:
            time.sleep(config.sleep_s)
        if config.fail_above is not None and config.x > config.fail_above:
            raise RuntimeError(f"toy objective told to fail: x={config.x} > "
                               f"fail_above={config.fail_above}")
        if config.crash_above is not None and config.x > config.crash_above:
            os.kill(os.getpid(), signal.SIGKILL)
        curve.append(bowl + 1.0 / (step + 1))
        reporter.report(step, {"val_loss": curve[-1]})
        if reporter.should_stop():
            break
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(curve, dtype=np.float32))
    reporter.save_artifact("curve.npy", buffer.getvalue())
    return {"val_loss": curve[-1], "final_loss": bowl}
