"""XGBoost, the sklearn probe and the CNN grid through ``python -m search.run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, download_artifact

from objectives import get_objective
from objectives.runtime import Runtime
from search.records.storage import artifact_dir_for
from tests.cli_helpers import assert_one_line_error
from tests.reporters import StopAfter

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPSEARCH_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "search.run", "--no-progress", "--threads", "1",
         "--cache-dir", str(cache_dir), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def trials_of(storage_url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage_url).trials


def test_xgboost_defaults_run_through_the_cli(data_dir: Path, storage_url: str, tmp_path: Path):
    result = run_cli("--study", "xgboost_defaults", "--storage", storage_url,
                     "--data-dir", str(data_dir), "--set", "resize=32", "--set", "crop=16",
                     "--set", "n_estimators=20", cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    (trial,) = trials_of(storage_url, "xgboost_defaults")
    assert trial.state.name == "COMPLETE"
    assert trial.user_attrs["rounds"] == 20
    assert sorted(trial.intermediate_values) == [9, 19]  # a report every 10 rounds
    assert trial.user_attrs["metrics"]["test_accuracy"] > 0.6
    store = FileSystemArtifactStore(str(artifact_dir_for(storage_url)))
    target = tmp_path / "predictions.json"
    download_artifact(artifact_store=store, file_path=str(target),
                      artifact_id=trial.user_attrs["artifacts"]["test_predictions.json"])
    saved = json.loads(target.read_text())
    assert len(saved["probs"]) == 160
    assert all((data_dir / "faces" / e["path"]).is_file() for e in trial.user_attrs["test_errors"])


def test_xgboost_stops_boosting_when_the_runner_asks(data_dir: Path, tmp_path: Path):
    objective = get_objective("xgboost")
    config = objective.make_config({"resize": 32, "crop": 16, "n_estimators": 200,
                                    "report_every": 5})
    reporter = StopAfter(2)
    objective.run(config, reporter, Runtime(data_dir=data_dir, cache_dir=tmp_path))
    assert reporter.steps == [4, 9]
    assert reporter.logs["rounds"] == 10


def test_sklearn_probe_runs_through_the_cli_and_reuses_features(data_dir: Path,
                                                                storage_url: str,
                                                                tmp_path: Path):
    args = ("--study", "sklearn_probe", "--storage", storage_url, "--data-dir", str(data_dir),
            "--set", "backbone=efficientnet_lite0", "--set", "image_size=32")
    result = run_cli(*args, "--trials", "2", cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    trials = trials_of(storage_url, "sklearn_probe")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert [t.user_attrs["feature_cache"] for t in trials] == ["computed", "memory"]
    assert all(t.user_attrs["metrics"]["val_accuracy"] > 0.6 for t in trials)
    result = run_cli(*args, "--trials", "1", cache_dir=tmp_path / "cache")  # a new process
    assert result.returncode == 0, result.stderr
    assert trials_of(storage_url, "sklearn_probe")[-1].user_attrs["feature_cache"] == "disk"


def test_missing_resnet18_weights_stop_the_cli_with_an_error(data_dir: Path, storage_url: str,
                                                             tmp_path: Path):
    result = run_cli("--study", "sklearn_probe", "--storage", storage_url,
                     "--data-dir", str(data_dir), "--set", "image_size=32",
                     "--set", f"weights={tmp_path / 'resnet18.pth'}",
                     cache_dir=tmp_path / "cache")
    assert_one_line_error(result, "resnet18.pth not found")
    assert optuna.get_all_study_names(storage_url) == []  # refused before any trial


def test_cnn_modes_refuses_to_start_without_resnet18_weights(data_dir: Path, storage_url: str,
                                                             tmp_path: Path):
    result = run_cli("--study", "cnn_modes", "--storage", storage_url, "--data-dir",
                     str(data_dir), "--set", f"weights={tmp_path / 'none.pth'}",
                     cache_dir=tmp_path / "cache")
    assert_one_line_error(result, "none.pth not found")
    assert optuna.get_all_study_names(storage_url) == []  # not even the scratch trials ran


@pytest.mark.slow
def test_cnn_modes_grid_runs_a_trial_through_the_cli(data_dir: Path, storage_url: str,
                                                      tmp_path: Path):
    result = run_cli("--study", "cnn_modes", "--storage", storage_url, "--data-dir",
                     str(data_dir), "--set", "backbone=efficientnet_lite0",
                     "--set", "image_size=32", "--set", "train_fraction=0.25",
                     "--trials", "2", "--seed", "0", cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    trials = trials_of(storage_url, "cnn_modes")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        assert trial.params["mode"] in ("scratch", "probe", "finetune")
        assert trial.user_attrs["config"]["lr"] == trial.params["lr"]
        assert list(trial.intermediate_values) == [0]
        assert "test_predictions.json" in trial.user_attrs["artifacts"]
