"""The ``python -m search.run`` commands a report names: to make a study, or to continue one.

A study keeps the settings it was made with (``search.driver.runner.create_or_load_study``
stores its study file as ``spec_file``, its fixed settings after ``--set`` as ``fixed``, and the
command as ``command``), and resuming it with other fixed settings is refused. So the command
that continues a stored study is rebuilt from those records: the study file, ``--study-name``
when the stored name is not the file's, one ``--set`` for each fixed setting that differs from
the file, the stored command's ``--sampler``/``--pruner``, ``--seeds``/``--aggregate`` where the
study stored them, and the report's own ``--storage`` (when not the default) and ``--artifact-
dir``, so that the command adds to the study the report read. """

from __future__ import annotations

import contextlib
import io
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from objectives import get_objective
from objectives.config import config_to_dict
from objectives.errors import ConfigError
from reports.data import StudyInfo
from search.records.storage import DEFAULT_STORAGE
from search.study.spec import SPACES_DIR, StudySpec, load_study_spec

RUN = ("python", "-m", "search.run")
RESUME_CHECKED = ("seeds", "aggregate")  # study attrs that are also search.run options


@dataclass(frozen=True)
class StudyRecipe:
    """How a stored study was made: its study file (with the stored settings) and the
    arguments that reproduce them."""

    spec: StudySpec  # the study file with the stored fixed settings, sampler and pruner
    study_arg: str  # --study: a name in spaces/ or the file's path
    args: tuple[str, ...]  # --study-name, --set, --sampler and --pruner arguments


def run_command(study: str, storage_url: str = DEFAULT_STORAGE,
                artifact_dir: Path | None = None) -> str:
    """The command that makes the study file ``study`` in the report's storage."""
    return shlex.join([*RUN, "--study", study, *_where(storage_url, artifact_dir)])


def continue_command(info: StudyInfo, storage_url: str = DEFAULT_STORAGE,
                     artifact_dir: Path | None = None, trials: int | None = None) -> str:
    """The command that adds trials to the stored study ``info`` with its own settings
    (``--trials N`` when ``trials`` is given); ``run_command`` of its name when the storage
    does not say which study file made it."""
    recipe = study_recipe(info)
    if recipe is None:
        return run_command(info.name, storage_url, artifact_dir)
    more = ["--trials", str(trials)] if trials is not None else []
    return shlex.join([*RUN, "--study", recipe.study_arg, *recipe.args, *more,
                       *_where(storage_url, artifact_dir)])


def study_recipe(info: StudyInfo) -> StudyRecipe | None:
    """The study file and arguments that made ``info``, or None when its study file is gone
    or cannot be loaded (a study not made by ``search.run``, a file since deleted)."""
    attrs = info.attrs
    source = str(attrs.get("spec_file") or info.name)
    try:
        spec = load_study_spec(source)
    except ConfigError:
        return None
    study_arg = spec.name if _in_spaces(spec) else source
    args: list[str] = []
    if info.name != spec.name:
        args += ["--study-name", info.name]
    stored = attrs.get("fixed")
    changed = _changed_settings(spec, stored) if isinstance(stored, dict) else {}
    for key, value in changed.items():
        args += ["--set", f"{key}={yaml_value(value)}"]
    sampler, pruner = _sampler_pruner(str(attrs.get("command") or ""))
    for flag, value in (("--sampler", sampler), ("--pruner", pruner)):
        if value:
            args += [flag, value]
    # Settings the runner refuses to change on resume besides the fixed ones (seeds per
    # trial and their aggregate), where the study stored them and they differ from the file.
    extra = {key: attrs[key] for key in RESUME_CHECKED
             if key in attrs and hasattr(spec, key) and attrs[key] != getattr(spec, key)}
    for key, value in extra.items():
        args += [f"--{key}", str(value)]
    try:
        spec = spec.with_overrides(fixed=changed, sampler=sampler, pruner=pruner, **extra)
    except ConfigError:
        return None  # the file changed so much that its stored settings no longer fit it
    return StudyRecipe(spec, study_arg, tuple(args))


def yaml_value(value: Any) -> str:
    """``value`` as ``--set`` reads it back (YAML): ``1.0e-05``, ``true``, ``[0, 30]``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    return text.removesuffix("...").strip()


def _where(storage_url: str, artifact_dir: Path | None) -> list[str]:
    where = [] if storage_url == DEFAULT_STORAGE else ["--storage", storage_url]
    return where + (["--artifact-dir", str(artifact_dir)] if artifact_dir is not None else [])


def _in_spaces(spec: StudySpec) -> bool:
    """Whether ``--study NAME`` finds this file (it lies in spaces/ under its name)."""
    return spec.path is not None and \
        spec.path.resolve() == (SPACES_DIR / f"{spec.name}.yaml").resolve()


def _changed_settings(spec: StudySpec, stored: dict[str, Any]) -> dict[str, Any]:
    """The stored fixed settings that differ from the study file's, compared as the runner
    compares them (``check_same_settings``: after defaults and coercion)."""
    objective = get_objective(spec.objective)
    try:
        before = config_to_dict(objective.make_config(stored, source="stored settings"))
        after = config_to_dict(objective.make_config(spec.fixed, source=spec.name))
    except ConfigError:
        before, after = dict(stored), dict(spec.fixed)
    searched = set(spec.searched_keys())
    return {key: stored.get(key, before.get(key))
            for key in sorted(set(stored) | set(spec.fixed))
            if key not in searched and before.get(key) != after.get(key)}


def _sampler_pruner(command: str) -> tuple[str | None, str | None]:
    """``--sampler`` and ``--pruner`` of a stored ``python -m search.run`` command."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None, None
    if tuple(words[:3]) != RUN:
        return None, None  # not a search.run command line (a test, a script)
    from search.run import build_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse prints its usage on errors
            args, _ = build_parser().parse_known_args(words[3:])
    except SystemExit:
        return None, None
    return args.sampler, args.pruner
