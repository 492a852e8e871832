"""Build Optuna samplers and pruners from a study's ``sampler`` and ``pruner`` entries."""

from __future__ import annotations

from typing import Any

import optuna

from objectives.errors import ConfigError
from search.spec import StudySpec
from search.trial import grid_search_space


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded (each worker passes its own seed)."""
    name, options = spec.sampler.name, dict(spec.sampler.options)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_search_space(spec), seed=seed)
    classes: dict[str, Any] = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "qmc": optuna.samplers.QMCSampler,
    }
    return _build(classes[name], {**options, "seed": seed}, f"sampler {name}", spec)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner (``none`` never prunes)."""
    name, options = spec.pruner.name, dict(spec.pruner.options)
    classes: dict[str, Any] = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    return _build(classes[name], options, f"pruner {name}", spec)


def _build(cls: type, options: dict[str, Any], what: str, spec: StudySpec) -> Any:
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{spec.path or spec.name}: bad options for {what}: {exc}") from None
