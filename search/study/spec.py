"""Study files: one YAML file per study in ``spaces/``, loaded into a checked ``StudySpec``.

A study file names the objective, its fixed settings, the search space (or a grid), the
sampler, the pruner and the metric. Every key is checked on load: an unknown key, a bad
range, an unknown objective, sampler or pruner each raise a ``ConfigError`` naming the file
and the key.

Space entries::

    lr: {type: float, low: 1.0e-5, high: 1.0, log: true}
    depth: {type: int, low: 1, high: 10}
    batch_norm: {type: categorical, choices: [true, false]}

A grid is either a product of value lists (``grid: {lr: [1.0, 0.01]}``) or a list of points
(``grid_points: [{batch_size: 1, epochs: 1}, ...]``) searched as one categorical parameter.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from objectives import get_objective
from objectives.errors import ConfigError
from objectives.runtime import PREVIEWS

SPACES_DIR = Path(__file__).resolve().parents[2] / "spaces"
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")
STUDY_KEYS = {"description", "objective", "metric", "direction", "fixed", "space", "grid",
              "grid_points", "sampler", "pruner", "trials", "scheduler", "seeds", "aggregate",
              "previews"}
AGGREGATES = ("mean", "lcb")  # a trial over seeds: its value is the mean or the lower bound
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: a float or int range, or a list of choices."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ComponentSpec:
    """A sampler or pruner: its name and keyword options."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    """A checked study file."""

    name: str
    description: str
    objective: str
    metric: str
    direction: str
    fixed: Mapping[str, Any]
    space: tuple[ParamSpec, ...] = ()
    grid: Mapping[str, tuple[Any, ...]] | None = None
    grid_points: tuple[Mapping[str, Any], ...] | None = None
    sampler: ComponentSpec = ComponentSpec("tpe")
    pruner: ComponentSpec = ComponentSpec("none")
    trials: int = 20
    scheduler: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    seeds: int = 1  # each trial trains its config over seeds seed, seed+1, ...
    aggregate: str = "mean"  # a trial's value over its seeds: "mean" or "lcb"
    previews: str = "finished"  # which trials draw PNG previews: all, finished or none

    @property
    def is_grid(self) -> bool:
        return self.grid is not None or self.grid_points is not None

    def grid_size(self) -> int:
        if self.grid_points is not None:
            return len(self.grid_points)
        if self.grid is not None:
            return math.prod(len(v) for v in self.grid.values())
        return 0

    def with_overrides(self, *, fixed: Mapping[str, Any] | None = None,
                       sampler: str | None = None, pruner: str | None = None,
                       seeds: int | None = None, aggregate: str | None = None,
                       previews: str | None = None) -> StudySpec:
        """A copy with ``--set`` values merged into ``fixed``, sampler/pruner replaced and
        ``--seeds``/``--aggregate``/``--previews`` applied."""
        import dataclasses

        source = f"{self.path or self.name} (--set)"
        merged = {**self.fixed, **(fixed or {})}
        searched = set(self.searched_keys())
        clash = sorted(searched & set(fixed or {}))
        if clash:
            raise ConfigError(f"{source}: {clash[0]!r} is searched by this study, so it cannot "
                              "be fixed with --set; edit the study file or copy it")
        get_objective(self.objective).make_config(merged, source=source)
        _check_held_out(merged, source)
        changes: dict[str, Any] = {"fixed": merged}
        if sampler is not None:
            changes["sampler"] = _component(sampler, SAMPLERS, "--sampler", str(self.path))
        if pruner is not None:
            changes["pruner"] = _component(pruner, PRUNERS, "--pruner", str(self.path))
        if seeds is not None:
            changes["seeds"] = _check_seeds(seeds, "--seeds", merged, self.objective)
        if aggregate is not None:
            changes["aggregate"] = _check_aggregate(aggregate, "--aggregate")
        if previews is not None:
            changes["previews"] = _check_previews(previews, "--previews")
        if changes.get("sampler") and changes["sampler"].name != "grid" and self.is_grid:
            raise ConfigError(f"--sampler {sampler} does not apply to {self.name}: it is a grid, "
                              "run point by point; for a search over these values copy the "
                              "study file and give it a 'space' instead of the grid")
        if changes.get("sampler") and changes["sampler"].name == "grid" and not self.is_grid:
            raise ConfigError(f"--sampler grid needs a study with a grid; {self.name} has a "
                              "search space; use tpe, random, cmaes or qmc")
        return dataclasses.replace(self, **changes)

    def searched_keys(self) -> list[str]:
        if self.grid_points is not None:
            return sorted({k for point in self.grid_points for k in point})
        if self.grid is not None:
            return list(self.grid)
        return [p.name for p in self.space]


def list_studies(spaces_dir: Path = SPACES_DIR) -> list[Path]:
    """Every study file in ``spaces_dir``, sorted by name."""
    return sorted(spaces_dir.glob("*.yaml"))


def find_study(name_or_path: str, spaces_dir: Path = SPACES_DIR) -> Path:
    """Resolve ``--study``: a name in ``spaces/`` or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        if not candidate.is_file():
            raise ConfigError(f"study file {candidate} not found; check the path")
        return candidate
    path = spaces_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in list_studies(spaces_dir))
        raise ConfigError(f"unknown study {name_or_path!r}; known studies: {known} "
                          "(see --list)")
    return path


