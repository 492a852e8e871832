"""``python -m search.export``: write the best trials of a study as configs to train again.

Each chosen trial becomes one YAML file holding the objective, the full config (the study's
fixed settings and the trial's searched values merged, every field of the objective's config
spelled out), the validation metric it reached, its final metrics and its provenance (study,
trial, storage, software versions, data fingerprint). ``python -m search.retrain FILE`` trains
it again; ``load_exported`` reads and checks such a file.

``--format csv`` or ``--format parquet`` writes instead one table of every trial (one row per
trial: number, state, value, duration, parameters, config, final metrics, per-seed summary),
built on Optuna's ``trials_dataframe``, for pandas or a spreadsheet.

Examples::

    python -m search.export --study mlp_demo
    python -m search.export --study mlp_width_depth --top 3 --out configs/
    python -m search.export --study mlp_width_depth --format csv --out trials.csv
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from objectives import Objective, get_objective
from objectives.config import config_to_dict
from objectives.errors import ConfigError, HPSearchError
from search.driver.trial import GRID_POINT_PARAM
from search.records.provenance import software_versions
from search.records.storage import DEFAULT_STORAGE, load_existing_study, require_existing_storage
from search.study.spec import read_yaml_mapping

REQUIRED_KEYS = ("objective", "config", "metric")
FORMATS = ("yaml", "csv", "parquet")
TABLE_FORMATS = FORMATS[1:]
# Trial user attributes the table spreads into columns or leaves out (too big for a cell).
EXPANDED_ATTRS = ("config", "metrics", "seeds", "seed_metrics", "compute")
SKIPPED_ATTRS = ("history", "seed_histories", "artifacts", "provenance", "traceback")
HEADER = "# Exported by python -m search.export; train it again with python -m search.retrain {}\n"


@dataclass(frozen=True)
class Exported:
    """A checked exported config: the objective, its config object and the file's contents."""

    path: Path
    objective: Objective
    config: Any
    raw: Mapping[str, Any]

    @property
    def metric_name(self) -> str:
        return self.raw["metric"]["name"]

    @property
    def metric_value(self) -> float | None:
        return self.raw["metric"].get("value")


def best_trials(study: Any, top: int) -> list[Any]:
    """The ``top`` best COMPLETE trials of ``study``, best first; a ConfigError if none."""
    import optuna

    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        counts: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
        seen = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
        raise ConfigError(f"study {study.study_name!r} has no complete trial ({seen}); run more "
                          "trials with python -m search.run before exporting")
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: (-t.value if maximize else t.value, t.number))
    return ranked[:top]


def trial_document(study: Any, trial: Any, storage_url: str) -> dict[str, Any]:
    """The exported YAML document for one trial."""
    objective_name = trial.user_attrs.get("objective") or study.user_attrs.get("objective")
    if objective_name is None:
        raise ConfigError(f"study {study.study_name!r} trial {trial.number} names no objective; "
                          "only studies run with python -m search.run can be exported")
    objective = get_objective(objective_name)
    values = trial.user_attrs.get("config")
    if values is None:  # not recorded: rebuild from the study's fixed settings and the params
        values = {**study.user_attrs.get("fixed", {}),
                  **{k: v for k, v in trial.params.items() if k != GRID_POINT_PARAM}}
    config = objective.make_config(values, source=f"study {study.study_name} trial "
                                                  f"{trial.number}")
    recorded = trial.user_attrs.get("provenance", {})
    seeds = seed_summary(trial.user_attrs, study.user_attrs.get("metric", "value"),
                         study.user_attrs.get("aggregate", "mean"))
    return {
        "objective": objective.name,
        "study": study.study_name,
        "trial": trial.number,
        "metric": {"name": study.user_attrs.get("metric", "value"), "value": float(trial.value),
                   "direction": study.direction.name.lower()},
        "config": config_to_dict(config),
        "params": dict(trial.params),
        "metrics": trial.user_attrs.get("metrics", {}),
        **({"seeds": seeds} if seeds else {}),
        "provenance": {
            "storage": storage_url,
            "study_description": study.user_attrs.get("description", ""),
            "spec_file": study.user_attrs.get("spec_file"),
            # The trial's own command when it recorded one: the study's is the latest run's.
            "command": recorded.get("command") or study.user_attrs.get("command"),
            "backend": recorded.get("backend"),
            "data_fingerprint": recorded.get("data_fingerprint"),
            "synthetic_data": recorded.get("synthetic_data"),
            "trained_on": recorded.get("device"),
            "host": recorded.get("host"),
            "versions": recorded.get("versions", {}),
            "run_id": trial.user_attrs.get("run_id"),
            "trial_finished": trial.datetime_complete.isoformat(timespec="seconds")
            if trial.datetime_complete else None,
            "exported": dt.datetime.now().isoformat(timespec="seconds"),
            "exported_with": software_versions(),
        },
    }


