"""Build an objective's frozen config dataclass from plain values, checking keys, types, ranges.

Every objective's config is a frozen dataclass with a default for each field. Study files,
``--set`` overrides, trial parameters and exported YAML all go through ``make_config``, so a
misspelt key, a value of the wrong type or out of range fails before any training starts, with
one line naming the source, the key, the rule and the value.

Ranges are declared, not coded: a config class lists them in a ``RANGES`` class attribute
(``{"epochs": at_least(1), "lr": above(0)}``), and may add rules that tie several keys together
in a ``check(self)`` method raising ``ConfigError``. Every float must also be finite.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from objectives.errors import ConfigError

C = TypeVar("C")


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric config key: an interval whose ends are open or closed.

    ``Range()`` admits any finite number; ``at_least(1)`` is ``>= 1``, ``above(0)`` is ``> 0``
    and ``Range(0, 1, high_open=True)`` is ``[0, 1)``. NaN is never inside.
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above_low = value > self.low if self.low_open else value >= self.low
        below_high = value < self.high if self.high_open else value <= self.high
        return above_low and below_high

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low == -math.inf:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return (f"in {'(' if self.low_open else '['}{self.low}, {self.high}"
                f"{')' if self.high_open else ']'}")


def at_least(low: float) -> Range:
    """``>= low``."""
    return Range(low=low)


def above(low: float) -> Range:
    """``> low``."""
    return Range(low=low, low_open=True)


ANY = Range()  # any finite number
SEED = Range(0, 2**32 - 1)  # what numpy.random.seed accepts
FRACTION = Range(0, 1, low_open=True)  # (0, 1]: a share of the data
MOMENTUM = Range(0, 1, high_open=True)  # [0, 1)


def config_fields(config_cls: type) -> dict[str, Any]:
    """Map each field name of a config dataclass to its (resolved) type."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def make_config(config_cls: type[C], values: Mapping[str, Any], *, source: str = "config") -> C:
    """Return ``config_cls(**values)`` after checking every key and coercing every value.

    Args:
        config_cls: A dataclass whose fields all have defaults.
        values: Plain values (from YAML, the CLI or a trial's parameters).
        source: What the values came from, for error messages (a file name, ``--set``).

    Raises:
        ConfigError: an unknown key, a value that does not fit the field's type, a value
            outside the field's range (or not finite), or keys that do not fit together.
    """
    fields = config_fields(config_cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown config key {unknown[0]!r} for {config_cls.__name__}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    coerced = {key: coerce_value(fields[key], value, key=key, source=source)
               for key, value in values.items()}
    config = config_cls(**coerced)
    check_config(config, source=source)
    return config


def check_config(config: Any, *, source: str = "config") -> None:
    """Check every field of a built config against its class's ``RANGES`` and ``check()``.

    Every float (also inside tuples) must be finite; a field listed in ``RANGES`` must lie in
    its range (``None`` passes: it means "not set"). Objectives call this at the start of
    ``fit`` too, so a config built directly (``Config(lr=0)``) is refused the same way.

    Raises:
        ConfigError: "<source>: 'key' must be <rule>, got <value>".
    """
    ranges: Mapping[str, Range] = getattr(type(config), "RANGES", {})
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{source}: {field.name!r} must be a finite number, "
                                  f"got {item!r}")
            rule = ranges.get(field.name)
            if rule is not None and item not in rule:
                raise ConfigError(f"{source}: {field.name!r} must be {rule}, got {item!r}")
    check = getattr(config, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def coerce_value(annotation: Any, value: Any, *, key: str, source: str) -> Any:
    """Coerce ``value`` to ``annotation`` (bool, int, float, str, tuples, optionals, literals)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce_value(arg, value, key=key, source=source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{source}: {key!r} must be one of {', '.join(map(repr, args))}, got {value!r}"
            )
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key!r} must be a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(coerce_value(item_type, v, key=key, source=source) for v in value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{source}: {key!r} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {key!r} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {key!r} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {key!r} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key!r} must be a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: {key!r} must be a string, got {value!r}")
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config as plain YAML/JSON-friendly values (tuples become lists)."""
    out = {}
    for key, value in dataclasses.asdict(config).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
