"""Build Optuna samplers and pruners from a study's ``sampler`` and ``pruner`` entries.

Optuna imports a sampler's extra package (``cmaes``, ``scipy``) only when the sampler first
needs it, several trials into a run; ``check_components`` imports it up front, so a missing
package is one line before any trial instead of failed trials later.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import optuna

from objectives.errors import ConfigError
from search.driver.trial import grid_search_space
from search.study.spec import StudySpec

# sampler -> (module it imports lazily, the pip package that provides it)
SAMPLER_PACKAGES = {"cmaes": ("cmaes", "cmaes"), "qmc": ("scipy.stats.qmc", "scipy")}
# Options a pruner needs that Optuna gives no default for, so `--pruner NAME` works alone.
PRUNER_DEFAULTS: dict[str, dict[str, Any]] = {"percentile": {"percentile": 25.0}}


def check_components(spec: StudySpec) -> None:
    """Build the study's sampler and pruner once, before any trial: a missing package or a
    bad option is a ``ConfigError`` here, not a failed trial later."""
    make_sampler(spec, None)
    make_pruner(spec)


def _check_package(spec: StudySpec) -> None:
    """Refuse a sampler whose Python package is missing, with the command that installs it."""
    name = spec.sampler.name
    if name not in SAMPLER_PACKAGES:
        return
    module, package = SAMPLER_PACKAGES[name]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"sampler {name} needs the Python package {package!r}, which cannot "
                          f"be imported ({exc}); install it with pip install {package} (or "
                          "pip install -e . for every dependency), or choose another --sampler"
                          ) from None


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded (each worker passes its own seed)."""
    name, options = spec.sampler.name, dict(spec.sampler.options)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_search_space(spec), seed=seed)
    _check_package(spec)
    classes: dict[str, Any] = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "qmc": optuna.samplers.QMCSampler,
    }
    return _build(classes[name], {**options, "seed": seed}, f"sampler {name}", spec)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner (``none`` never prunes)."""
    name = spec.pruner.name
    options = {**PRUNER_DEFAULTS.get(name, {}), **spec.pruner.options}
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
        with warnings.catch_warnings():  # QMCSampler is marked experimental on every build
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{spec.path or spec.name}: bad options for {what}: {exc}") from None
