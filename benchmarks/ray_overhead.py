"""Per-trial overhead and wall time: local backend vs Ray backend vs Ray's plain OptunaSearch.

Runs the same studies three ways, each in its own process, two trials at a time on 2 CPUs:

- ``local``: ``search.driver.runner.run_study`` with ``jobs=2``;
- ``ray``: ``search.backends.ray_tune.run_study_ray`` (our backend, ASHA, 2 concurrent trials);
- ``plain``: Ray Tune's own integration, ``OptunaSearch`` + ``ASHAScheduler`` with its default
  settings, the objective's steps reported with ``tune.report``.

Two studies: ``toy`` (a trivial 10-step objective, so the time is all overhead) and ``mlp``
(short MLPs on the Euro data). Per-trial overhead is measured in steady state from the
storage's trial timestamps: ``(last completion - first completion) * concurrency / (n - 1)``
minus the objective's own mean seconds (meaningful for ``toy``; with few long MLP trials it is
noise, compare wall times); wall time is the whole call, start-up included.

    python benchmarks/ray_overhead.py --toy-trials 40 --mlp-trials 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = 2
TOY_SPEC = {
    "objective": "toy", "metric": "val_loss", "direction": "minimize",
    "fixed": {"steps": 10},
    "space": {"x": {"type": "float", "low": -3.0, "high": 3.0},
              "y": {"type": "float", "low": -2.0, "high": 2.0}},
    "sampler": {"name": "random"}, "scheduler": {"grace_period": 1, "reduction_factor": 2},
}
MLP_SPEC = {
    "objective": "mlp", "metric": "val_accuracy", "direction": "maximize",
    "fixed": {"epochs": 4, "train_fraction": 0.05, "seed": 0},
    "space": {"depth": {"type": "int", "low": 1, "high": 4},
              "width": {"type": "categorical", "choices": [16, 32]},
              "lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}},
    "sampler": {"name": "random"}, "scheduler": {"grace_period": 1, "reduction_factor": 2},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-trials", type=int, default=40)
    parser.add_argument("--mlp-trials", type=int, default=8)
    parser.add_argument("--data-dir", default=os.environ.get(
        "HPSEARCH_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--backends", default="local,ray,plain")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one backend
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_run_one(args.one, Path(args.spec), args.storage, args.trials,
                                  Path(args.data_dir))))
        return 0
    backends = args.backends.split(",")
    print(f"{os.cpu_count()} CPUs visible, {CONCURRENCY} trials at a time; load average "
          f"{os.getloadavg()[0]:.2f} at start (a shared machine: compare ratios, not times)")
    for name, spec, n in (("toy", TOY_SPEC, args.toy_trials), ("mlp", MLP_SPEC, args.mlp_trials)):
        if n < 2:
            continue
        results = {b: _measure(b, name, spec, n, args.data_dir) for b in backends}
        _print_table(name, n, results)
    return 0


def _measure(backend: str, name: str, spec: dict, n: int, data_dir: str) -> dict:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / f"bench_{name}.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        storage = f"sqlite:///{tmp}/bench.db"
        out = subprocess.run(
            [sys.executable, __file__, "--one", backend, "--spec", str(spec_path),
             "--storage", storage, "--trials", str(n), "--data-dir", data_dir],
            cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if out.returncode != 0:
            raise SystemExit(f"{backend} on {name} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def _print_table(name: str, n: int, results: dict[str, dict]) -> None:
    print(f"\n{name}: {n} trials")
    print(f"{'backend':8s} {'wall s':>8s} {'overhead ms/trial':>18s} {'objective s':>12s} "
          f"{'complete':>8s} {'pruned':>6s} {'fail':>5s}")
    for backend, r in results.items():
        print(f"{backend:8s} {r['wall_s']:8.1f} {r['overhead_ms']:18.0f} "
              f"{r['objective_s']:12.3f} {r['complete']:8d} {r['pruned']:6d} {r['fail']:5d}")
    if "ray" in results:
        ray_ms = results["ray"]["overhead_ms"]
        if "local" in results:
            print(f"ray - local overhead: {ray_ms - results['local']['overhead_ms']:+.0f} ms/trial"
                  " (goal: <= 150); wall ray/local: "
                  f"{results['ray']['wall_s'] / results['local']['wall_s']:.2f}x")
        if "plain" in results:
            ratio = (f"{results['plain']['overhead_ms'] / ray_ms:.1f}x" if ray_ms > 0 else
                     "n/a (objective time dominates: compare wall times)")
            print(f"plain / ray overhead: {ratio} (goal: >= 5); wall plain/ray: "
                  f"{results['plain']['wall_s'] / results['ray']['wall_s']:.2f}x")


def _run_one(backend: str, spec_path: Path, storage: str, n: int, data_dir: Path) -> dict:
    import optuna

    from search.study.spec import load_study_spec

    spec = load_study_spec(spec_path)
    start = time.perf_counter()
    if backend == "plain":
        _run_plain(spec, storage, n, data_dir)
    else:
        from search.driver.runner import RunOptions, run_study

        options = RunOptions(n_trials=n, data_dir=data_dir, storage_url=storage,
                             jobs=CONCURRENCY, seed=0, progress=False, device="cpu")
        if backend == "local":
            run_study(spec, options)
        else:
            from search.backends.ray_tune import RayOptions, run_study_ray

            run_study_ray(spec, options, RayOptions(num_cpus=CONCURRENCY,
                                                    max_concurrent=CONCURRENCY))
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name=spec.name, storage=storage).trials
    return {"wall_s": wall, **_steady_overhead(trials, _plain_durations(storage))}


def _plain_durations(storage_url: str) -> list[float] | None:
    path = Path(storage_url.removeprefix("sqlite:///") + ".durations")
    return [float(v) for v in path.read_text().split()] if path.exists() else None


def _steady_overhead(trials: list, plain_durations: list[float] | None) -> dict:
    """Overhead per trial from the trials' timestamps (start-up excluded)."""
    from optuna.trial import TrialState

    done = sorted(t.datetime_complete for t in trials if t.datetime_complete)
    span = (done[-1] - done[0]).total_seconds()
    per_trial = span * CONCURRENCY / max(1, len(done) - 1)
    # The objective's own time: recorded by TrialRunner; the plain trainable writes a file.
    durations = plain_durations or [t.user_attrs.get("duration_s", 0.0) for t in trials]
    objective = sum(durations) / max(1, len(durations))
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    return {"overhead_ms": 1000 * (per_trial - objective), "objective_s": objective,
            "complete": count[TrialState.COMPLETE], "pruned": count[TrialState.PRUNED],
            "fail": count[TrialState.FAIL]}


