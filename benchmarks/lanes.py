"""Lanes against the single-trial path, measured in one run (ratios, with the machine's load).

    python benchmarks/lanes.py                      # all three parts (about 15 min on 2 cores)
    python benchmarks/lanes.py --parts same-shape   # 32 same-shape trials only (about 2 min)
    python benchmarks/lanes.py --parts ceiling      # what lanes can give a study's shapes
    python benchmarks/lanes.py --device cuda        # the same comparison on a GPU

Parts:
- ``same-shape``: 32 depth-6 width-16 trials (seeds 0-31) trained one at a time with
  ``objectives.mlp.fit`` and as 32 lanes with ``train_lanes``, one thread, the same epochs;
  trials per hour of each and their ratio, without the PNG previews (the training alone) and
  with them (a fixed cost per trial on both sides, which caps the ratio for short trials).
- ``grid``: ``python -m search.run --study mlp_grid --jobs 2`` (7 shapes, full data, 50 epochs)
  with lanes (the default) and with ``--lanes 1``, wall time and ratio.
- ``search``: ``mlp_width_depth`` with ``--jobs 2``, lanes and ``--lanes 1`` for the same
  wall-clock budget: trials per hour, their ratio, and the best validation accuracy.

- ``ceiling``: for each shape of ``mlp_width_depth``'s space (depth x width x batch size),
  the training-step time of one trial alone (``objectives.mlp.fit``'s step: the model and
  torch's Adam) and of one lane in a full pack of ``--ceiling-lanes`` lanes of that shape;
  then the most lanes can give the whole space: total epoch time of one of every shape alone,
  over the same with every pack full. Packs are never all full of one shape in a real search
  (TPE draws mixed shapes), so a search's ratio is below this; wide, large-batch shapes are
  arithmetic-bound on a CPU and gain nothing.

Peak memory is the largest resident set of any process the part started.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f} on {} CPUs".format(*os.getloadavg(),
                                                                os.cpu_count())


def peak_child_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def same_shape(data_dir: Path, device: str, epochs: int, lanes: int, previews: str) -> None:
    import torch

    from objectives.mlp import Config, fit
    from objectives.mlp_lanes import LaneTask, train_lanes
    from objectives.reporter import RecordingReporter
    from objectives.runtime import Runtime

    torch.set_num_threads(1)
    runtime = Runtime(data_dir=data_dir, device=device, previews=previews)
    configs = [Config(depth=6, width=16, epochs=epochs, seed=seed) for seed in range(lanes)]
    singles = min(4, lanes)  # one at a time is slow: time a few, the rate is per trial
    start = time.perf_counter()
    for config in configs[:singles]:
        fit(config, RecordingReporter(), runtime)
    single_s = (time.perf_counter() - start) / singles
    start = time.perf_counter()
    train_lanes([LaneTask(c, RecordingReporter()) for c in configs], runtime, lambda end: None)
    lanes_s = (time.perf_counter() - start) / lanes
    print(f"same-shape: {lanes} x d6 w16, {epochs} epochs, full data, 1 thread, {device}, "
          f"previews {previews}")
    print(f"  one at a time: {3600 / single_s:8.0f} trials/h ({single_s:.2f} s per trial, "
          f"{singles} timed)")
    print(f"  {lanes} lanes:      {3600 / lanes_s:8.0f} trials/h ({lanes_s:.2f} s per trial)")
    print(f"  ratio lanes / one at a time: {single_s / lanes_s:.1f}x  [{load()}]")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak memory of this process: {maxrss:.0f} MiB")


def run_cli(args: list[str], data_dir: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "search.run", *args, "--data-dir",
                             str(data_dir), "--no-progress"], cwd=REPO, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(f"search.run failed: {result.stderr[-2000:]}")
    return time.perf_counter() - start, result.stdout


def grid(data_dir: Path, device: str, tmp: Path) -> None:
    print(f"grid: mlp_grid (7 shapes, 50 epochs, full data) --jobs 2, {device}")
    times = {}
    for label, extra in (("lanes", []), ("--lanes 1", ["--lanes", "1"])):
        url = f"sqlite:///{tmp / f'grid{len(times)}.db'}"
        seconds, out = run_cli(["--study", "mlp_grid", "--jobs", "2", "--storage", url,
                                "--device", device, *extra], data_dir)
        times[label] = seconds
        best = [line for line in out.splitlines() if line.startswith("best trial")]
        print(f"  {label:10s} {seconds:6.1f} s  {best[0] if best else ''}  [{load()}]")
    print(f"  ratio --lanes 1 / lanes: {times['--lanes 1'] / times['lanes']:.1f}x; peak memory "
          f"of a worker: {peak_child_mib():.0f} MiB")


def search(data_dir: Path, device: str, tmp: Path, trials: int, budget_s: float) -> None:
    import optuna

    from search.records.storage import open_storage

    print(f"search: mlp_width_depth --jobs 2, up to {trials} trials or {budget_s:.0f} s, "
          f"{device}")
    rates = {}
    for label, extra in (("lanes", []), ("--lanes 1", ["--lanes", "1"])):
        url = f"sqlite:///{tmp / f'search{len(rates)}.db'}"
        seconds, _ = run_cli(["--study", "mlp_width_depth", "--trials", str(trials), "--jobs",
                              "2", "--timeout", str(budget_s), "--seed", "0", "--storage", url,
                              "--device", device, *extra], data_dir)
        study = optuna.load_study(study_name="mlp_width_depth", storage=open_storage(url))
        ended = [t for t in study.trials if t.state.is_finished()]
        rates[label] = len(ended) / seconds * 3600
        complete = [t for t in ended if t.value is not None and t.state.name == "COMPLETE"]
        best = max((t.value for t in complete), default=float("nan"))
        print(f"  {label:10s} {len(ended):4d} trials in {seconds:6.1f} s = {rates[label]:7.0f} "
              f"trials/h, best val_accuracy {best:.4f}  [{load()}]")
    print(f"  ratio lanes / --lanes 1: {rates['lanes'] / rates['--lanes 1']:.1f}x trials per "
          f"hour; peak memory of a worker: {peak_child_mib():.0f} MiB")


CEILING_DEPTHS = (1, 3, 6, 12)  # mlp_width_depth: depth 1-12
CEILING_WIDTHS = (8, 16, 32, 64, 128)  # its width choices
CEILING_BATCHES = (64, 256, 1024)  # three of its five batch sizes, to keep the part short


def ceiling(data_dir: Path, device: str, lanes: int, steps: int) -> None:
    import torch
    import torch.nn.functional as F

    from objectives.euro_data import load_euro
    from objectives.mlp import MLP, Config, _make_optimizer
    from objectives.mlp_lanes import LaneTask, _Lane, _Pack, pack_key
    from objectives.reporter import RecordingReporter
    from objectives.runtime import Runtime

    torch.set_num_threads(1)
    data = load_euro(data_dir)
    runtime = Runtime(data_dir=data_dir, device=device, previews="none")
    torch_device = torch.device(device)
    n_train = len(data.x_train)

    def seconds_per_step(step: Callable[[], object]) -> float:
        for _ in range(3):  # warm-up: allocations, kernels
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    def alone(config: Config) -> float:
        """One step of objectives.mlp.fit's loop."""
        model = MLP(2, config).to(torch_device)
        optimizer = _make_optimizer(model, config)
        x = torch.from_numpy(data.x_train[:config.batch_size]).to(torch_device)
        y = torch.from_numpy(data.y_train[:config.batch_size]).to(torch_device)

        def step() -> None:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return seconds_per_step(step)

    def in_pack(configs: list[Config]) -> float:
        """One step of a full pack, per lane."""
        lane_list = [_Lane(LaneTask(c, RecordingReporter()), data, torch_device)
                     for c in configs]
        pack = _Pack(pack_key(configs[0], lane_list[0].in_features), data, runtime)
        for lane in lane_list:
            pack.add(lane)
        assert pack.state is not None
        state, batch = pack.state, configs[0].batch_size
        x = pack.x_all[:batch].expand(len(configs), batch, -1).contiguous()
        y = pack.y_all[:batch].expand(len(configs), batch).contiguous()
        return seconds_per_step(lambda: state.train_step(x, y)) / len(configs)

    print(f"ceiling: mlp_width_depth's shapes, training steps only, 1 thread, {device}; "
          f"one trial alone against one lane of a full pack of {lanes}")
    print("  shape              alone ms/step   lane ms/step   ratio")
    alone_total = lanes_total = 0.0
    for depth in CEILING_DEPTHS:
        for width in CEILING_WIDTHS:
            for batch in CEILING_BATCHES:
                configs = [Config(depth=depth, width=width, batch_size=batch, seed=seed)
                           for seed in range(lanes)]
                single_s, lane_s = alone(configs[0]), in_pack(configs)
                epoch_steps = math.ceil(n_train / batch)
                alone_total += epoch_steps * single_s
                lanes_total += epoch_steps * lane_s
                print(f"  d{depth:<2d} w{width:<3d} batch {batch:<4d}   {single_s * 1e3:8.2f}"
                      f"       {lane_s * 1e3:8.2f}     {single_s / lane_s:5.1f}x", flush=True)
    print(f"  an epoch of every shape: {alone_total:.0f} s alone, {lanes_total:.0f} s as full "
          f"packs: at most {alone_total / lanes_total:.1f}x from lanes for this space  "
          f"[{load()}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["same-shape", "grid", "search"],
                        choices=["same-shape", "grid", "search", "ceiling"])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("HPSEARCH_DATA", "data")))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2, help="same-shape: epochs per trial")
    parser.add_argument("--lanes", type=int, default=32, help="same-shape: lanes")
    parser.add_argument("--previews", choices=["none", "all", "both"], default="both",
                        help="same-shape: whether both sides draw the PNG previews (about "
                        "0.3 s a trial); both: measure without, then with")
    parser.add_argument("--ceiling-lanes", type=int, default=8,
                        help="ceiling: lanes per pack (the CPU default of --lanes)")
    parser.add_argument("--ceiling-steps", type=int, default=30,
                        help="ceiling: timed steps per shape and side")
    parser.add_argument("--search-trials", type=int, default=200)
    parser.add_argument("--search-budget", type=float, default=300.0,
                        help="search: seconds each side may start trials")
    args = parser.parse_args()
    print(f"benchmarks/lanes.py: {load()}")
    with tempfile.TemporaryDirectory(prefix="hpsearch-lanes-") as tmp:
        if "same-shape" in args.parts:
            for previews in (("none", "all") if args.previews == "both" else (args.previews,)):
                same_shape(args.data_dir, args.device, args.epochs, args.lanes, previews)
        if "grid" in args.parts:
            grid(args.data_dir, args.device, Path(tmp))
        if "ceiling" in args.parts:
            ceiling(args.data_dir, args.device, args.ceiling_lanes, args.ceiling_steps)
        if "search" in args.parts:
            search(args.data_dir, args.device, Path(tmp), args.search_trials,
                   args.search_budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