def load_study_spec(name_or_path: str | Path, spaces_dir: Path = SPACES_DIR) -> StudySpec:
    """Load and check a study file; see the module docstring for its format."""
    path = find_study(str(name_or_path), spaces_dir)
    raw = read_yaml_mapping(path, "a study file must be a mapping of keys such as objective, "
                                  "metric, fixed and space")
    return parse_study_spec(raw, name=path.stem, path=path)


def read_yaml_mapping(path: Path, not_a_mapping: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; a ConfigError names the file on bad YAML or shape."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {not_a_mapping}")
    return raw


def parse_study_spec(raw: Mapping[str, Any], *, name: str, path: Path | None = None
                     ) -> StudySpec:
    """Check a study file's contents and build its ``StudySpec``."""
    where = str(path or name)
    unknown = sorted(set(raw) - STUDY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; "
                          f"allowed keys: {', '.join(sorted(STUDY_KEYS))}")
    for key in ("objective", "metric"):
        if not isinstance(raw.get(key), str):
            raise ConfigError(f"{where}: {key!r} is required and must be a string")
    objective = get_objective(raw["objective"])
    metric = raw["metric"]
    if metric not in objective.metrics:
        raise ConfigError(f"{where}: 'metric' {metric!r} is not reported by objective "
                          f"{objective.name!r}; choose one of {', '.join(objective.metrics)}")
    if not metric.startswith("val_"):
        raise ConfigError(f"{where}: 'metric' must be a validation metric (val_...), got "
                          f"{metric!r}; test metrics are recorded but never used to choose")
    direction = raw.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"{where}: 'direction' must be maximize or minimize, got {direction!r}")

    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: 'fixed' must be a mapping of config keys to values")
    objective.make_config(fixed, source=f"{where}: fixed")
    _check_held_out(fixed, where)

    space = _parse_space(raw.get("space"), where)
    grid = _parse_grid(raw.get("grid"), where)
    grid_points = _parse_grid_points(raw.get("grid_points"), where)
    given = [k for k in ("space", "grid", "grid_points") if raw.get(k) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of 'space', 'grid' or 'grid_points', "
                          f"got {given or 'none'}")
    searched = ([p.name for p in space] if space else
                list(grid) if grid else sorted({k for p in grid_points or () for k in p}))
    config_keys = set(_config_keys(objective))
    for key in searched:
        if key not in config_keys:
            raise ConfigError(f"{where}: searched key {key!r} is not a config key of objective "
                              f"{objective.name!r}; known keys: {', '.join(sorted(config_keys))}")
        if key in fixed:
            raise ConfigError(f"{where}: {key!r} is both fixed and searched; remove it from one")
        if key == "train_on":
            raise ConfigError(f"{where}: 'train_on' cannot be searched: selection must use "
                              "held-out validation data")
    _check_searched_values(objective, fixed, space, grid, grid_points, where)

    is_grid = grid is not None or grid_points is not None
    sampler = _component(raw.get("sampler", "grid" if is_grid else "tpe"), SAMPLERS,
                         "sampler", where)
    if is_grid != (sampler.name == "grid"):
        raise ConfigError(f"{where}: 'sampler' grid goes with 'grid'/'grid_points' and only with "
                          f"them, got sampler {sampler.name!r}")
    pruner = _component(raw.get("pruner", "none"), PRUNERS, "pruner", where)
    grid_size = (len(grid_points) if grid_points else
                 math.prod(len(v) for v in grid.values()) if grid else 0)
    trials = raw.get("trials", grid_size or 20)  # a grid's default: the whole grid
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"{where}: 'trials' must be a positive integer, got {trials!r}")
    scheduler = raw.get("scheduler") or {}
    if not isinstance(scheduler, dict):
        raise ConfigError(f"{where}: 'scheduler' must be a mapping (Ray ASHA settings)")
    seeds = _check_seeds(raw.get("seeds", 1), f"{where}: 'seeds'", fixed, objective.name)
    aggregate = _check_aggregate(raw.get("aggregate", "mean"), f"{where}: 'aggregate'")
    previews = _check_previews(raw.get("previews", "finished"), f"{where}: 'previews'")
    return StudySpec(
        name=name, description=str(raw.get("description", "")).strip(),
        objective=objective.name, metric=metric, direction=direction, fixed=dict(fixed),
        space=space, grid=grid, grid_points=grid_points, sampler=sampler, pruner=pruner,
        trials=trials, scheduler=dict(scheduler), path=path, seeds=seeds, aggregate=aggregate,
        previews=previews,
    )


