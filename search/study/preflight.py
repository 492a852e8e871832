"""Checks before a study's first trial: every config a trial can get must pass its objective's
``preflight`` (say, pretrained weights that can be had).

The configs checked are the combinations of the searched values (each choice, each range's two
bounds, each grid value or grid point) merged into the fixed settings, so a check sees the
values that really occur together: in ``cnn_search`` mode ``probe`` meets only the backbones
listed in the study, never the objective's default one.

When a config fails, the error names the searched values that cause it (those where another
value of the same key passes) and keeps only the ways out that work for this study: a
``--set`` of a searched key is refused, so that fix is left out, and removing choices from a
copy of the study file is suggested only when the copy passes every check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from objectives import Objective, get_objective
from objectives.errors import ConfigError
from objectives.runtime import Runtime
from search.study.spec import StudySpec

MAX_COMBINATIONS = 1024  # more: each value once, the other searched keys at their first value


@dataclass(frozen=True)
class Searched:
    """One searched key and the values a trial can get for it, as far as the checks go.

    For ``grid_points`` the key is ``point`` and the values are the points; a range's values
    are its two bounds, which a copy of the study file narrows rather than removes.
    """

    name: str
    values: tuple[Any, ...]
    removable: bool = True


def searched_values(spec: StudySpec) -> list[Searched]:
    """The study's searched keys with the values the checks try for each."""
    if spec.grid_points is not None:
        return [Searched("point", tuple(spec.grid_points))]
    if spec.grid is not None:
        return [Searched(name, tuple(values)) for name, values in spec.grid.items()]
    searched = []
    for param in spec.space:
        if param.choices:
            searched.append(Searched(param.name, tuple(param.choices)))
            continue
        bounds = (param.low, param.high)
        if param.type == "int":
            bounds = tuple(int(v) for v in bounds)
        searched.append(Searched(param.name, tuple(dict.fromkeys(bounds)), removable=False))
    return searched


def combinations(searched: Sequence[Searched]) -> list[dict[str, Any]]:
    """Every combination of the searched values, up to ``MAX_COMBINATIONS``.

    Beyond that, each value once with every other key at its first value: still only configs
    a trial can get, though not all of them.
    """
    names = [s.name for s in searched]
    if math.prod(len(s.values) for s in searched) <= MAX_COMBINATIONS:
        return [dict(zip(names, combo, strict=True))
                for combo in itertools.product(*(s.values for s in searched))]
    first = {s.name: s.values[0] for s in searched}
    return [first] + [{**first, s.name: value} for s in searched for value in s.values[1:]]


def config_values(spec: StudySpec, combination: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed settings with a combination merged in (a grid point's keys, not ``point``)."""
    values = dict(spec.fixed)
    for name, value in combination.items():
        if spec.grid_points is not None and name == "point":
            values.update(value)
        else:
            values[name] = value
    return values


class _Checker:
    """Runs the objective's preflight once per distinct config and remembers the outcome."""

    def __init__(self, spec: StudySpec, objective: Objective, runtime: Runtime):
        self.spec, self.objective, self.runtime = spec, objective, runtime
        self.source = str(spec.path or spec.name)
        self.outcomes: dict[Any, ConfigError | None] = {}

    def __call__(self, combination: Mapping[str, Any]) -> ConfigError | None:
        """The ConfigError this combination's config raises, or None when it passes."""
        try:
            config = self.objective.make_config(config_values(self.spec, combination),
                                                source=self.source)
        except ConfigError as exc:
            return exc
        if config not in self.outcomes:
            try:
                self.objective.preflight(config, self.runtime)
                self.outcomes[config] = None
            except ConfigError as exc:
                self.outcomes[config] = exc
        return self.outcomes[config]

    def first_failure(self, searched: Sequence[Searched]
                      ) -> tuple[dict[str, Any], ConfigError] | None:
        for combination in combinations(searched):
            error = self(combination)
            if error is not None:
                return combination, error
        return None


def preflight(spec: StudySpec, runtime: Runtime) -> None:
    """Let the objective refuse the study before any trial runs; see the module docstring."""
    objective = get_objective(spec.objective)
    if objective.preflight is None:
        return
    check = _Checker(spec, objective, runtime)
    searched = searched_values(spec)
    failure = check.first_failure(searched)
    if failure is None:
        return
    combination, error = failure
    # The searched values that matter: another value of the same key passes.
    causes = [s for s in searched if any(
        check({**combination, s.name: other}) is None
        for other in s.values if other != combination[s.name])]
    searched_keys = set(spec.searched_keys())
    ways = [fix.text for fix in error.fixes if not searched_keys & set(fix.keys)]
    if not causes and (not error.fixes or ways == [f.text for f in error.fixes]):
        raise error  # the fixed settings fail, and every fix the objective names applies
    where = spec.path or spec.name
    drawn = ", ".join(f"{s.name}={combination[s.name]!r}" for s in causes)
    for s in causes:
        if not s.removable:
            continue
        failing = [value for value in s.values
                   if check({**combination, s.name: value}) is not None]
        kept = tuple(value for value in s.values if value not in failing)
        reduced = [Searched(t.name, kept) if t is s else t for t in searched]
        if kept and check.first_failure(reduced) is None:
            key = "grid_points" if spec.grid_points is not None else s.name
            ways.append(f"remove {', '.join(map(repr, failing))} from {key!r} in a copy of "
                        f"{where} and pass the copy to --study")
    if not ways:
        ways = [f"edit a copy of {where} so that every config a trial can get passes, and "
                "pass the copy to --study"]
    problem = error.problem + (f" (a trial of this study can get {drawn})" if causes else "")
    raise ConfigError(f"{problem}; " + ", or ".join(ways)) from None