def seed_summary(attrs: Mapping[str, Any], metric: str, aggregate: str
                 ) -> dict[str, Any] | None:
    """A trial over seeds: its seeds, the aggregate its value is, and the metric's mean,
    standard deviation, bound and per-seed values (None for a one-seed trial)."""
    per_seed = attrs.get("seed_metrics")
    if not isinstance(per_seed, list) or not attrs.get("seeds"):
        return None
    metrics = attrs.get("metrics", {})
    return {"seeds": list(attrs["seeds"]), "aggregate": aggregate,
            "mean": metrics.get(metric), "sd": metrics.get(f"{metric}_sd"),
            "lcb": metrics.get(f"{metric}_lcb"),
            "per_seed": {int(m["seed"]): m.get(metric) for m in per_seed
                         if isinstance(m, dict) and "seed" in m}}


def export_study(study_name: str, storage_url: str = DEFAULT_STORAGE, top: int = 1,
                 out: Path = Path("configs")) -> list[Path]:
    """Write the ``top`` best complete trials of a study as YAML files; return their paths."""
    require_existing_storage(storage_url)
    study = load_existing_study(study_name, storage_url)
    chosen = best_trials(study, top)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for trial in chosen:
        document = trial_document(study, trial, storage_url)
        path = out / f"{_safe(study_name)}-trial{trial.number}.yaml"
        path.write_text(HEADER.format(path) + yaml.safe_dump(document, sort_keys=False))
        paths.append(path)
    return paths


