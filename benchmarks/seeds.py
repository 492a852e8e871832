"""What 5 seeds per trial cost against one, measured in one run (with the machine's load).

    python benchmarks/seeds.py                 # mlp_grid, --jobs 2, seeds 1 then 5 (~3 min)
    python benchmarks/seeds.py --seeds 3 --study mlp_batchnorm

Runs ``python -m search.run --study STUDY --jobs 2`` twice into fresh SQLite files, with
``--seeds 1`` and ``--seeds N`` (lanes at their default, which grows with the seeds), prints
both wall times and their ratio, then the N-seed study's validation accuracy per trial as
mean +- sd (min-max) over the seeds, beside the one-seed value.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f} on {} CPUs".format(*os.getloadavg(),
                                                                os.cpu_count())


def run(study: str, seeds: int, storage: str, jobs: int, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "search.run", "--study", study, "--jobs", str(jobs),
                    "--seeds", str(seeds), "--storage", storage, "--no-progress", *extra],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="mlp_grid")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    extra = [item for value in args.overrides for item in ("--set", value)]

    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        print(load())
        one_url, many_url = f"sqlite:///{tmp}/one.db", f"sqlite:///{tmp}/many.db"
        one_s = run(args.study, 1, one_url, args.jobs, extra)
        many_s = run(args.study, args.seeds, many_url, args.jobs, extra)
        print(load())
        print(f"{args.study} --jobs {args.jobs}: 1 seed {one_s:.1f} s, {args.seeds} seeds "
              f"{many_s:.1f} s, ratio {many_s / one_s:.2f}x")
        one = {t.params.get("point", str(t.params)): t for t in
               optuna.load_study(study_name=args.study, storage=one_url).trials}
        many = optuna.load_study(study_name=args.study, storage=many_url)
        metric = many.user_attrs["metric"]
        for trial in sorted(many.trials, key=lambda t: t.number):
            key = trial.params.get("point", str(trial.params))
            values = [m[metric] for m in trial.user_attrs.get("seed_metrics", [])]
            metrics = trial.user_attrs.get("metrics", {})
            single = one.get(key)
            print(f"{key:28s} {metrics.get(metric, float('nan')):.3f} +- "
                  f"{metrics.get(metric + '_sd', float('nan')):.3f} "
                  f"({min(values, default=float('nan')):.3f}-"
                  f"{max(values, default=float('nan')):.3f}) over {len(values)} seeds; "
                  f"one seed: {single.value if single and single.value is not None else 'n/a'}")


if __name__ == "__main__":
    main()
