"""``python -m search.retrain``: train the final model from an exported config, over seeds.

For each seed (the config's own seed, then +1, +2, ...) it trains the objective without Optuna,
saves the weights, the final metrics with the per-epoch history and the artifacts, then writes
a summary with the mean and spread of every metric over the seeds. ``--train-on train+val``
also trains on the validation split; its ``val_*`` metrics are then not held-out scores.
``--set KEY=VALUE`` changes a setting of the exported config (a search's shortcuts, such as
``epochs`` or ``train_fraction``), checked as ``search.run`` checks its ``--set``.

The exported file is checked completely before anything trains. A seed that diverges is
recorded (its folder keeps what it made) and the others go on; the summary covers the seeds
that finished and lists the failed ones, and the command then exits 1. Each run gets a new
folder, ``NAME-TRAINON-STAMP`` (``-2``, ``-3``, ... when two runs start in the same second).

Examples::

    python -m search.retrain configs/mlp_demo-trial3.yaml
    python -m search.retrain configs/mlp_grid-trial2.yaml --seeds 3 --train-on train+val
    python -m search.retrain configs/mlp_demo-trial3.yaml --set epochs=50 --set train_fraction=1
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from objectives.config import config_fields, config_to_dict
from objectives.errors import ConfigError, DivergedError, HPSearchError
from objectives.reporter import RecordingReporter
from objectives.runtime import Runtime, resolve_data_dir, resolve_device
from search.export import Exported, load_exported
from search.records.provenance import data_fingerprint, provenance
from search.records.weights import save_weights
from search.run import parse_overrides

TRAIN_ON = ("train", "train+val")
CLASSES_FILE = "classes.json"  # label -> class name, beside each seed's weights


@dataclass(frozen=True)
class RetrainOptions:
    """How to retrain (everything but the exported config)."""

    data_dir: Path
    seeds: int = 1
    train_on: str = "train"
    out: Path = Path("runs")
    device: str = "auto"
    threads: int | None = None
    cache_dir: Path = Path(".cache")
    progress: bool = True
    lanes: bool = True  # train several seeds at once as lanes (objectives that have lanes)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # --set values over the config


class ProgressReporter(RecordingReporter):
    """A recording reporter that advances a progress bar once per step."""

    def __init__(self, bar: Any, metric: str):
        super().__init__()
        self.bar = bar
        self.metric = metric

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        super().report(step, metrics)
        if self.metric in metrics:
            self.bar.set_postfix({self.metric: f"{metrics[self.metric]:.4f}"})
        self.bar.update(1)


def seed_configs(exported: Exported, seeds: int, train_on: str,
                 overrides: Mapping[str, Any] | None = None) -> list[Any]:
    """The configs to train: one per seed, with ``--set`` overrides and ``train_on`` applied.

    Overrides go through the objective's ``make_config`` (unknown keys, types, ranges), as
    ``search.run --set`` does; the seeds count up from the (possibly overridden) ``seed``.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if train_on not in TRAIN_ON:
        raise ConfigError(f"--train-on must be train or train+val, got {train_on!r}")
    fields = config_fields(exported.objective.config_cls)
    values = config_to_dict(exported.config)
    source = str(exported.path)
    if overrides:
        if "train_on" in overrides:  # one way to say it, so the summary's note is right
            raise ConfigError("--set train_on is not allowed here; use --train-on train or "
                              "--train-on train+val")
        source = f"{exported.path} (--set)"
        values = config_to_dict(exported.objective.make_config({**values, **overrides},
                                                               source=source))
    if "seed" not in fields and seeds > 1:
        raise ConfigError(f"objective {exported.objective.name!r} has no 'seed' setting, so "
                          "--seeds must be 1")
    if "train_on" in fields:
        values["train_on"] = train_on  # the option decides, whatever the file says
    elif train_on != "train":
        raise ConfigError(f"objective {exported.objective.name!r} cannot train on "
                          f"{train_on} (its config has no 'train_on'); use --train-on train")
    base = values.get("seed", 0)
    configs = []
    for i in range(seeds):
        if "seed" in fields:
            values["seed"] = base + i
        configs.append(exported.objective.make_config(values, source=source))
    return configs


