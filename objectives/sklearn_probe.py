"""The sklearn linear probe (the exercise's bonus): ``LogisticRegression`` on frozen features.

The pretrained backbone's features of each split come from the shared feature cache
(``objectives.face_features``), so this costs one backbone pass per split the first time and
a logistic-regression fit afterwards. Defaults are sklearn's ``LogisticRegression()``;
``C`` and ``max_iter`` can be searched. Reports once (step 0) and keeps the test predictions.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from objectives.backbones import check_weights
from objectives.config import SEED, Range, above, at_least, check_config
from objectives.face_features import load_features
from objectives.face_predictions import auc, binary_metrics, record_test_predictions
from objectives.reporter import Reporter
from objectives.resnet import IMAGE_SIZE
from objectives.runtime import Runtime

DATASET = "faces"
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc",
           "test_loss", "test_accuracy")


@dataclass(frozen=True)
class Config:
    """Settings of one sklearn probe (defaults: ``LogisticRegression()`` on ResNet18 features)."""

    backbone: Literal["resnet18", "efficientnet_lite0"] = "resnet18"
    weights: str | None = None  # local pretrained weights file (default: see backbones.py)
    image_size: int = 224
    C: float = 1.0  # inverse regularisation strength (sklearn's default)
    max_iter: int = 100  # lbfgs iterations (sklearn's default)
    seed: int = 42  # recorded for provenance; lbfgs is deterministic
    train_on: Literal["train", "train+val"] = "train"  # train+val: final retraining only

    RANGES: ClassVar[Mapping[str, Range]] = {
        "image_size": IMAGE_SIZE, "C": above(0), "max_iter": at_least(1), "seed": SEED,
    }


def preflight(config: Config, runtime: Runtime) -> None:
    """Before any trial: the settings fit and the backbone's pretrained weights are available."""
    check_config(config)
    check_weights(config.backbone, config.weights)


def run(config: Config, reporter: Reporter, runtime: Runtime) -> dict[str, float]:
    """Fit the probe on the training features and return its metrics on every split."""
    return fit(config, reporter, runtime)[1]


def fit(config: Config, reporter: Reporter, runtime: Runtime) -> tuple[Any, dict[str, float]]:
    """``run`` that also returns the fitted ``LogisticRegression`` (for final retraining)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    check_config(config)
    splits, origin = load_features(runtime.data_dir, config.backbone, config.weights,
                                   config.image_size, runtime.device, runtime.cache_dir)
    reporter.log("feature_cache", origin)
    x = {name: s.features.numpy().astype(np.float64) for name, s in splits.items()}
    y = {name: s.split.labels.numpy() for name, s in splits.items()}

    if (config.C, config.max_iter) == (1.0, 100):
        model = LogisticRegression()  # exactly the exercise's call
    else:
        model = LogisticRegression(C=config.C, max_iter=config.max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(*_training_set(x, y, config.train_on))
    reporter.log("converged", not any(issubclass(w.category, ConvergenceWarning)
                                      for w in caught))

    metrics: dict[str, float] = {}
    probs = {}
    for name in ("train", "val", "test"):
        probs[name] = model.predict_proba(x[name])[:, 1]
        metrics.update(binary_metrics(name, y[name], probs[name]))
    metrics["val_auc"] = auc(y["val"], probs["val"])
    reporter.report(0, metrics)
    record_test_predictions(reporter, splits["test"].split.paths, y["test"], probs["test"])
    return model, {key: metrics[key] for key in METRICS}


def _training_set(x: dict[str, np.ndarray], y: dict[str, np.ndarray], train_on: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    if train_on == "train+val":  # validation metrics are then not held out
        return np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]])
    return x["train"], y["train"]
