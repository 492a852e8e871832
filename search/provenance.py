"""What a result was made with: software versions, device, data fingerprint."""

from __future__ import annotations

import functools
import hashlib
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "optuna", "numpy", "scikit-learn", "xgboost", "ray", "timm")


@functools.lru_cache(maxsize=1)
def software_versions() -> dict[str, str]:
    """Python and the installed versions of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_description(device: str) -> str:
    """``cpu (N threads)`` or the CUDA device's name."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({torch.get_num_threads()} torch threads, {platform.processor() or sys.platform})"


@functools.lru_cache(maxsize=8)
def data_fingerprint(folder: Path) -> str:
    """A short SHA-256 over the names and contents of every file under ``folder``."""
    digest = hashlib.sha256()
    if not folder.is_dir():
        return "missing"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


def provenance(*, device: str, seed: Any, data_folder: Path) -> dict[str, Any]:
    """Everything needed to trace a trial's result back to what produced it."""
    return {
        "versions": software_versions(),
        "device": device_description(device),
        "host": socket.gethostname(),
        "seed": seed,
        "data_dir": str(data_folder.resolve()),
        "data_fingerprint": data_fingerprint(data_folder),
        "synthetic_data": (data_folder / "SYNTHETIC").exists(),
    }