def changed_settings(exported: Exported, overrides: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{key: [exported value, new value]}`` for each setting ``--set`` really changes."""
    if not overrides:
        return {}
    before = config_to_dict(exported.config)
    after = config_to_dict(exported.objective.make_config(
        {**before, **overrides}, source=f"{exported.path} (--set)"))
    return {key: [before[key], after[key]] for key in after if after[key] != before[key]}


def class_names(dataset: str) -> dict[str, str] | None:
    """Each label's class name for a dataset (JSON keys: the labels as strings), or None."""
    if dataset == "euro":
        from objectives.euro_data import COUNTRY_NAMES

        return {str(label): name for label, name in enumerate(COUNTRY_NAMES)}
    if dataset == "faces":
        from objectives.faces_data import CLASSES  # folder names "0_real", "1_fake"

        return dict(name.split("_", 1) for name in CLASSES)
    return None


def retrain(exported: Exported, options: RetrainOptions) -> tuple[Path, dict[str, Any]]:
    """Train every seed, save what it made; return the run folder and the summary.

    Everything that can be checked is checked before the run folder is made: the seeds, the
    data folder and the objective's preflight (say, pretrained weights). A seed that diverges
    is listed in the summary's ``failed`` and the next seed runs. If anything else stops the
    run (an error, Ctrl-C), the seeds finished so far are summarised before it propagates.
    """
    import torch

    configs = seed_configs(exported, options.seeds, options.train_on, options.overrides)
    objective = exported.objective
    device = resolve_device(options.device)
    data_folder = options.data_dir / objective.dataset
    if not data_folder.is_dir():
        raise ConfigError(f"no {objective.dataset} data at {data_folder}; pass --data-dir (or "
                          "set $HPSEARCH_DATA) to the folder holding it")
    runtime = Runtime(data_dir=options.data_dir, device=device, cache_dir=options.cache_dir)
    if objective.preflight is not None:
        objective.preflight(configs[0], runtime)  # the seeds differ only in their seed
    torch.set_num_threads(options.threads or (1 if objective.name == "mlp" else
                                              torch.get_num_threads()))
    run_dir = new_run_dir(options.out, f"{exported.path.stem}-"
                                       f"{options.train_on.replace('+', '_')}-{_stamp()}")
    shutil.copyfile(exported.path, run_dir / "config.yaml")

    steps = getattr(configs[0], "epochs", None)
    bar = tqdm(total=steps * len(configs) if steps else None, unit="epoch",
               disable=not options.progress, dynamic_ncols=True)
    records: list[dict[str, Any]] = []
    try:
        if options.lanes and objective.lanes is not None and len(configs) > 1:  # as lanes
            bar.set_description(f"{len(configs)} seeds as lanes")
            records += _train_lanes(objective, configs, runtime, run_dir,
                                    lambda: ProgressReporter(bar, exported.metric_name))
        for config in configs[len(records):]:
            seed = getattr(config, "seed", None)
            bar.set_description(f"seed {seed}")
            records.append(_train_one(objective, config, runtime, run_dir / f"seed{seed}",
                                       ProgressReporter(bar, exported.metric_name)))
    except BaseException as exc:
        if records:  # nothing lost: summarise the seeds that finished, then stop as asked
            summary = _summary(exported, options, records, data_folder, device)
            summary["stopped"] = f"{type(exc).__name__}: {exc}".rstrip(": ")
            _write_summary(run_dir, summary)
            print(f"NOTE: the run stopped; its {len(records)} finished seed(s) are summarised in "
                  f"{run_dir / 'summary.json'}", file=sys.stderr)
        raise
    finally:
        bar.close()
    summary = _summary(exported, options, records, data_folder, device)
    _write_summary(run_dir, summary)
    return run_dir, summary


def new_run_dir(out: Path, name: str) -> Path:
    """Make and return ``out/name``, or ``name-2``, ``name-3``, ... if taken: never shared."""
    out.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        path = out / (name if number == 1 else f"{name}-{number}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def failure_line(summary: Mapping[str, Any]) -> str | None:
    """One line on the seeds that failed (None if none did), for the CLI's ``error:``."""
    failed = summary.get("failed") or []
    if not failed:
        return None
    what = "; ".join(f"seed {f['seed']} {f['error']}" for f in failed)
    if not summary["runs"]:
        return f"every seed failed: {what}; what they made is in {summary['run_dir']}"
    return (f"{what}; the summary covers the {len(summary['runs'])} other seed(s) "
            f"{summary['seeds']}")


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    summary["run_dir"] = str(run_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def fitted_parts(result: Any) -> tuple[Any, Mapping[str, float]]:
    """``fit``'s result as (model, metrics): a pair, or an object with ``model`` and ``metrics``
    attributes (such as objectives.resnet.Fitted)."""
    if hasattr(result, "model") and hasattr(result, "metrics"):
        return result.model, result.metrics
    model, metrics = result
    return model, metrics


def _train_one(objective: Any, config: Any, runtime: Runtime, folder: Path,
               reporter: ProgressReporter) -> dict[str, Any]:
    """Train one seed into ``folder``; a divergence is recorded in the returned ``error``."""
    folder.mkdir(parents=True)
    start = time.perf_counter()
    model, metrics, error = None, {}, None
    try:
        if objective.fit is not None:
            model, metrics = fitted_parts(objective.fit(config, reporter, runtime))
        else:
            metrics = objective.run(config, reporter, runtime)
    except DivergedError as exc:
        error = f"diverged: {exc}"
    return _save_seed(objective, config, folder, reporter, model, metrics, error,
                      time.perf_counter() - start)


def _train_lanes(objective: Any, configs: list[Any], runtime: Runtime, run_dir: Path,
                 make_reporter: Any) -> list[dict[str, Any]]:
    """Train every seed at once as lanes of one batched model (each as it would alone)."""
    lanes = objective.lanes
    ends: dict[int, Any] = {}
    tasks = [lanes.LaneTask(config, make_reporter(), tag=i) for i, config in enumerate(configs)]
    start = time.perf_counter()
    lanes.train_lanes(tasks, runtime, lambda end: ends.__setitem__(end.task.tag, end))
    seconds = time.perf_counter() - start
    records = []
    for i, config in enumerate(configs):
        end = ends[i]
        if end.error is not None and not isinstance(end.error, DivergedError):
            raise end.error
        folder = run_dir / f"seed{getattr(config, 'seed', i)}"
        folder.mkdir(parents=True)
        records.append(_save_seed(objective, config, folder, end.task.reporter, end.model,
                                  end.metrics or {}, end.error and f"diverged: {end.error}",
                                  seconds))
    return records


def _save_seed(objective: Any, config: Any, folder: Path, reporter: ProgressReporter,
               model: Any, metrics: Mapping[str, float], error: str | None,
               seconds: float) -> dict[str, Any]:
    """Write a seed's artifacts, weights and metrics into ``folder``; return its record."""
    for name, data in reporter.artifacts.items():
        (folder / name).write_bytes(data)
    weights, weights_error = None, None
    if error:
        weights_error = "training diverged; weights were not saved"
    elif model is None:
        weights_error = f"objective {objective.name!r} has no fit(); weights were not saved"
    else:
        try:
            weights = str(save_weights(model, folder, metadata={
                "objective": objective.name, "config": json.dumps(config_to_dict(config))}))
        except TypeError as exc:
            weights_error = str(exc)
    if weights_error and not error:
        print(f"WARNING: {weights_error}", file=sys.stderr)
    classes = class_names(objective.dataset) if weights else None
    if classes is not None:  # what each output (label) of the saved model means
        (folder / CLASSES_FILE).write_text(json.dumps(classes, indent=2) + "\n")
    record = {
        "seed": getattr(config, "seed", None),
        "config": config_to_dict(config),
        "error": error,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "history": reporter.history,
        "logs": reporter.logs,
        "seconds": round(seconds, 3),
        "weights": weights,
        "weights_error": weights_error,
        "classes": str(folder / CLASSES_FILE) if classes is not None else None,
    }
    (folder / "metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def _summary(exported: Exported, options: RetrainOptions, records: list[dict[str, Any]],
             data_folder: Path, device: str) -> dict[str, Any]:
    """Mean and spread of each metric over the seeds that finished; the failed ones listed."""
    per_seed = [r for r in records if not r["error"]]
    names = list(per_seed[0]["metrics"]) if per_seed else []
    spread = {}
    for name in names:
        values = [r["metrics"][name] for r in per_seed]
        spread[name] = {"mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else None,
                        "min": min(values), "max": max(values), "values": values}
    recorded_fp = (exported.raw.get("provenance") or {}).get("data_fingerprint")
    current_fp = data_fingerprint(data_folder)
    metric, recorded = exported.metric_name, exported.metric_value
    same_seed = [r for r in per_seed if r["seed"] == getattr(exported.config, "seed", None)]
    reproduction = None
    changed = changed_settings(exported, options.overrides)
    if (options.train_on == "train" and not changed and same_seed and recorded is not None
            and metric in names):
        value = same_seed[0]["metrics"][metric]
        reproduction = {"metric": metric, "seed": same_seed[0]["seed"], "recorded": recorded,
                        "retrained": value, "difference": value - recorded}
    return {
        "config_file": str(exported.path),
        "objective": exported.objective.name,
        "study": exported.raw.get("study"),
        "trial": exported.raw.get("trial"),
        "train_on": options.train_on,
        "note": ("trained on train+validation: val_* metrics are NOT held-out scores; only "
                 "test_* metrics are" if options.train_on != "train" else
                 "trained on the training split; val_* and test_* are held out"),
        "changed": changed,
        "seeds": [r["seed"] for r in per_seed],
        "failed": [{"seed": r["seed"], "error": r["error"]} for r in records if r["error"]],
        "metrics": spread,
        "std": "sample standard deviation over seeds (n-1); null for one seed",
        "reproduction": reproduction,
        "data_fingerprint": {"recorded": recorded_fp, "now": current_fp,
                             "same": recorded_fp in (None, current_fp)},
        "provenance": provenance(device=device, seed=[r["seed"] for r in per_seed],
                                 data_folder=data_folder),
        "runs": [{"seed": r["seed"], "weights": r["weights"], "classes": r.get("classes"),
                  "seconds": r["seconds"]} for r in per_seed],
    }


def format_summary(run_dir: Path, summary: Mapping[str, Any]) -> str:
    """The printed table: each metric's mean and spread over the seeds."""
    n = len(summary["seeds"])
    lines = [f"{summary['objective']} from {summary['config_file']}: {n} seed(s) "
             f"{summary['seeds']}, trained on {summary['train_on']}",
             f"{'metric':16s} {'mean':>8s} {'std':>8s} {'min':>8s} {'max':>8s}"]
    for name, s in summary["metrics"].items():
        std = "n/a" if s["std"] is None else f"{s['std']:.4f}"  # no spread from one seed
        lines.append(f"{name:16s} {s['mean']:8.4f} {std:>8s} {s['min']:8.4f} "
                     f"{s['max']:8.4f}")
    changed = summary.get("changed") or {}
    if changed:
        lines.append("changed with --set: " + ", ".join(
            f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
            + " (so no reproduction check)")
    if summary["train_on"] != "train":
        lines.append("NOTE: " + summary["note"])
    rep = summary["reproduction"]
    if rep:
        lines.append(f"reproduction (seed {rep['seed']}): {rep['metric']} recorded "
                     f"{rep['recorded']:.4f}, retrained {rep['retrained']:.4f}, difference "
                     f"{rep['difference']:+.6f}")
    if not summary["data_fingerprint"]["same"]:
        fp = summary["data_fingerprint"]
        lines.append(f"WARNING: the data changed since the trial (fingerprint {fp['recorded']} "
                     f"then, {fp['now']} now)")
    weights = [r["weights"] for r in summary["runs"] if r["weights"]]
    lines.append(f"weights, metrics and artifacts in {run_dir}/seed*/ "
                 f"({len(weights)} weight file(s)); summary in {run_dir / 'summary.json'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search.retrain",
        description="Train the final model from a config written by python -m search.export.")
    parser.add_argument("config", type=Path, help="an exported YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="change a setting of the exported config "
                        "(repeatable; values are YAML: --set epochs=50 --set train_fraction=1)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="number of seeds: the config's seed, +1, +2, ... (default 1)")
    parser.add_argument("--train-on", choices=TRAIN_ON, default="train",
                        help="train (default) or train+val (val metrics are then not held out)")
    parser.add_argument("--out", type=Path, default=Path("runs"),
                        help="folder for the run (default runs/)")
    parser.add_argument("--data-dir", help="folder holding euro/ and faces/ "
                        "(default: $HPSEARCH_DATA, else ./data)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--threads", type=int, help="torch threads (default: 1 for MLPs)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"),
                        help="decoded-image and feature cache (default .cache)")
    parser.add_argument("--lanes", action=argparse.BooleanOptionalAction, default=True,
                        help="train the seeds at once as lanes of one batched model (MLP; "
                        "default on; --no-lanes trains them one after another)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        exported = load_exported(args.config)
        options = RetrainOptions(data_dir=resolve_data_dir(args.data_dir), seeds=args.seeds,
                                 train_on=args.train_on, out=args.out, device=args.device,
                                 threads=args.threads, cache_dir=args.cache_dir,
                                 progress=not args.no_progress, lanes=args.lanes,
                                 overrides=parse_overrides(args.overrides))
        run_dir, summary = retrain(exported, options)
    except HPSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if summary["runs"]:
        print(format_summary(run_dir, summary))
    failed = failure_line(summary)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0 if all(math.isfinite(s["mean"]) for s in summary["metrics"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
