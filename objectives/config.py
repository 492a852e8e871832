"""Build an objective's frozen config dataclass from plain values, checking keys and types.

Every objective's config is a frozen dataclass with a default for each field. Study files,
``--set`` overrides and exported YAML all go through ``make_config``, so a misspelt key or a
value of the wrong type fails before any training starts, with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from objectives.errors import ConfigError

C = TypeVar("C")


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
        ConfigError: an unknown key, or a value that does not fit the field's type.
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
    return config_cls(**coerced)


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