def trials_table(study: Any) -> Any:
    """Every trial of ``study`` as a pandas DataFrame, one row per trial, by number.

    Columns: ``number``, ``state``, ``value``, ``duration`` (seconds), ``datetime_start``,
    ``datetime_complete``, ``params_<name>`` (what the sampler chose), ``config_<key>`` (every
    setting the trial trained with: the study's fixed values, the searched values, defaults),
    ``metrics_<name>`` (final metrics), the trial's other plain user attributes as
    ``user_attrs_<name>`` (``error``, ``pruned_reason``, ...) and, for trials over seeds,
    ``seeds``, ``n_seeds`` and the study metric's per-seed ``<metric>_seed_mean`` and
    ``<metric>_seed_sd`` (sample sd; empty for one seed), and the compute ledger's
    ``compute_train_seconds`` and ``compute_flops`` where recorded (a lane's ``duration`` is its
    pack's wall time; its ``compute_train_seconds`` is its share). Lists are JSON strings.
    """
    import pandas as pd

    attrs = ("number", "value", "datetime_start", "datetime_complete", "duration", "params",
             "user_attrs", "state")
    frame = study.trials_dataframe(attrs=attrs)
    if frame.empty:
        raise ConfigError(f"study {study.study_name!r} has no trials; run some with python -m "
                          "search.run before exporting a table")
    # Optuna names the value column after the study's metric (value_val_accuracy).
    values = [c for c in frame.columns if c == "value" or c.startswith("value_")]
    if len(values) == 1:
        frame = frame.rename(columns={values[0]: "value"})
    frame["duration"] = frame["duration"].dt.total_seconds()
    plain = [c for c in frame.columns if c.startswith("user_attrs_")
             and c.removeprefix("user_attrs_") not in EXPANDED_ATTRS + SKIPPED_ATTRS
             and frame[c].map(_is_scalar).all()]
    frame = frame[[c for c in frame.columns if not c.startswith("user_attrs_") or c in plain]]

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    fixed = study.user_attrs.get("fixed", {})
    metric = study.user_attrs.get("metric", "value")
    extra = []
    for number in frame["number"]:
        trial = trials[number]
        config = trial.user_attrs.get("config")
        if not isinstance(config, dict):  # not recorded: the study's fixed values and params
            config = {**fixed, **{k: v for k, v in trial.params.items()
                                  if k != GRID_POINT_PARAM}}
        metrics = trial.user_attrs.get("metrics")
        row = {**{f"config_{k}": v for k, v in config.items()},
               **{f"metrics_{k}": v for k, v in (metrics if isinstance(metrics, dict)
                                                  else {}).items()},
               **_seed_columns(trial.user_attrs, metric),
               **{f"compute_{k}": v for k, v in _mapping(trial.user_attrs.get("compute")).items()
                  if k in ("train_seconds", "flops")}}
        extra.append(row)
    extra_frame = pd.DataFrame(extra, index=frame.index)
    frame = pd.concat([frame, extra_frame], axis=1)

    first = ["number", "state", "value", "duration", "datetime_start", "datetime_complete"]
    groups = [c for c in first if c in frame.columns]
    for prefix in ("params_", "config_", "metrics_", "compute_"):
        groups += [c for c in frame.columns if c.startswith(prefix)]
    groups += [c for c in ("seeds", "n_seeds", f"{metric}_seed_mean", f"{metric}_seed_sd")
               if c in frame.columns]
    groups += [c for c in frame.columns if c not in groups]
    frame = frame[groups].sort_values("number").reset_index(drop=True)
    for column in frame.columns:  # lists and mappings (monitor_layers, seeds) as JSON text
        if frame[column].dtype == object:
            frame[column] = frame[column].map(
                lambda v: json.dumps(v) if isinstance(v, (list, tuple, dict)) else v)
    return frame


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seed_columns(attrs: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """``seeds``, ``n_seeds`` and the metric's mean and sd over ``seed_metrics``, when a trial
    has them; anything missing or malformed is left out (the cell stays empty)."""
    columns: dict[str, Any] = {}
    seeds = attrs.get("seeds")
    if isinstance(seeds, list):
        columns["seeds"] = seeds
    per_seed = attrs.get("seed_metrics")
    if isinstance(per_seed, list):
        values = [float(m[metric]) for m in per_seed if isinstance(m, dict)
                  and isinstance(m.get(metric), (int, float)) and not isinstance(m[metric], bool)
                  and math.isfinite(m[metric])]
        columns["n_seeds"] = len(values)
        if values:
            columns[f"{metric}_seed_mean"] = statistics.fmean(values)
            columns[f"{metric}_seed_sd"] = (statistics.stdev(values) if len(values) > 1
                                            else math.nan)
    return columns


def export_table(study_name: str, storage_url: str = DEFAULT_STORAGE, fmt: str = "csv",
                 out: Path | None = None) -> tuple[Path, Any]:
    """Write every trial of a study as a CSV or Parquet table; return its path and the table.

    ``out`` is the file (default ``configs/<study>-trials.<fmt>``); an existing folder gets
    that file name inside it.
    """
    if fmt not in TABLE_FORMATS:
        raise ConfigError(f"a trials table is csv or parquet, got {fmt!r}")
    require_existing_storage(storage_url)
    study = load_existing_study(study_name, storage_url)
    frame = trials_table(study)
    name = f"{_safe(study_name)}-trials.{fmt}"
    path = Path("configs") / name if out is None else out / name if out.is_dir() else out
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        try:
            import pyarrow  # noqa: F401  (pandas' parquet engine)
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow; run pip install pyarrow, or "
                              "use --format csv") from None
        _parquet_ready(frame).to_parquet(path, index=False)
    return path, frame


def _parquet_ready(frame: Any) -> Any:
    """A copy whose object columns hold one type each: Parquet columns are typed, so a
    categorical parameter with mixed choices (8, "auto") is written as text."""
    import pandas as pd

    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column] if not pd.isna(v)}
            if len(kinds) > 1 and not kinds <= {int, float}:
                frame[column] = frame[column].map(lambda v: None if pd.isna(v) else str(v))
    return frame


