"""Where and on what an objective runs: the parts of a run that are not hyperparameters."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Runtime:
    """The machine-side settings of a run.

    Args:
        data_dir: Folder holding ``euro/`` and ``faces/``; see ``resolve_data_dir``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``resolve_device`` turns ``"auto"`` into one.
        cache_dir: Where decoded images and backbone features are cached between trials.
    """

    data_dir: Path
    device: str = "cpu"
    cache_dir: Path = Path(".cache")


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``--data-dir`` if given, else ``$HPSEARCH_DATA``, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("HPSEARCH_DATA")
    return Path(env).expanduser() if env else Path("data")


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is visible, else ``cpu``; check ``cuda`` exists."""
    from objectives.errors import ConfigError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device} was asked for but no CUDA GPU is visible; "
            "use --device cpu or --device auto"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device
