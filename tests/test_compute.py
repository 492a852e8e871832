"""The compute ledger: a trial's FLOP estimate against a hand computation, on the course CSVs,
the same for a lane as for a single run, and summed over a trial's seeds."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from cli_helpers import run_cli

from objectives.euro_data import load_euro
from objectives.mlp import BOUNDARY_GRID, Config, fit
from objectives.mlp_lanes import LaneTask, train_lanes
from objectives.reporter import RecordingReporter
from objectives.runtime import Runtime


def hand_flops(config: Config, n_train: int, n_eval: int) -> float:
    """2 FLOPs per multiply-add of each Linear; training = forward + 2x backward."""
    widths = [2] + [config.width] * config.depth + [33]  # raw (long, lat) in, 33 countries out
    forward = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    assert forward == 2 * (2 * 16 + 16 * 16 + 16 * 33)  # the d2 w16 MLP: 1,632 per sample
    return forward * (3 * config.epochs * n_train + config.epochs * n_eval + BOUNDARY_GRID ** 2)


def test_mlp_ledger_matches_a_hand_computation(data_dir: Path) -> None:
    torch.set_num_threads(1)
    runtime = Runtime(data_dir=data_dir, device="cpu")
    config = Config(depth=2, width=16, epochs=2, train_fraction=0.05)
    data = load_euro(data_dir)
    n_train = int(len(data.x_train) * 0.05)
    n_eval = len(data.x_val) + len(data.x_test)
    single = RecordingReporter()
    fit(config, single, runtime)
    ledger = single.logs["compute"]
    assert ledger["flops"] == hand_flops(config, n_train, n_eval)
    assert ledger["train_samples"] == 2 * n_train
    assert 0 < ledger["train_seconds"] < 60
    lane = RecordingReporter()  # a lane counts its own (unpadded) model, as a single run does
    train_lanes([LaneTask(config, lane), LaneTask(Config(depth=6, width=64, epochs=2,
                                                         train_fraction=0.05),
                                                  RecordingReporter())],
                runtime, lambda end: None)
    assert lane.logs["compute"]["flops"] == ledger["flops"]


def test_a_trial_over_seeds_records_every_seeds_compute(data_dir: Path,
                                                        storage_url: str) -> None:
    result = run_cli("--study", "mlp_demo", "--trials", "1", "--seeds", "2", "--storage",
                     storage_url, "--data-dir", str(data_dir), "--no-progress",
                     "--set", "epochs=1", "--set", "train_fraction=0.02")
    assert result.returncode == 0, result.stderr
    trial = optuna.load_study(study_name="mlp_demo", storage=storage_url).trials[0]
    per_sample = trial.user_attrs["compute"]["forward_flops_per_sample"]
    data = load_euro(data_dir)
    n_train = int(len(data.x_train) * 0.02)
    n_eval = len(data.x_val) + len(data.x_test)
    one_seed = per_sample * (3 * n_train + n_eval + BOUNDARY_GRID ** 2)
    assert trial.user_attrs["compute"]["flops"] == pytest.approx(2 * one_seed)