def load_exported(path: Path) -> Exported:
    """Read and check an exported config; a ConfigError names the file and what is wrong.

    Everything retraining reads is checked here, before any training: the keys and their
    shapes (an optional key may be absent, but if present it must have its type: null is
    refused), the metric (a name the objective reports, a finite value), the provenance (a
    mapping) and the config itself (keys, types and ranges, through ``make_config``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; export one with python -m "
                          "search.export --study NAME")
    try:
        raw = read_yaml_mapping(path, "an exported config must be a mapping with keys "
                                      f"{', '.join(REQUIRED_KEYS)}")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as a YAML file ({exc})") from None
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise ConfigError(f"{path}: missing key {key!r}; an exported config needs "
                              f"{', '.join(REQUIRED_KEYS)} (export it again with search.export)")
    if not isinstance(raw["objective"], str):
        raise ConfigError(f"{path}: 'objective' must be a name such as mlp, got "
                          f"{raw['objective']!r}")
    try:
        objective = get_objective(raw["objective"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(raw["config"], dict):
        raise ConfigError(f"{path}: 'config' must be a mapping of config keys to values, got "
                          f"{raw['config']!r}")
    _check_metric(raw["metric"], objective, path)
    _check_optional(raw, "provenance", dict, "a mapping (as search.export writes it)", path)
    if isinstance(raw.get("provenance"), dict):
        _check_optional(raw["provenance"], "data_fingerprint", str, "a string or null", path,
                        prefix="provenance.", nullable=True)
    _check_optional(raw, "study", str, "a study name", path)
    _check_optional(raw, "trial", int, "a trial number", path)
    config = objective.make_config(raw["config"], source=f"{path}: config")
    return Exported(path=path, objective=objective, config=config, raw=raw)


def _check_metric(metric: Any, objective: Objective, path: Path) -> None:
    """``metric``: a mapping with a ``name`` the objective reports and a finite ``value``."""
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise ConfigError(f"{path}: 'metric' must be a mapping with 'name' (and 'value'), got "
                          f"{metric!r}")
    if metric["name"] not in objective.metrics:
        raise ConfigError(f"{path}: 'metric.name' must be a metric of objective "
                          f"{objective.name!r} ({', '.join(objective.metrics)}), got "
                          f"{metric['name']!r}")
    value = metric.get("value", 0.0)  # absent: nothing to compare the retrained value with
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path}: 'metric.value' must be a finite number (the trial's "
                          f"{metric['name']}) or absent, got {value!r}")
    if metric.get("direction", "maximize") not in ("maximize", "minimize"):
        raise ConfigError(f"{path}: 'metric.direction' must be maximize or minimize, got "
                          f"{metric['direction']!r}")


def _check_optional(raw: Mapping[str, Any], key: str, kind: type, what: str, path: Path, *,
                    prefix: str = "", nullable: bool = False) -> None:
    """``raw[key]``, when present, must be a ``kind`` (bools are not ints), or null if allowed."""
    if key not in raw or (nullable and raw[key] is None):
        return
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{path}: '{prefix}{key}' must be {what} (or absent), got {value!r}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search.export",
        description="Export a study's best trials as YAML configs for python -m search.retrain.")
    parser.add_argument("--study", required=True, help="study name in the storage")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage URL or journal file (default {DEFAULT_STORAGE})")
    parser.add_argument("--format", choices=FORMATS, default="yaml",
                        help="yaml: the best trials as configs to retrain (default); csv or "
                        "parquet: one table of every trial")
    parser.add_argument("--top", type=int,
                        help="export the K best trials (default 1; --format yaml only)")
    parser.add_argument("--out", type=Path,
                        help="folder for the YAML files (default configs/); with csv or "
                        "parquet the table's file (default configs/STUDY-trials.csv)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.format in TABLE_FORMATS:
            if args.top is not None:
                raise ConfigError(f"--top picks the best configs of --format yaml; a {args.format} "
                                  "table has every trial (sort or filter it), so drop --top")
            path, frame = export_table(args.study, args.storage, args.format, args.out)
            states = frame["state"].str.lower().value_counts()
            print(f"{len(frame)} trial(s) ({', '.join(f'{n} {s}' for s, n in states.items())}),"
                  f" {len(frame.columns)} columns -> {path}")
            return 0
        paths = export_study(args.study, args.storage, 1 if args.top is None else args.top,
                             args.out or Path("configs"))
    except HPSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        document = yaml.safe_load(path.read_text())
        metric = document["metric"]
        print(f"trial {document['trial']}: {metric['name']}={metric['value']:.4f} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