def _run_plain(spec, storage_url: str, n: int, data_dir: Path) -> None:
    """Ray Tune's own integration: OptunaSearch + ASHAScheduler, default settings."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search.study.components import make_sampler

    space = {}
    for p in spec.space:
        if p.type == "categorical":
            space[p.name] = optuna.distributions.CategoricalDistribution(list(p.choices))
        elif p.type == "int":
            space[p.name] = optuna.distributions.IntDistribution(int(p.low), int(p.high))
        else:
            space[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
    mode = "max" if spec.direction == "maximize" else "min"
    searcher = OptunaSearch(space, metric=spec.metric, mode=mode,
                            sampler=make_sampler(spec, 0), study_name=spec.name,
                            storage=optuna.storages.RDBStorage(storage_url))
    scheduler = ASHAScheduler(metric=spec.metric, mode=mode, max_t=100,
                              **dict(spec.scheduler))
    ray.init(num_cpus=CONCURRENCY, include_dashboard=False)
    with tempfile.TemporaryDirectory() as tmp:
        tune.Tuner(
            tune.with_parameters(_plain_trainable, spec=spec, data_dir=data_dir.resolve(),
                                 timing_file=storage_url.removeprefix("sqlite:///")
                                 + ".durations"),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=n, max_concurrent_trials=CONCURRENCY),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        ).fit()
    ray.shutdown()


def _plain_trainable(config: dict, spec, data_dir: Path, timing_file: str) -> None:
    import torch
    from ray import tune

    from objectives import get_objective
    from objectives.reporter import RecordingReporter
    from objectives.runtime import Runtime

    torch.set_num_threads(1)
    objective = get_objective(spec.objective)

    class TuneReporter(RecordingReporter):
        def report(self, step: int, metrics: dict) -> None:
            super().report(step, metrics)
            tune.report({spec.metric: float(metrics[spec.metric])})

    conf = objective.make_config({**spec.fixed, **config})
    start = time.perf_counter()
    try:
        objective.run(conf, TuneReporter(), Runtime(data_dir=data_dir))
    finally:  # ASHA ends a stopped trial with SystemExit inside tune.report
        with open(timing_file, "a") as f:
            f.write(f"{time.perf_counter() - start}\n")


if __name__ == "__main__":
    raise SystemExit(main())
