"""``python -m search.confirm``: retrain a study's best configs over fresh seeds, ranked by the
lower confidence bound.

A search that picks its best trial from one seed partly picks a lucky seed. This command takes
the K best COMPLETE trials of a study, trains each config over S seeds the search never used
(as lanes where the objective has them), into a linked study ``NAME.confirm`` in the same
storage, and prints the configs ranked by the t-based lower bound on their mean, with mean,
standard deviation and the per-seed values. The confirmation study is an ordinary grid study
(one point per config, ``seeds: S``, ``aggregate: lcb``), so it resumes, survives dead workers
and shows in the dashboard, the reports and ``search.export`` like any other.

Examples::

    python -m search.confirm --study mlp_width_depth --top 5 --seeds 5
    python -m search.confirm --study mlp_lr --top 3 --seeds 10 --storage sqlite:///lr.db
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.errors import ConfigError, HPSearchError
from objectives.runtime import resolve_data_dir
from search.driver.trial import GRID_POINT_PARAM, point_label
from search.records.storage import DEFAULT_STORAGE, open_storage, require_existing_storage
from search.study.spec import StudySpec, parse_study_spec

CONFIRM_SUFFIX = ".confirm"


@dataclass(frozen=True)
class Confirmed:
    """One confirmed config: its source trial and its statistics over the fresh seeds."""

    source_number: int
    source_value: float
    number: int  # the trial in the confirmation study
    mean: float
    sd: float
    lcb: float
    per_seed: tuple[float, ...]


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The study's ``k`` best COMPLETE trials that recorded a config, best first."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and isinstance(t.user_attrs.get("config"), dict)]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=reverse)[:k]


def confirmation_spec(study: optuna.Study, trials: list[FrozenTrial], seeds: int,
                      first_seed: int) -> tuple[StudySpec, dict[str, FrozenTrial]]:
    """The grid study that trains each trial's config over ``seeds`` seeds from
    ``first_seed`` (the source study's fixed settings, one grid point per config), and the
    source trial of each grid point by its label."""
    attrs = study.user_attrs
    searched = [k for k in attrs.get("searched", []) if k != "seed"]
    sources: dict[str, FrozenTrial] = {}
    points = []
    for trial in trials:
        config = trial.user_attrs["config"]
        point = {key: config[key] for key in searched if key in config}
        if point_label(point) not in sources:  # two trials of one config: the better one
            sources[point_label(point)] = trial
            points.append(point)
    direction = ("maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE
                 else "minimize")
    raw = {
        "description": f"Confirmation of the {len(trials)} best trials of {study.study_name} "
                       f"over {seeds} fresh seeds (from {first_seed}), ranked by the lower "
                       "confidence bound.",
        "objective": attrs["objective"], "metric": attrs["metric"], "direction": direction,
        "fixed": {**attrs.get("fixed", {}), "seed": first_seed},
        "grid_points": points, "seeds": seeds, "aggregate": "lcb",
    }
    return parse_study_spec(raw, name=study.study_name + CONFIRM_SUFFIX), sources


def fresh_first_seed(study: optuna.Study, confirm: optuna.Study | None) -> int:
    """The first seed of the confirmation: the one it used before, else one past every seed
    the source study trained."""
    if confirm is not None and "seed" in confirm.user_attrs.get("fixed", {}):
        return int(confirm.user_attrs["fixed"]["seed"])
    per_trial = int(study.user_attrs.get("seeds", 1))
    used = [int(t.user_attrs["config"].get("seed", 0)) + per_trial - 1
            for t in study.get_trials(deepcopy=False)
            if isinstance(t.user_attrs.get("config"), dict)]
    return max(used, default=0) + 1


def ranking(confirm: optuna.Study, sources: dict[str, FrozenTrial]) -> list[Confirmed]:
    """The confirmed configs among ``sources`` (by grid label), best lower bound first."""
    metric = confirm.user_attrs["metric"]
    rows = []
    for trial in confirm.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        source = sources.get(str(trial.params.get(GRID_POINT_PARAM)))
        metrics = trial.user_attrs.get("metrics", {})
        if source is None or f"{metric}_lcb" not in metrics:
            continue
        per_seed = tuple(float(m.get(metric, math.nan))
                         for m in trial.user_attrs.get("seed_metrics", []))
        rows.append(Confirmed(source.number, float(source.value), trial.number,
                              metrics[metric], metrics.get(f"{metric}_sd", math.nan),
                              metrics[f"{metric}_lcb"], per_seed))
    maximize = confirm.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(rows, key=lambda r: r.lcb, reverse=maximize)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search.confirm",
        description="Retrain the best configs of a study over fresh seeds into the linked "
                    "study NAME.confirm and rank them by the lower confidence bound.")
    parser.add_argument("--study", required=True, help="the study's name in the storage")
    parser.add_argument("--top", type=int, default=5, help="how many best trials (default 5)")
    parser.add_argument("--seeds", type=int, default=5, help="fresh seeds per config "
                        "(default 5; at least 2 for a bound)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--lanes", type=int, help="lanes per worker (default: as search.run)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--data-dir", help="folder holding euro/ and faces/ "
                        "(default $HPSEARCH_DATA, else ./data)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"),
                        help="decoded images and backbone features (default .cache/)")
    parser.add_argument("--artifact-dir", type=Path, help="per-trial files (default: beside "
                        "the storage)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def confirm(args: argparse.Namespace, command: str) -> int:
    from search.driver.runner import RunOptions, run_study

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    if args.seeds < 2:
        raise ConfigError(f"--seeds must be at least 2 for a confidence bound, got {args.seeds}")
    require_existing_storage(args.storage)  # opening a missing file would create it
    storage = open_storage(args.storage)
    names = optuna.get_all_study_names(storage)
    if args.study not in names:
        raise ConfigError(f"no study {args.study!r} in {args.storage}; studies there: "
                          f"{', '.join(sorted(names)) or 'none'}")
    study = optuna.load_study(study_name=args.study, storage=storage)
    if "objective" not in study.user_attrs:
        raise ConfigError(f"study {args.study!r} was not made by search.run (no objective "
                          "recorded); confirm a study made by this tool")
    trials = top_trials(study, args.top)
    if not trials:
        raise ConfigError(f"study {args.study!r} has no COMPLETE trial to confirm; run "
                          f"`python -m search.run --study {args.study}` first")
    confirm_name = args.study + CONFIRM_SUFFIX
    existing = (optuna.load_study(study_name=confirm_name, storage=storage)
                if confirm_name in names else None)
    spec, sources = confirmation_spec(study, trials, args.seeds,
                                      fresh_first_seed(study, existing))
    print(f"confirming the {len(trials)} best trials of {args.study!r} "
          f"({', '.join(f'#{t.number}' for t in trials)}) over seeds "
          f"{spec.fixed['seed']}..{spec.fixed['seed'] + args.seeds - 1} into {confirm_name!r}")
    options = RunOptions(n_trials=len(spec.grid_points or ()), data_dir=resolve_data_dir(
        args.data_dir), storage_url=args.storage, jobs=args.jobs, device=args.device,
        artifact_dir=args.artifact_dir, cache_dir=args.cache_dir,
        progress=not args.no_progress, lanes=args.lanes, command=command)
    summary = run_study(spec, options)
    confirmed = optuna.load_study(study_name=confirm_name, storage=storage)
    confirmed.set_user_attr("confirms", args.study)
    confirmed.set_user_attr("confirms_trials", {label: t.number for label, t in sources.items()})
    print_ranking(ranking(confirmed, sources), spec.metric, trials[0].number)
    if summary.stopped_by.startswith("error"):
        print(summary.stopped_by, file=sys.stderr)
        return 1
    return 130 if summary.stopped_by == "interrupt" else 0


def print_ranking(rows: list[Confirmed], metric: str, search_best: int) -> None:
    """The confirmed configs, best lower bound first, and where the search's best landed."""
    if not rows:
        print("no config was confirmed (see the failed trials above)")
        return
    print(f"\nranked by the 95% lower confidence bound on the mean {metric}:")
    print(f"{'rank':>4} {'trial':>6} {'search':>7} {'search value':>12} {'lcb':>8} "
          f"{'mean':>8} {'sd':>8}  per seed")
    for rank, row in enumerate(rows, 1):
        seeds = " ".join(f"{v:.4f}" for v in row.per_seed)
        print(f"{rank:>4} {'#' + str(row.number):>6} {'#' + str(row.source_number):>7} "
              f"{row.source_value:>12.4f} {row.lcb:>8.4f} {row.mean:>8.4f} {row.sd:>8.4f}  "
              f"{seeds}")
    winner = rows[0]
    place = next((i for i, r in enumerate(rows, 1) if r.source_number == search_best), None)
    if winner.source_number == search_best:
        print(f"the search's best trial #{search_best} also wins on the lower bound")
    else:
        print(f"the lower bound picks search trial #{winner.source_number}; the search's best "
              f"trial #{search_best} ranks {place if place else 'unconfirmed'} of {len(rows)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "search.confirm",
                          *(sys.argv[1:] if argv is None else argv)])
    try:
        return confirm(args, command)
    except HPSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
