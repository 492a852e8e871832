"""The MLP objective on the real Euro CSVs (small subsets, few epochs)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from objectives.errors import ConfigError, DivergedError
from objectives.mlp import MLP, Config, run
from objectives.reporter import RecordingReporter
from objectives.runtime import Runtime

QUICK = dict(epochs=2, train_fraction=0.02, seed=0)


def test_depth_counts_hidden_layers():
    model = MLP(2, Config(depth=6, width=16))
    assert len(model.linear_layers()) == 7
    assert model.linear_layers()[0].in_features == 2
    assert model.linear_layers()[-1].out_features == 33


def test_batch_norm_sits_before_the_activation():
    model = MLP(2, Config(depth=3, width=8, batch_norm=True))
    for block in model.blocks:
        kinds = [type(layer) for layer in block]
        assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU]


def test_residual_blocks_keep_shapes():
    model = MLP(20, Config(depth=5, width=4, residual=True))
    out = model(torch.randn(7, 20))
    assert out.shape == (7, 33)


def test_residual_adds_the_block_input():
    config = Config(depth=2, width=4, residual=True)
    model = MLP(2, config)
    x = torch.randn(3, 2)
    first = model.blocks[0](x)
    expected = model.head(first + model.blocks[1](first))
    assert torch.allclose(model(x), expected)


def test_run_reports_every_epoch_and_returns_metrics(data_dir):
    reporter = RecordingReporter()
    metrics = run(Config(**QUICK), reporter, Runtime(data_dir=data_dir))
    assert reporter.steps == [0, 1]
    for key in ("train_loss", "val_accuracy", "test_accuracy", "epoch_seconds", "iterations"):
        assert len(reporter.history[key]) == 2
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    losses = np.load(io.BytesIO(reporter.artifacts["batch_losses.npy"]))
    assert len(losses) == 2 * reporter.history["iterations"][0]
    boundary = np.load(io.BytesIO(reporter.artifacts["decision_boundary.npz"]))
    assert boundary["grid_classes"].shape == (len(boundary["lats"]), len(boundary["longs"]))
    assert len(boundary["test_labels"]) == 13_363


def test_iterations_per_epoch_follow_batch_size(data_dir):
    reporter = RecordingReporter()
    run(Config(epochs=1, batch_size=1024, depth=1), reporter, Runtime(data_dir=data_dir))
    assert reporter.history["iterations"] == [105.0]  # ceil(106,897 / 1024)


def test_same_seed_gives_same_result(data_dir):
    first = run(Config(**QUICK), RecordingReporter(), Runtime(data_dir=data_dir))
    second = run(Config(**QUICK), RecordingReporter(), Runtime(data_dir=data_dir))
    assert first == second


def test_gradient_norms_recorded_for_monitored_layers(data_dir):
    reporter = RecordingReporter()
    config = Config(depth=10, width=16, monitor_layers=(0, 5, 10), **QUICK)
    run(config, reporter, Runtime(data_dir=data_dir))
    for layer in (0, 5, 10):
        values = reporter.history[f"grad_sq_norm_layer{layer}"]
        assert len(values) == 2 and all(v > 0 for v in values)


def test_monitor_layer_out_of_range_is_a_config_error(data_dir):
    with pytest.raises(ConfigError, match="monitor_layers"):
        run(Config(depth=2, monitor_layers=(5,), **QUICK), RecordingReporter(),
            Runtime(data_dir=data_dir))


def test_divergence_raises_with_reason(data_dir):
    config = Config(optimizer="sgd", lr=1e6, momentum=0.0, **QUICK)
    with pytest.raises(DivergedError, match="loss became"):
        run(config, RecordingReporter(), Runtime(data_dir=data_dir))


def test_implicit_features_train(data_dir):
    reporter = RecordingReporter()
    run(Config(features="implicit", **QUICK), reporter, Runtime(data_dir=data_dir))
    assert len(reporter.history["val_accuracy"]) == 2
