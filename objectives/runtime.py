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
        previews: Which runs draw PNG previews (see ``draws_previews``): ``"all"``,
            ``"finished"`` (not those the reporter stopped early) or ``"none"``. The raw
            arrays the report figures use are saved either way.
    """

    data_dir: Path
    device: str = "cpu"
    cache_dir: Path = Path(".cache")
    previews: str = "all"

    def draws_previews(self, stopped: bool) -> bool:
        """Whether a run that ended this way draws its PNG previews.

        A preview costs about 0.3 s of CPU per trial (README, "What a trial records"): nothing
        next to a 50-epoch trial, a fifth of a one-second one. Pruned trials are most of a
        search and rarely looked at, so ``finished`` skips them.
        """
        return self.previews == "all" or (self.previews == "finished" and not stopped)


PREVIEWS = ("all", "finished", "none")  # the values of Runtime.previews


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
