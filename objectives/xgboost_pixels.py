"""XGBoost on raw pixels (Part B of the exercise).

Each image is resized to 224 (shorter side), centre-cropped to 64 and flattened to
3 x 64 x 64 = 12,288 values in [0, 1], as in the exercise. The defaults are ``XGBClassifier()``'s
(100 trees, depth 6, learning rate 0.3, no subsampling, lambda 1). Every ``report_every``
boosting rounds (and after the last) the objective reports train/val/test log loss and accuracy,
read from XGBoost's own evaluation log, and stops boosting when the runner asks (pruning).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import xgboost

from objectives.config import FRACTION, SEED, Range, at_least, check_config
from objectives.errors import ConfigError
from objectives.face_predictions import auc, binary_metrics, record_test_predictions
from objectives.faces_data import SPLITS, FaceSplit, load_split, xgboost_view
from objectives.reporter import Reporter
from objectives.runtime import Runtime

DATASET = "faces"
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc",
           "test_loss", "test_accuracy")
PIXELS = Range(1, 1024)  # resize and crop sizes


@dataclass(frozen=True)
class Config:
    """XGBoost settings (defaults: ``XGBClassifier()``) and the pixel input."""

    n_estimators: int = 100  # boosting rounds
    max_depth: int = 6  # 0: no limit (XGBoost's meaning)
    learning_rate: float = 0.3
    subsample: float = 1.0  # rows sampled per tree
    colsample_bytree: float = 1.0  # pixels sampled per tree
    min_child_weight: float = 1.0
    gamma: float = 0.0  # minimum loss reduction to split
    reg_lambda: float = 1.0  # L2 on leaf weights
    reg_alpha: float = 0.0  # L1 on leaf weights
    resize: int = 224  # shorter side before the crop
    crop: int = 64  # centre crop: crop x crop x 3 features
    report_every: int = 10  # rounds between reports (pruning checks)
    seed: int = 0  # XGBClassifier's default random_state
    train_on: Literal["train", "train+val"] = "train"  # train+val: final retraining only

    RANGES: ClassVar[Mapping[str, Range]] = {
        "n_estimators": at_least(1), "max_depth": at_least(0),  # 0: no depth limit
        "learning_rate": Range(0, 1, low_open=True), "subsample": FRACTION,
        "colsample_bytree": FRACTION, "min_child_weight": at_least(0), "gamma": at_least(0),
        "reg_lambda": at_least(0), "reg_alpha": at_least(0), "resize": PIXELS, "crop": PIXELS,
        "report_every": at_least(1), "seed": SEED,
    }

    def check(self) -> None:
        """The centre crop must fit in the resized image."""
        if self.crop > self.resize:
            raise ConfigError(f"'crop' must be <= 'resize' ({self.resize}), got {self.crop}")


def run(config: Config, reporter: Reporter, runtime: Runtime) -> dict[str, float]:
    """Boost on the training pixels and return the final metrics."""
    return fit(config, reporter, runtime)[1]


def fit(config: Config, reporter: Reporter, runtime: Runtime
        ) -> tuple[xgboost.XGBClassifier, dict[str, float]]:
    """``run`` that also returns the fitted ``XGBClassifier`` (for final retraining)."""
    check_config(config)
    view = xgboost_view(config.resize, config.crop)
    splits = {s: load_split(runtime.data_dir, s, view, runtime.cache_dir) for s in SPLITS}
    x = {s: pixels(splits[s]) for s in SPLITS}
    y = {s: splits[s].labels.numpy() for s in SPLITS}

    model = xgboost.XGBClassifier(
        n_estimators=config.n_estimators, max_depth=config.max_depth,
        learning_rate=config.learning_rate, subsample=config.subsample,
        colsample_bytree=config.colsample_bytree, min_child_weight=config.min_child_weight,
        gamma=config.gamma, reg_lambda=config.reg_lambda, reg_alpha=config.reg_alpha,
        random_state=config.seed, n_jobs=_threads(),
        device="cuda" if runtime.device.startswith("cuda") else "cpu",
        eval_metric=["logloss", "error"], callbacks=[_ReportCallback(reporter, config)])
    x_fit, y_fit = x["train"], y["train"]
    if config.train_on == "train+val":  # validation metrics are then not held out
        x_fit, y_fit = np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"],
                                                                               y["val"]])
    model.fit(x_fit, y_fit, eval_set=[(x[s], y[s]) for s in SPLITS], verbose=False)

    metrics: dict[str, float] = {}
    probs = {s: model.predict_proba(x[s])[:, 1] for s in SPLITS}
    for s in SPLITS:
        metrics.update(binary_metrics(s, y[s], probs[s]))
    metrics["val_auc"] = auc(y["val"], probs["val"])
    reporter.log("rounds", int(model.get_booster().num_boosted_rounds()))
    record_test_predictions(reporter, splits["test"].paths, y["test"], probs["test"])
    return model, {key: metrics[key] for key in METRICS}


def pixels(split: FaceSplit) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 3*H*W) float32 in [0, 1] (ToTensor, then flatten)."""
    return (split.images.reshape(split.images.shape[0], -1).numpy() / np.float32(255.0)
            ).astype(np.float32)


def _threads() -> int:
    import torch

    return torch.get_num_threads()  # the runner's per-worker thread count


class _ReportCallback(xgboost.callback.TrainingCallback):
    """Report every ``report_every`` rounds from XGBoost's eval log; stop when asked."""

    def __init__(self, reporter: Reporter, config: Config):
        super().__init__()
        self.reporter = reporter
        self.every = config.report_every
        self.last = config.n_estimators - 1

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        if (epoch + 1) % self.every and epoch != self.last:
            return False
        metrics = {}
        for index, split in enumerate(SPLITS):
            log = evals_log[f"validation_{index}"]
            metrics[f"{split}_loss"] = float(log["logloss"][-1])
            metrics[f"{split}_accuracy"] = 1.0 - float(log["error"][-1])
        self.reporter.report(epoch, metrics)
        return bool(self.reporter.should_stop())
