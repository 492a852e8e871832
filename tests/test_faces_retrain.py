"""Export and retrain the face objectives: XGBoost, the sklearn probe and a CNN probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.driver.runner import RunOptions, run_study
from search.export import export_study, load_exported
from search.retrain import RetrainOptions, retrain
from search.study.spec import load_study_spec

CASES = {
    "xgboost_defaults": ({"resize": 32, "crop": 16, "n_estimators": 10}, "model.json"),
    "sklearn_probe": ({"backbone": "efficientnet_lite0", "image_size": 32},
                      "model.safetensors"),
    "cnn_modes": ({"backbone": "efficientnet_lite0", "image_size": 32, "train_fraction": 0.25},
                  "model.safetensors"),
}


@pytest.mark.parametrize("study", list(CASES))
def test_face_trial_retrains_exactly_and_saves_weights(study, data_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HPSEARCH_OFFLINE", "1")
    overrides, weights_file = CASES[study]
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    cache = tmp_path / "cache"
    spec = load_study_spec(study).with_overrides(fixed=overrides)
    run_study(spec, RunOptions(n_trials=1, data_dir=data_dir, storage_url=storage, seed=1,
                               device="cpu", cache_dir=cache, progress=False))
    (path,) = export_study(study, storage, top=1, out=tmp_path / "configs")
    exported = load_exported(path)

    options = RetrainOptions(data_dir=data_dir, out=tmp_path / "runs", device="cpu",
                             cache_dir=cache, progress=False)
    run_dir, summary = retrain(exported, options)
    assert abs(summary["reproduction"]["difference"]) < 1e-6, summary["reproduction"]
    assert (run_dir / f"seed{exported.config.seed}" / weights_file).is_file()

    options = RetrainOptions(data_dir=data_dir, out=tmp_path / "runs-tv", device="cpu",
                             cache_dir=cache, progress=False, train_on="train+val")
    run_dir, summary = retrain(exported, options)
    assert summary["train_on"] == "train+val"
    assert json.loads((run_dir / "summary.json").read_text())["reproduction"] is None
