"""CNNs on the faces (Part B of the exercise): a backbone with a ``Linear(D, 1)`` head.

Modes:

- ``scratch``: a randomly initialised backbone, everything trains; input resized to
  ``image_size`` square, ToTensor, no normalisation (as in the exercise).
- ``probe``: the ImageNet-pretrained backbone is frozen and only the head trains. With
  ``probe_bn: eval`` (the default) the backbone runs in eval mode, so its features of each
  split are computed once and cached (``objectives.face_features``). With ``probe_bn: train``
  it runs in training mode, as in the exercise's skeleton: BatchNorm normalises with each
  batch's statistics and updates its running statistics on the faces (weights stay frozen),
  so every batch goes through the backbone.
- ``finetune``: the pretrained backbone and the head all train.

Pretrained modes use the backbone's own ImageNet transform. Loss is BCEWithLogits, accuracy
is sigmoid > 0.5. Per epoch the objective reports train loss/accuracy (the running mean over
the epoch's batches), validation and test loss/accuracy and validation AUC, then asks whether
to stop. At the end it keeps every test prediction (see ``objectives.face_predictions``) and
saves PNG previews: the learning curves and a grid of the misclassified test images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from objectives.backbones import FEATURE_DIMS, build_backbone, check_weights, input_view
from objectives.compute import ComputeLedger, forward_flops
from objectives.config import FRACTION, MOMENTUM, SEED, Range, above, at_least, check_config
from objectives.errors import ConfigError, DivergedError
from objectives.face_features import load_features
from objectives.face_predictions import auc, record_test_predictions
from objectives.faces_data import CLASSES, SPLITS, faces_dir, load_split, scratch_view, to_float
from objectives.previews import curves_png, image_grid_png
from objectives.reporter import Reporter
from objectives.runtime import Runtime

DATASET = "faces"
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc",
           "test_loss", "test_accuracy")
EVAL_BATCH = 128  # no-grad evaluation batches; results do not depend on it
PREVIEW_ERRORS = 16  # misclassified test images in the preview grid
THUMBNAIL = 128  # their largest side in pixels
IMAGE_SIZE = Range(32, 1024)  # backbones need 32+; the faces are 64x64, so more only costs memory


@dataclass(frozen=True)
class Config:
    """Hyperparameters of one face CNN run (defaults: the exercise's fine-tuning baseline)."""

    mode: Literal["scratch", "probe", "finetune"] = "finetune"
    backbone: Literal["resnet18", "efficientnet_lite0"] = "resnet18"
    weights: str | None = None  # local pretrained weights file (default: see backbones.py)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-4
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 32
    image_size: int = 224  # 224 as in the exercise; smaller for quick runs
    seed: int = 42
    train_fraction: float = 1.0  # train on a seeded subset of the training split (quick runs)
    train_on: Literal["train", "train+val"] = "train"  # train+val: final retraining only
    probe_bn: Literal["eval", "train"] = "eval"  # probe: the frozen backbone's BatchNorm mode

    RANGES: ClassVar[Mapping[str, Range]] = {
        "lr": above(0), "momentum": MOMENTUM, "weight_decay": at_least(0),
        "epochs": at_least(1), "batch_size": at_least(1), "image_size": IMAGE_SIZE,
        "seed": SEED, "train_fraction": FRACTION,
    }

    def check(self) -> None:
        """A trained backbone needs batches of two or more images (see ``fit``)."""
        if self.trains_batch_norm and self.batch_size < 2:
            raise ConfigError(f"'batch_size' must be >= 2 in mode {self.mode!r} (batches of one "
                              f"image are skipped, so nothing would train), got "
                              f"{self.batch_size}")

    @property
    def trains_batch_norm(self) -> bool:
        """Whether the backbone's BatchNorm sees training batches (all but the cached probe)."""
        return not (self.mode == "probe" and self.probe_bn == "eval")


class FaceNet(nn.Module):
    """A backbone producing ``feature_dim`` features, then ``Linear(feature_dim, 1)``."""

    def __init__(self, backbone: nn.Module, feature_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(1)


@dataclass
class Fitted:
    """What ``fit`` produced: the trained model, its final metrics and test probabilities.

    In the cached probe (``probe_bn: eval``) ``model.backbone`` is ``nn.Identity`` (the model
    maps cached features to logits); the frozen pretrained backbone is
    ``build_backbone(..., pretrained=True)``.
    """

    model: FaceNet
    metrics: dict[str, float]
    test_probs: np.ndarray


def run(config: Config, reporter: Reporter, runtime: Runtime) -> dict[str, float]:
    """Train one face model and return its final metrics."""
    return fit(config, reporter, runtime).metrics


def preflight(config: Config, runtime: Runtime) -> None:
    """Before any trial: check the settings and that pretrained weights can be had."""
    check_config(config)
    if config.mode != "scratch":
        check_weights(config.backbone, config.weights)


def fit(config: Config, reporter: Reporter, runtime: Runtime) -> Fitted:
    """Train one face model as ``config.mode`` says; see the module docstring."""
    check_config(config)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = torch.device(runtime.device)
    feature_dim = FEATURE_DIMS[config.backbone]

    if not config.trains_batch_norm:
        splits, origin = load_features(runtime.data_dir, config.backbone, config.weights,
                                       config.image_size, runtime.device, runtime.cache_dir)
        reporter.log("feature_cache", origin)
        data = {s: (splits[s].features, splits[s].split.labels) for s in SPLITS}
        paths = splits["test"].split.paths
        torch.manual_seed(config.seed)  # the head's init must not depend on a cache hit
        model = FaceNet(nn.Identity(), feature_dim).to(device)
        prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x.to(device)  # noqa: E731
    else:
        pretrained = config.mode != "scratch"
        backbone = build_backbone(config.backbone, pretrained=pretrained, weights=config.weights)
        view = (input_view(config.backbone, config.image_size) if pretrained
                else scratch_view(config.image_size))
        images = {s: load_split(runtime.data_dir, s, view, runtime.cache_dir) for s in SPLITS}
        data = {s: (images[s].images, images[s].labels) for s in SPLITS}
        paths = images["test"].paths
        torch.manual_seed(config.seed)
        model = FaceNet(backbone, feature_dim).to(device)
        prepare = lambda x: to_float(x.to(device), view)  # noqa: E731

    optimizer = _make_optimizer(model, config)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(config.seed)
    x_train, y_train = _subset(*data["train"], config)
    if config.train_on == "train+val":  # validation metrics are then not held out
        x_train = torch.cat([x_train, data["val"][0]])
        y_train = torch.cat([y_train, data["val"][1]])
    metrics: dict[str, float] = {}
    history: dict[str, list[float]] = {}  # per-epoch metrics, for the previews
    stopped = False  # the reporter ended the run before its last epoch
    test_probs = np.zeros(0)
    # A probe's frozen backbone runs forward only (its gradients stop at the head); cached
    # features count the head alone (their one-time extraction is not counted).
    ledger = ComputeLedger(forward_flops(model, prepare(x_train[:1])))
    n_eval = data["val"][0].shape[0] + data["test"][0].shape[0]
    for epoch in range(config.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(x_train.shape[0], generator=generator)
        loss_sum, correct = 0.0, 0
        for first in range(0, len(order), config.batch_size):
            index = order[first:first + config.batch_size]
            if len(index) == 1 and config.trains_batch_norm:
                continue  # BatchNorm cannot train on a last batch of one image at small sizes
            target = y_train[index].to(device).float()
            logits = model(prepare(x_train[index]))
            loss = loss_fn(logits, target)
            if not torch.isfinite(loss):
                raise DivergedError(f"loss became {float(loss)} at epoch {epoch} batch "
                                    f"{first // config.batch_size} (lr={config.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(index)
            correct += int(((logits.detach() > 0).float() == target).sum())
        seen = len(order) - (len(order) % config.batch_size == 1 and config.trains_batch_norm)
        metrics = {"train_loss": loss_sum / seen, "train_accuracy": correct / seen}
        seconds = time.perf_counter() - start
        for split in ("val", "test"):
            x, y = data[split]
            split_metrics, probs = _evaluate(model, x, y, prepare, split)
            metrics.update(split_metrics)
            if split == "val":
                metrics["val_auc"] = auc(y.numpy(), probs)
            else:
                test_probs = probs
        metrics["epoch_seconds"] = seconds
        if config.mode == "probe":
            ledger.add(evaluated=seen + n_eval, seconds=seconds)
        else:
            ledger.add(train=seen, evaluated=n_eval, seconds=seconds)
        reporter.report(epoch, metrics)
        for key, value in metrics.items():
            history.setdefault(key, []).append(value)
        stopped = reporter.should_stop()
        if stopped:
            break

    record_test_predictions(reporter, paths, data["test"][1].numpy(), test_probs)
    reporter.log("compute", ledger.as_dict())
    if runtime.draws_previews(stopped):
        _save_previews(reporter, history, runtime.data_dir, paths, data["test"][1].numpy(),
                       test_probs)
    return Fitted(model=model, metrics={k: metrics[k] for k in METRICS}, test_probs=test_probs)


def _save_previews(reporter: Reporter, history: dict[str, list[float]], data_dir: Path,
                   paths: Sequence[str], labels: np.ndarray, probs: np.ndarray) -> None:
    """PNG previews for the trial's page and note: the learning curves and the test images
    the model got most confidently wrong."""
    splits = {"train (running mean)": "train", "validation": "val", "test": "test"}
    for kind in ("loss", "accuracy"):
        curves = {name: history[f"{split}_{kind}"] for name, split in splits.items()}
        if kind == "accuracy":
            curves["validation AUC"] = history["val_auc"]
        reporter.save_artifact(f"{kind}_curves.png", curves_png(
            curves, f"{kind} per epoch", "epoch", "BCE loss" if kind == "loss" else kind))
    wrong = np.flatnonzero((probs > 0.5) != (labels == 1))
    if not len(wrong):
        return
    shown = wrong[np.argsort(-np.abs(probs[wrong] - 0.5), kind="stable")][:PREVIEW_ERRORS]
    images = [_thumbnail(faces_dir(data_dir) / paths[i]) for i in shown]
    captions = [f"is {CLASSES[labels[i]][2:]}, p(fake) {probs[i]:.2f}" for i in shown]
    reporter.save_artifact("test_errors.png", image_grid_png(
        images, captions, f"{len(shown)} of {len(wrong)} misclassified test images "
        f"(of {len(labels)}), most confident first"))


def _thumbnail(path: Path) -> np.ndarray:
    """The image at ``path`` as a (H, W, 3) uint8 array, at most THUMBNAIL pixels a side."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        return np.asarray(image)


def _subset(x: torch.Tensor, y: torch.Tensor, config: Config
            ) -> tuple[torch.Tensor, torch.Tensor]:
    if config.train_fraction >= 1.0:
        return x, y
    keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(config.seed))
    keep = keep[: max(1, int(x.shape[0] * config.train_fraction))].sort().values
    return x[keep], y[keep]


def _make_optimizer(model: FaceNet, config: Config) -> torch.optim.Optimizer:
    if config.mode == "probe":
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              prepare: Callable[[torch.Tensor], torch.Tensor], split: str
              ) -> tuple[dict[str, float], np.ndarray]:
    """Loss and accuracy of a split in eval mode, and its predicted probabilities of fake."""
    model.eval()
    logits = torch.cat([model(prepare(x[i:i + EVAL_BATCH])).float().cpu()
                        for i in range(0, x.shape[0], EVAL_BATCH)])
    target = y.float()
    loss = float(nn.functional.binary_cross_entropy_with_logits(logits, target))
    accuracy = float(((logits > 0).float() == target).float().mean())
    return {f"{split}_loss": loss, f"{split}_accuracy": accuracy}, torch.sigmoid(logits).numpy()