MAX_SEEDS = 100


def _check_seeds(value: Any, where: str, fixed: Mapping[str, Any], objective: str) -> int:
    """A trial's seed count: a whole number from 1 to ``MAX_SEEDS``; the last seed must be a
    valid ``seed`` of the objective."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SEEDS:
        raise ConfigError(f"{where} must be a whole number from 1 to {MAX_SEEDS}, got {value!r}")
    if value > 1:
        config = get_objective(objective).make_config(fixed, source=where)
        get_objective(objective).make_config({**fixed, "seed": config.seed + value - 1},
                                             source=f"{where} (the last seed)")
    return value


def _check_aggregate(value: Any, where: str) -> str:
    if value not in AGGREGATES:
        raise ConfigError(f"{where} must be one of {', '.join(AGGREGATES)}, got {value!r}")
    return str(value)


def _check_previews(value: Any, where: str) -> str:
    if value not in PREVIEWS:
        raise ConfigError(f"{where} must be one of {', '.join(PREVIEWS)} (which trials draw "
                          f"PNG previews), got {value!r}")
    return str(value)


def _check_held_out(fixed: Mapping[str, Any], where: str) -> None:
    if fixed.get("train_on", "train") != "train":
        raise ConfigError(f"{where}: 'train_on' must stay 'train' in a study: trials are chosen "
                          "by validation metrics, which training on validation data would "
                          "spoil; use search.retrain --train-on train+val for the final model")


def _config_keys(objective: Any) -> list[str]:
    from objectives.config import config_fields

    return list(config_fields(objective.config_cls))


def _parse_space(raw: Any, where: str) -> tuple[ParamSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: 'space' must be a non-empty mapping of parameter entries")
    params = []
    for name, entry in raw.items():
        key = f"space.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: {key!r} must be a mapping with 'type' and a range or "
                              "choices")
        unknown = sorted(set(entry) - PARAM_KEYS)
        if unknown:
            raise ConfigError(f"{where}: {key}.{unknown[0]} is not a parameter setting; "
                              f"allowed: {', '.join(sorted(PARAM_KEYS))}")
        kind = entry.get("type")
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: '{key}.choices' must be a non-empty list")
            params.append(ParamSpec(name, kind, choices=tuple(choices)))
        elif kind in ("float", "int"):
            low, high = entry.get("low"), entry.get("high")
            for bound_name, bound in (("low", low), ("high", high)):
                if not isinstance(bound, (int, float)) or isinstance(bound, bool):
                    raise ConfigError(f"{where}: '{key}.{bound_name}' must be a number, "
                                      f"got {bound!r}")
            if low > high:
                raise ConfigError(f"{where}: '{key}.low' must be <= high, got low={low} "
                                  f"high={high}; swap them")
            log = entry.get("log", False)
            if not isinstance(log, bool):
                raise ConfigError(f"{where}: '{key}.log' must be true or false, got {log!r}")
            if log and low <= 0:
                raise ConfigError(f"{where}: '{key}.low' must be > 0 when log is true, got "
                                  f"{low}; use a positive bound or set log: false")
            step = entry.get("step")
            if step is not None and (not isinstance(step, (int, float)) or step <= 0):
                raise ConfigError(f"{where}: '{key}.step' must be a positive number, "
                                  f"got {step!r}")
            if step is not None and log:
                raise ConfigError(f"{where}: '{key}' cannot have both step and log; drop one")
            params.append(ParamSpec(name, kind, low=low, high=high, log=log, step=step))
        else:
            raise ConfigError(f"{where}: '{key}.type' must be float, int or categorical, "
                              f"got {kind!r}")
    return tuple(params)


def _parse_grid(raw: Any, where: str) -> dict[str, tuple[Any, ...]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: 'grid' must be a non-empty mapping of key: [values]")
    for name, values in raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: 'grid.{name}' must be a non-empty list of values")
    return {name: tuple(values) for name, values in raw.items()}


def _parse_grid_points(raw: Any, where: str) -> tuple[dict[str, Any], ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: 'grid_points' must be a non-empty list of mappings")
    keys = None
    for i, point in enumerate(raw):
        if not isinstance(point, dict) or not point:
            raise ConfigError(f"{where}: 'grid_points[{i}]' must be a mapping such as "
                              "{depth: 6, width: 16}")
        if keys is not None and set(point) != keys:
            raise ConfigError(f"{where}: 'grid_points[{i}]' has keys {sorted(point)}, but the "
                              f"first point has {sorted(keys)}; give every point the same keys")
        keys = set(point)
    return tuple(dict(p) for p in raw)


def _check_searched_values(objective: Any, fixed: Mapping[str, Any],
                           space: tuple[ParamSpec, ...], grid: Mapping[str, Any] | None,
                           grid_points: tuple[Mapping[str, Any], ...] | None, where: str) -> None:
    """Every choice, grid value and range bound must make a valid config."""
    for values in _variations(space, grid, grid_points):
        objective.make_config({**fixed, **values}, source=f"{where}: searched value")


def _variations(space: tuple[ParamSpec, ...], grid: Mapping[str, Any] | None,
                grid_points: tuple[Mapping[str, Any], ...] | None) -> list[dict[str, Any]]:
    """Each searched value on its own: every choice, range bound, grid value and grid point."""
    candidates: list[dict[str, Any]] = []
    for param in space:
        values = param.choices or (param.low, param.high)
        if param.type == "int":
            values = tuple(int(v) for v in values)
        candidates += [{param.name: v} for v in values]
    if grid and math.prod(len(v) for v in grid.values()) <= 64:
        names = list(grid)
        candidates += [dict(zip(names, combo, strict=True))
                       for combo in itertools.product(*grid.values())]
    else:
        for name, values in (grid or {}).items():
            candidates += [{name: v} for v in values]
    candidates += [dict(p) for p in grid_points or ()]
    return candidates


def _component(raw: Any, allowed: tuple[str, ...], key: str, where: str) -> ComponentSpec:
    if isinstance(raw, str):
        name, options = raw, {}
    elif isinstance(raw, dict) and isinstance(raw.get("name"), str):
        name, options = raw["name"], {k: v for k, v in raw.items() if k != "name"}
    else:
        raise ConfigError(f"{where}: {key!r} must be a name or a mapping with 'name', "
                          f"got {raw!r}")
    if name not in allowed:
        raise ConfigError(f"{where}: unknown {key} {name!r}; choose one of {', '.join(allowed)}")
    return ComponentSpec(name, options)
