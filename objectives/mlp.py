"""MLPs on the Euro points (Part A of the exercise).

``run(config, reporter, runtime)`` trains one MLP and returns its final metrics; ``fit`` does the
same and also returns the trained model (final retraining saves its weights). The loop keeps
the data as tensors on the device and takes batches as index slices of a shuffled permutation
(no per-item DataLoader), evaluates in large no-grad batches, and reports per epoch:
train/validation/test loss and accuracy, seconds and iterations, plus the mean squared gradient
norm of monitored layers. Per-batch losses and the decision-boundary map go to artifacts,
with PNG previews of them and of the learning curves.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from objectives.compute import ComputeLedger, forward_flops
from objectives.config import FRACTION, MOMENTUM, SEED, Range, above, at_least, check_config
from objectives.errors import ConfigError, DivergedError
from objectives.euro_data import (
    CAPITALS,
    COUNTRY_NAMES,
    NUM_CLASSES,
    EuroData,
    load_euro,
    make_features,
)
from objectives.previews import class_map_png, curves_png
from objectives.reporter import Reporter
from objectives.runtime import Runtime

DATASET = "euro"
METRICS = (
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
)
EVAL_BATCH_SIZE = 16_384  # no-grad evaluation batches; results do not depend on it
BOUNDARY_GRID = 300  # decision-boundary map resolution per axis
PREVIEW_POINTS = 2000  # at most this many points in the per-batch loss preview


@dataclass(frozen=True)
class Config:
    """Hyperparameters of one MLP run (defaults: the exercise's skeleton)."""

    depth: int = 6  # hidden layers; depth 6 builds 7 nn.Linear
    width: int = 16  # units per hidden layer
    batch_norm: bool = False  # BatchNorm1d before each hidden activation
    residual: bool = False  # skip connections between hidden layers of equal width
    features: Literal["raw", "implicit"] = "raw"  # implicit: sin(a*x), a in 0.1..1.0
    standardize: bool = False  # standardise long/lat with the training split's mean/std
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 0.001
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    epochs: int = 50
    batch_size: int = 256
    seed: int = 42
    monitor_layers: tuple[int, ...] = ()  # Linear layers whose gradient norms are recorded
    train_fraction: float = 1.0  # use a seeded subset of the training split (quick runs)
    # train_loss/train_accuracy are the running means over the epoch's training batches (as
    # the exercise's skeleton computes them); train_eval adds a no-grad pass over the training
    # split after each epoch, recorded as train_eval_loss/train_eval_accuracy.
    train_eval: bool = False
    # train+val: also train on the validation split (final retraining only; val_* metrics
    # are then not held-out scores)
    train_on: Literal["train", "train+val"] = "train"

    RANGES: ClassVar[Mapping[str, Range]] = {
        "depth": at_least(1), "width": at_least(1), "lr": above(0), "momentum": MOMENTUM,
        "weight_decay": at_least(0), "epochs": at_least(1), "batch_size": at_least(1),
        "seed": SEED, "train_fraction": FRACTION,
    }

    def check(self) -> None:
        """Rules on several keys: monitored layers exist, BatchNorm gets batches of 2+."""
        layers = self.depth + 1  # depth hidden Linear layers and the output layer
        bad = [i for i in self.monitor_layers if not -layers <= i < layers]
        if bad:
            raise ConfigError(f"'monitor_layers' must be in [{-layers}, {layers - 1}] (depth "
                              f"{self.depth} has {layers} Linear layers), got {bad[0]}")
        if self.batch_norm and self.batch_size < 2:
            raise ConfigError(f"'batch_size' must be >= 2 with batch_norm (BatchNorm1d cannot "
                              f"train on one example), got {self.batch_size}")


class MLP(nn.Module):
    """``depth`` hidden blocks of Linear (+ BatchNorm) + ReLU, then a Linear output layer.

    With ``residual``, each hidden block whose input and output widths match adds its input
    to its output (the first block maps the input features to ``width`` and cannot).
    """

    def __init__(self, in_features: int, config: Config, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.residual = config.residual
        self.blocks = nn.ModuleList()
        width_in = in_features
        for _ in range(config.depth):
            layers: list[nn.Module] = [nn.Linear(width_in, config.width)]
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(config.width))
            layers.append(nn.ReLU())
            self.blocks.append(nn.Sequential(*layers))
            width_in = config.width
        self.head = nn.Linear(width_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            out = block(x)
            x = x + out if self.residual and out.shape == x.shape else out
        return self.head(x)

    def linear_layers(self) -> list[nn.Linear]:
        """The Linear layers in order: index 0 is the input layer, the last is the output."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)]


def run(config: Config, reporter: Reporter, runtime: Runtime) -> dict[str, float]:
    """Train one MLP on the Euro data and return its final metrics."""
    return fit(config, reporter, runtime)[1]


def fit(config: Config, reporter: Reporter, runtime: Runtime) -> tuple[MLP, dict[str, float]]:
    """Train one MLP on the Euro data; return the trained model and its final metrics."""
    check_config(config)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = torch.device(runtime.device)
    data = load_euro(runtime.data_dir)
    if data.synthetic:
        reporter.log("synthetic_data", True)
    tensors = _to_tensors(data, config, device)
    x_train, y_train = tensors["train"]

    model = MLP(x_train.shape[1], config).to(device)
    linears = model.linear_layers()
    optimizer = _make_optimizer(model, config)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator(device="cpu").manual_seed(config.seed)

    n_train = x_train.shape[0]
    ledger = ComputeLedger(forward_flops(model, x_train[:1]))
    batch_losses: list[np.ndarray] = []
    metrics: dict[str, float] = {}
    history: dict[str, list[float]] = {}
    stopped = False  # the reporter ended the run before its last epoch
    for epoch in range(config.epochs):
        start = time.perf_counter()
        model.train()
        # Batches are slices of one shuffled permutation: no per-item DataLoader overhead.
        order = torch.randperm(n_train, generator=generator).to(device)
        epoch_losses = torch.empty(math.ceil(n_train / config.batch_size), device=device)
        epoch_correct = torch.zeros((), device=device)
        grad_sums = torch.zeros(len(config.monitor_layers), device=device)
        for step, first in enumerate(range(0, n_train, config.batch_size)):
            index = order[first:first + config.batch_size]
            logits = model(x_train[index])
            loss = loss_fn(logits, y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for slot, layer in enumerate(config.monitor_layers):
                grad_sums[slot] += linears[layer].weight.grad.pow(2).sum()
            optimizer.step()
            epoch_losses[step] = loss.detach()
            epoch_correct += (logits.detach().argmax(1) == y_train[index]).sum()
        losses = epoch_losses.cpu().numpy()
        batch_losses.append(losses)
        if not np.isfinite(losses).all():
            first_bad = int(np.argmin(np.isfinite(losses)))
            reporter.save_artifact("batch_losses.npy", _npy(np.concatenate(batch_losses)))
            raise DivergedError(f"loss became {losses[first_bad]} at epoch {epoch} "
                                f"batch {first_bad} (lr={config.lr})")
        seconds = time.perf_counter() - start

        # The exercise's train metrics: running means over this epoch's batches, free.
        metrics = {"train_loss": float(losses.mean()),
                   "train_accuracy": float(epoch_correct) / n_train}
        metrics.update(_evaluate(model, {split: tensors[split] for split in ("val", "test")},
                                 loss_fn))
        if config.train_eval:
            evaluated = _evaluate(model, {"train": tensors["train"]}, loss_fn)
            metrics.update(train_eval_loss=evaluated["train_loss"],
                           train_eval_accuracy=evaluated["train_accuracy"])
        metrics.update(epoch_seconds=seconds, iterations=float(len(losses)))
        ledger.add(train=n_train, seconds=seconds, evaluated=sum(
            tensors[split][0].shape[0] for split in ("val", "test"))
            + (n_train if config.train_eval else 0))
        grad_means = (grad_sums / len(losses)).cpu().numpy()
        for layer, value in zip(config.monitor_layers, grad_means, strict=True):
            metrics[f"grad_sq_norm_layer{layer}"] = float(value)
        reporter.report(epoch, metrics)
        for key, value in metrics.items():
            history.setdefault(key, []).append(value)
        stopped = reporter.should_stop()
        if stopped:
            break

    all_losses = np.concatenate(batch_losses)
    reporter.save_artifact("batch_losses.npy", _npy(all_losses))
    boundary = _decision_boundary(model, data, config, tensors, device)
    reporter.save_artifact("decision_boundary.npz", _npz(boundary))
    ledger.add(evaluated=BOUNDARY_GRID ** 2)
    reporter.log("compute", ledger.as_dict())
    if runtime.draws_previews(stopped):
        _save_previews(reporter, history, all_losses, boundary)
    return model, {key: metrics[key] for key in METRICS}


def _to_tensors(data: EuroData, config: Config, device: torch.device
                ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    x_train, y_train = data.x_train, data.y_train
    if config.train_fraction < 1.0:
        keep = np.random.default_rng(config.seed).permutation(len(x_train))
        keep = np.sort(keep[: max(1, int(len(x_train) * config.train_fraction))])
        x_train, y_train = x_train[keep], y_train[keep]
    if config.train_on == "train+val":
        x_train = np.concatenate([x_train, data.x_val])
        y_train = np.concatenate([y_train, data.y_val])
    mean, std = _standardizer(data, config)
    splits = {"train": (x_train, y_train), "val": (data.x_val, data.y_val),
              "test": (data.x_test, data.y_test)}
    return {name: (torch.from_numpy(make_features(x, config.features, mean, std)).to(device),
                   torch.from_numpy(y).to(device))
            for name, (x, y) in splits.items()}


def _standardizer(data: EuroData, config: Config) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not config.standardize:
        return None, None
    return data.x_train.mean(0), data.x_train.std(0)


def _make_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


@torch.no_grad()
def _evaluate(model: nn.Module, tensors: dict[str, tuple[torch.Tensor, torch.Tensor]],
              loss_fn: nn.Module) -> dict[str, float]:
    model.eval()
    out = {}
    for split, (x, y) in tensors.items():
        loss_sum, correct = 0.0, 0
        for first in range(0, x.shape[0], EVAL_BATCH_SIZE):
            logits = model(x[first:first + EVAL_BATCH_SIZE])
            target = y[first:first + EVAL_BATCH_SIZE]
            loss_sum += float(loss_fn(logits, target)) * target.shape[0]
            correct += int((logits.argmax(1) == target).sum())
        out[f"{split}_loss"] = loss_sum / x.shape[0]
        out[f"{split}_accuracy"] = correct / x.shape[0]
    return out


@torch.no_grad()
def _decision_boundary(model: nn.Module, data: EuroData, config: Config,
                       tensors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       device: torch.device) -> dict[str, np.ndarray]:
    """The class predicted on a fixed grid over the map, with the test points."""
    model.eval()
    everything = np.concatenate([data.x_train, data.x_val, data.x_test])
    low, high = everything.min(0) - 1.0, everything.max(0) + 1.0
    longs = np.linspace(low[0], high[0], BOUNDARY_GRID, dtype=np.float32)
    lats = np.linspace(low[1], high[1], BOUNDARY_GRID, dtype=np.float32)
    grid = np.stack(np.meshgrid(longs, lats), axis=-1).reshape(-1, 2)
    mean, std = _standardizer(data, config)
    features = torch.from_numpy(make_features(grid, config.features, mean, std)).to(device)
    predicted = torch.cat([model(features[i:i + EVAL_BATCH_SIZE]).argmax(1)
                           for i in range(0, features.shape[0], EVAL_BATCH_SIZE)])
    test_predicted = torch.cat([model(tensors["test"][0][i:i + EVAL_BATCH_SIZE]).argmax(1)
                                for i in range(0, tensors["test"][0].shape[0], EVAL_BATCH_SIZE)])
    return dict(
        longs=longs, lats=lats,
        grid_classes=predicted.cpu().numpy().astype(np.uint8).reshape(len(lats), len(longs)),
        test_points=data.x_test, test_labels=data.y_test.astype(np.uint8),
        test_predicted=test_predicted.cpu().numpy().astype(np.uint8),
    )


def _save_previews(reporter: Reporter, history: dict[str, list[float]], batch_losses: np.ndarray,
                   boundary: dict[str, np.ndarray]) -> None:
    """PNG previews that optuna-dashboard shows on the trial's page and in its note."""
    for kind in ("loss", "accuracy"):
        curves = {"train (running mean)": history[f"train_{kind}"],
                  "validation": history[f"val_{kind}"], "test": history[f"test_{kind}"]}
        reporter.save_artifact(f"{kind}_curves.png", curves_png(
            curves, f"{kind} per epoch", "epoch", kind))
    block = max(1, math.ceil(len(batch_losses) / PREVIEW_POINTS))
    means = np.resize(batch_losses, math.ceil(len(batch_losses) / block) * block)
    means = means.reshape(-1, block).mean(1) if block > 1 else batch_losses
    name = "train loss" if block == 1 else f"train loss, means of {block} batches"
    reporter.save_artifact("batch_losses.png", curves_png(
        {name: means}, "training loss per batch", "batch", "cross-entropy loss", x_step=block))
    wrong = boundary["test_predicted"] != boundary["test_labels"]
    reporter.save_artifact("decision_boundary.png", class_map_png(
        boundary["grid_classes"], boundary["longs"], boundary["lats"], boundary["test_points"],
        wrong, NUM_CLASSES, names=COUNTRY_NAMES, places=[(x, y) for _, x, y in CAPITALS]))


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32))
    return buffer.getvalue()
