"""Objectives: one module per model family, each free of Optuna and Ray.

Each objective module exposes:

- ``Config``: a frozen dataclass of hyperparameters, every field with a default;
- ``METRICS``: the metric names its ``run`` returns (validation ones start with ``val_``);
- ``DATASET``: the folder under the data dir it reads (``euro`` or ``faces``);
- ``run(config, reporter, runtime) -> dict[str, float]``: trains, reports per step, returns
  the final metrics;
- optionally ``fit(config, reporter, runtime)``: the same, also returning the trained model, as
  ``(model, metrics)`` or an object with ``model`` and ``metrics`` attributes, so
  ``python -m search.retrain`` can save its weights.

An objective listed in ``LANES`` also has a lanes module with ``train_lanes(tasks, runtime,
on_end, capacity=, refill=)`` (many configs trained at once, each as it would train alone) and
``lane_group(config)`` (configs with equal groups share one batched model).

``get_objective(name)`` imports the module lazily, so running an MLP study never imports
XGBoost or torchvision's models.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from objectives.errors import ConfigError

OBJECTIVES: dict[str, str] = {
    "mlp": "objectives.mlp",
    "resnet": "objectives.resnet",
    "sklearn_probe": "objectives.sklearn_probe",
    "xgboost": "objectives.xgboost_pixels",
    "toy": "objectives.toy",
}
# Objectives that can train many configs at once as lanes of one batched model.
LANES: dict[str, str] = {"mlp": "objectives.mlp_lanes"}


@dataclass(frozen=True)
class Objective:
    """An objective's name, config class, metric names and training function."""

    name: str
    config_cls: type
    metrics: tuple[str, ...]
    dataset: str
    run: Callable[..., Mapping[str, float]]
    fit: Callable[..., Any] | None = None  # -> (model, metrics) or an object with both
    preflight: Callable[..., None] | None = None  # (config, runtime): raise before any trial
    lanes: Any = None  # a module with train_lanes and lane_group: many configs at once


    def make_config(self, values: Mapping[str, Any], *, source: str = "config") -> Any:
        from objectives.config import make_config

        return make_config(self.config_cls, values, source=source)


def get_objective(name: str) -> Objective:
    """The objective registered as ``name``; a ConfigError lists the known names."""
    if name not in OBJECTIVES:
        raise ConfigError(
            f"unknown objective {name!r}; known objectives: {', '.join(sorted(OBJECTIVES))}"
        )
    module = importlib.import_module(OBJECTIVES[name])
    return Objective(name=name, config_cls=module.Config, metrics=tuple(module.METRICS),
                     dataset=module.DATASET, run=module.run,
                     fit=getattr(module, "fit", None),
                     preflight=getattr(module, "preflight", None),
                     lanes=importlib.import_module(LANES[name]) if name in LANES else None)
