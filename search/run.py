"""``python -m search.run``: run (or resume) a study from ``spaces/``.

Examples::

    python -m search.run --list
    python -m search.run --study mlp_width_depth --trials 200 --jobs 2
    python -m search.run --study mlp_lr --set epochs=10 --storage sqlite:///lr.db
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from objectives.errors import ConfigError, HPSearchError
from objectives.runtime import PREVIEWS, Runtime, resolve_data_dir, resolve_device
from search.records.storage import DEFAULT_STORAGE, artifact_dir_for, open_storage
from search.study.preflight import preflight
from search.study.spec import StudySpec, list_studies, load_study_spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search.run",
        description="Run or resume a hyperparameter study (a file in spaces/) on Optuna.")
    parser.add_argument("--study", help="study name in spaces/ (see --list) or a YAML file")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials this run adds (default: the study file's 'trials')")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes sharing the storage (default 1)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage URL or journal file (default {DEFAULT_STORAGE})")
    parser.add_argument("--study-name", help="name in the storage (default: the study's name)")
    parser.add_argument("--artifact-dir", type=Path,
                        help="artifact folder (default: beside the storage file)")
    parser.add_argument("--timeout", type=float, help="stop starting trials after SECONDS")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--seed", type=int, help="sampler seed (worker i uses SEED+i)")
    parser.add_argument("--data-dir", help="folder holding euro/ and faces/ "
                        "(default: $HPSEARCH_DATA, else ./data)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"),
                        help="cache of decoded images and backbone features (default .cache)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a fixed setting (repeatable)")
    parser.add_argument("--sampler", help="override the sampler (tpe, random, cmaes, qmc, grid)")
    parser.add_argument("--pruner", help="override the pruner (none, median, percentile, "
                        "successive_halving, hyperband)")
    parser.add_argument("--lanes", type=int,
                        help="models each worker trains at once as one batched model (MLP "
                        "studies; a trial over N seeds takes N; default 8 trials' worth on a "
                        "CPU, 32 on a GPU; 1 turns lanes off)")
    parser.add_argument("--seeds", type=int, help="train each trial over N seeds (seed, "
                        "seed+1, ...) and take their mean (default: the study file's seeds)")
    parser.add_argument("--aggregate", choices=["mean", "lcb"],
                        help="a trial's value over its seeds: mean, or lcb (a 95%% t-based "
                        "lower bound on the mean) (default: the study file's, else mean)")
    parser.add_argument("--previews", choices=PREVIEWS,
                        help="which trials draw PNG previews (about 0.3 s of CPU each): all, "
                        "finished (not pruned; the default) or none; the raw arrays are kept "
                        "either way (default: the study file's previews)")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: 1 for "
                        "MLPs or several jobs, else the cores)")
    parser.add_argument("--backend", choices=["local", "ray"], default="local",
                        help="where trials run: local processes (default) or Ray Tune")
    ray_group = parser.add_argument_group("Ray backend (--backend ray)")
    ray_group.add_argument("--ray-address", help="join this Ray cluster (default: start a "
                           "local Ray for the run)")
    ray_group.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray (default all)")
    ray_group.add_argument("--cpus-per-trial", type=float, default=1.0,
                           help="CPUs each trial reserves (default 1)")
    ray_group.add_argument("--gpus-per-trial", type=float, default=0.0,
                           help="GPUs each trial reserves; fractions share a GPU (default 0)")
    ray_group.add_argument("--max-concurrent", type=int,
                           help="most trials at once (default: what the resources hold)")
    ray_group.add_argument("--scheduler", choices=["asha", "none"],
                           help="early stopping: ASHA (default) or none (the study's pruner)")
    ray_group.add_argument("--asha-grace-period", type=int,
                           help="ASHA: steps before a trial can be stopped")
    ray_group.add_argument("--asha-reduction-factor", type=float,
                           help="ASHA: keep the best 1/FACTOR at each rung")
    ray_group.add_argument("--asha-max-t", type=int,
                           help="ASHA: the largest step budget (default: the study's epochs)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=3", "batch_norm=true"]`` -> ``{"epochs": 3, "batch_norm": True}``."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}; for example --set epochs=5")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key.strip()] = value
    return overrides


def print_study_list(width: int | None = None) -> None:
    """One line per study: name, objective and its description, shortened at a word to fit
    ``width`` columns (default: the terminal's, at most 120; 120 when not a terminal) with an
    ellipsis."""
    if width is None:
        width = min(shutil.get_terminal_size().columns, 120) if sys.stdout.isatty() else 120
    for path in list_studies():
        spec = load_study_spec(path)
        head = f"{spec.name:22s} {spec.objective:14s} "
        # The whole description as one line: YAML block text breaks lines mid-sentence.
        text = textwrap.shorten(spec.description, max(20, width - len(head)), placeholder=" ...",
                                break_on_hyphens=False)
        print((head + text).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "-m", "search.run",
                               *(sys.argv[1:] if argv is None else argv)])
    try:
        if args.list:
            try:
                print_study_list()
            except BrokenPipeError:  # `--list | head` closed the pipe: not an error
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if not args.study:
            raise ConfigError("--study is required; see --list for the studies")
        return run_from_args(args)
    except HPSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the first trial started (a running one ends as FAIL)
        print("interrupted; no trial was running", file=sys.stderr)
        return 130


def run_from_args(args: argparse.Namespace) -> int:
    from search.driver.runner import RunOptions, check_run_options, run_study
    from search.study.components import check_components

    spec = load_study_spec(args.study).with_overrides(
        fixed=parse_overrides(args.overrides), sampler=args.sampler, pruner=args.pruner,
        seeds=args.seeds, aggregate=args.aggregate, previews=args.previews)
    # Every path absolute from here on: a Ray trial runs in its own working folder, where a
    # relative sqlite:///studies.db would open a new, empty database.
    storage_url = absolute_storage_url(args.storage)
    data_dir = resolve_data_dir(args.data_dir).resolve()
    cache_dir = args.cache_dir.expanduser().resolve()
    artifact_dir = (args.artifact_dir.expanduser() if args.artifact_dir
                    else artifact_dir_for(storage_url)).resolve()
    options = RunOptions(
        n_trials=args.trials if args.trials is not None else spec.trials, data_dir=data_dir,
        storage_url=storage_url, jobs=args.jobs, timeout=args.timeout, device=args.device,
        seed=args.seed, artifact_dir=artifact_dir, study_name=args.study_name,
        threads=args.threads, cache_dir=cache_dir, progress=not args.no_progress,
        lanes=args.lanes,
        command=args.command)
    check_run_options(options)
    check_components(spec)
    ray_options = None
    if args.backend == "ray":
        from search.backends.ray_tune import check_ray_run

        ray_options = _ray_options(args)
        check_ray_run(spec, options, ray_options)
    _check_data(spec.objective, data_dir)
    preflight(spec, Runtime(data_dir=data_dir, device=resolve_device(args.device),
                            cache_dir=cache_dir))
    open_storage(storage_url)  # a bad URL or an unreachable server: refused before the header
    print(f"study {options.study_name or spec.name}: objective {spec.objective}, "
          f"{spec.direction} {spec.metric}, sampler {spec.sampler.name}, pruner {spec.pruner.name}")
    print(f"fixed: {dict(spec.fixed)}")
    if spec.seeds > 1:
        print(f"seeds: each trial trains {spec.seeds} seeds; its value is their "
              f"{'mean' if spec.aggregate == 'mean' else '95% lower confidence bound'}")
    from search.driver.runner import resolve_lanes

    lanes = resolve_lanes(spec, options.lanes, resolve_device(args.device))
    where = ("Ray " + (args.ray_address or "(local)")
             + (f", {args.lanes} lanes per Ray trial" if (args.lanes or 1) > 1 else "")
             if args.backend == "ray"
             else f"{options.jobs} job(s)" + (f" x {lanes} lanes" if lanes > 1 else ""))
    print(f"storage {options.storage_url}, data {data_dir}, {options.n_trials} trial(s), "
          f"{where}")
    if args.backend == "ray":
        from search.backends.ray_tune import run_study_ray

        summary = run_study_ray(spec, options, ray_options)
    else:
        summary = run_study(spec, options)
    return report_summary(summary, spec)


def absolute_storage_url(url: str) -> str:
    """``url`` with a relative SQLite or journal file made absolute (from the current folder),
    so that every process, whatever its working folder, opens the same file.

    ``sqlite:///studies.db`` -> ``sqlite:////home/me/studies.db``; server URLs, in-memory
    SQLite and absolute paths come back unchanged.
    """
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            path, sep, query = url.removeprefix(scheme).partition("?")
            if not path or path == ":memory:" or Path(path).is_absolute():
                return url
            return f"{scheme}{Path(path).expanduser().resolve()}{sep}{query}"
    if "://" not in url and url.endswith((".log", ".journal")):  # a bare journal file
        return str(Path(url).expanduser().resolve())
    return url


def report_summary(summary: Any, spec: StudySpec) -> int:
    """Print what the run added and where; return the exit code.

    Non-zero when the run stopped on an error (1), was interrupted (130), or ran trials of
    which none ended COMPLETE or PRUNED (1). A grid with nothing left to run is not an error.
    """
    if summary.grid_was_complete:
        print(f"the grid of study {summary.study_name!r} is complete: every point has a "
              "COMPLETE or PRUNED trial; nothing to run. For a fresh study run the same command "
              "with --study-name NEW_NAME (or another --storage)")
    else:
        print(f"added {summary.complete} complete, {summary.pruned} pruned, {summary.failed} "
              f"failed trial(s) in {summary.seconds:.1f}s (stopped by {summary.stopped_by})")
    if summary.best_number is not None:
        print(f"best trial #{summary.best_number}: {spec.metric}={summary.best_value:.4f} "
              f"params={summary.best_params}")
    print(f"stored in {summary.storage_url} (study {summary.study_name!r}), "
          f"artifacts in {summary.artifact_dir}")
    if summary.stopped_by.startswith("error"):
        print(summary.stopped_by, file=sys.stderr)
        return 1
    if summary.stopped_by == "interrupt":
        return 130
    if summary.failed and not summary.complete + summary.pruned:
        print(f"error: all {summary.failed} trial(s) of this run failed (their errors are "
              "above and on each trial's 'error' attribute)", file=sys.stderr)
        return 1
    return 0


def _ray_options(args: argparse.Namespace) -> Any:
    from search.backends.ray_tune import RayOptions

    scheduler = {key: value for key, value in (
        ("name", args.scheduler), ("grace_period", args.asha_grace_period),
        ("reduction_factor", args.asha_reduction_factor), ("max_t", args.asha_max_t))
        if value is not None}
    return RayOptions(address=args.ray_address, num_cpus=args.ray_cpus,
                      cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                      max_concurrent=args.max_concurrent, scheduler=scheduler)


def _check_data(objective: str, data_dir: Path) -> None:
    """Fail before any trial starts when the objective's data is missing; flag synthetic data."""
    from objectives import get_objective

    folder = data_dir / get_objective(objective).dataset
    if not folder.is_dir():
        raise ConfigError(f"no {folder.name} data at {folder}; pass --data-dir (or set "
                          "$HPSEARCH_DATA) to the folder holding it"
                          + (", or run `python -m objectives.euro_data --synthetic DIR` for a "
                             "synthetic stand-in" if folder.name == "euro" else ""))
    if (folder / "SYNTHETIC").exists():
        print(f"NOTE: {folder} is a SYNTHETIC stand-in, not the course data; results on it "
              "say nothing about the real data")


if __name__ == "__main__":
    # SIGTERM (kill, a scheduler's stop) stops a run like Ctrl-C: running trials end as FAIL.
    from search.records import interrupts

    interrupts.install((signal.SIGINT, signal.SIGTERM))
    raise SystemExit(main())
