"""Benchmark: the MLP objective's loop against the exercise's skeleton-style DataLoader loop.

Both train the same default MLP (depth 6, width 16, Adam lr 1e-3, batch 256) on the real Euro
data for the same epochs at one torch thread, evaluating train/val/test after every epoch
(the skeleton with DataLoaders of batch 1024). Prints seconds per epoch and the speed-up.

    python benchmarks/mlp_loop.py [--data-dir DIR] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from objectives.euro_data import load_euro
from objectives.mlp import MLP, Config, run
from objectives.reporter import RecordingReporter
from objectives.runtime import Runtime, resolve_data_dir


def skeleton_loop(config: Config, data_dir) -> float:
    """The exercise's skeleton: TensorDataset + DataLoader(shuffle) and per-epoch evaluation."""
    data = load_euro(data_dir)
    torch.manual_seed(config.seed)
    splits = {name: TensorDataset(torch.from_numpy(x), torch.from_numpy(y)) for name, x, y in
              (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val),
               ("test", data.x_test, data.y_test))}
    train_loader = DataLoader(splits["train"], batch_size=config.batch_size, shuffle=True)
    model = MLP(2, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for dataset in splits.values():
                for x, y in DataLoader(dataset, batch_size=1024):
                    loss_fn(model(x), y)
                    (model(x).argmax(1) == y).sum()
    return (time.perf_counter() - start) / config.epochs


def objective_loop(config: Config, data_dir) -> float:
    """``objectives.mlp.run``: per-epoch seconds it reports plus its evaluation time."""
    reporter = RecordingReporter()
    start = time.perf_counter()
    run(config, reporter, Runtime(data_dir=data_dir))
    return (time.perf_counter() - start) / config.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data_dir = resolve_data_dir(args.data_dir)
    config = Config(epochs=args.epochs, seed=0)
    load_euro(data_dir)  # read the CSVs before timing either loop
    baseline = skeleton_loop(config, data_dir)
    ours = objective_loop(config, data_dir)
    print(f"skeleton DataLoader loop: {baseline:.2f} s/epoch")
    print(f"objectives.mlp loop:      {ours:.2f} s/epoch (includes decision-boundary map)")
    print(f"speed-up: {baseline / ours:.2f}x")


if __name__ == "__main__":
    main()
