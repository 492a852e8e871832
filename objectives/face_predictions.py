"""Binary metrics of the face models and the record of their test predictions.

Every face trial keeps all its test predictions as the artifact ``test_predictions.json``
(``paths`` relative to ``faces/``, ``labels``, ``probs`` = predicted probability of fake) and
the wrong ones as the log ``test_errors`` (a list of ``{"path", "label", "prob"}``), so a report
can show images one model gets right and another wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from objectives.reporter import Reporter

PREDICTIONS_ARTIFACT = "test_predictions.json"
MAX_LOGGED_ERRORS = 1000
EPS = 1e-7


def binary_metrics(prefix: str, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``{prefix}_loss`` (binary cross-entropy) and ``{prefix}_accuracy`` (prob > 0.5)."""
    p = np.clip(probs.astype(np.float64), EPS, 1 - EPS)
    y = labels.astype(np.float64)
    loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    accuracy = float(((probs > 0.5) == (labels == 1)).mean())
    return {f"{prefix}_loss": loss, f"{prefix}_accuracy": accuracy}


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, probs))


def record_test_predictions(reporter: Reporter, paths: Sequence[str], labels: np.ndarray,
                            probs: np.ndarray) -> None:
    """Save every test prediction as an artifact and log the wrong ones."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    payload = {"paths": list(paths), "labels": labels.tolist(),
               "probs": [round(float(p), 6) for p in probs]}
    reporter.save_artifact(PREDICTIONS_ARTIFACT, json.dumps(payload).encode())
    wrong = np.flatnonzero((probs > 0.5) != (labels == 1))
    reporter.log("test_errors", [
        {"path": paths[i], "label": int(labels[i]), "prob": round(float(probs[i]), 4)}
        for i in wrong[:MAX_LOGGED_ERRORS]])
