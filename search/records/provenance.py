"""What a result was made with: software versions, device, data fingerprint, command.

Each trial's ``provenance`` names the command and backend (``local`` or ``ray``) that ran it,
so a study resumed by other commands still says which made each trial. The study keeps the
list of its runs in the ``commands`` user attribute: one ``{command, backend, first_trial,
trials}`` entry per run that added at least one trial (``record_run``, called when a run
ends), shown in the study's dashboard note and the report index.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from search.driver.runner import RunOptions
    from search.study.spec import StudySpec

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


BACKENDS = ("local", "ray")
COMMANDS_ATTR = "commands"  # the study's user attribute listing the runs that made it


def provenance(*, device: str, seed: Any, data_folder: Path, command: str | None = None,
               backend: str | None = None) -> dict[str, Any]:
    """Everything needed to trace a trial's result back to what produced it (``command`` and
    ``backend`` are recorded when given: the run that trained it)."""
    made_by = {key: value for key, value in (("command", command), ("backend", backend))
               if value is not None}
    return {
        **made_by,
        "versions": software_versions(),
        "device": device_description(device),
        "host": socket.gethostname(),
        "seed": seed,
        "data_dir": str(data_folder.resolve()),
        "data_fingerprint": data_fingerprint(data_folder),
        "synthetic_data": (data_folder / "SYNTHETIC").exists(),
    }


def run_entry(study: optuna.Study, run_id: str, command: str, backend: str
              ) -> dict[str, Any] | None:
    """The ``commands`` entry of the run ``run_id``: its command and backend, its first trial's
    number and how many trials it added; None when it added none."""
    numbers = [t.number for t in study.get_trials(deepcopy=False)
               if t.user_attrs.get("run_id") == run_id]
    if not numbers:
        return None
    return {"command": command, "backend": backend, "first_trial": min(numbers),
            "trials": len(numbers)}


def study_commands(user_attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs that made a study, oldest first; a study from before the list was kept
    gives its one stored ``command`` (with unknown trials), one that has neither gives []."""
    recorded = user_attrs.get(COMMANDS_ATTR)
    if isinstance(recorded, list):
        return [dict(entry) for entry in recorded if isinstance(entry, dict)]
    command = user_attrs.get("command")
    if command:
        return [{"command": command, "backend": None, "first_trial": None, "trials": None}]
    return []


def record_run(study: optuna.Study, spec: StudySpec, options: RunOptions, run_id: str,
               backend: str) -> dict[str, Any] | None:
    """After a run: add it to the study's ``commands`` (when it added at least one trial) and
    rewrite the study's dashboard note to list them; returns the entry, or None (nothing is
    written for a run that added no trial)."""
    from objectives import get_objective
    from search.records.storage import storage_lock
    from search.study.notes import write_study_note

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    entry = run_entry(study, run_id, options.command, backend)
    if entry is None:
        return None
    # Several commands may end at once on one study: read, append and write under the lock.
    with storage_lock(options.storage_url):
        attrs = study._storage.get_study_user_attrs(study._study_id)
        runs = attrs.get(COMMANDS_ATTR)
        study.set_user_attr(COMMANDS_ATTR, [*(runs if isinstance(runs, list) else []), entry])
    folder = options.data_dir / get_objective(spec.objective).dataset
    write_study_note(study, spec, data_fingerprint(folder))
    return entry
