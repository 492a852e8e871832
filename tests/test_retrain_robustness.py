"""Retraining checks the exported file first, keeps what finished, and never shares a folder."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import objectives.mlp
from objectives.errors import DivergedError
from search import retrain as retrain_module
from search.export import load_exported
from search.retrain import main, seed_configs

REPO = Path(__file__).resolve().parent.parent
QUICK = {"epochs": 1, "train_fraction": 0.05, "depth": 2, "width": 8, "seed": 0}


def exported_document(**config: Any) -> dict[str, Any]:
    """An exported MLP config as search.export writes it (short training)."""
    return {
        "objective": "mlp", "study": "mlp_demo", "trial": 3,
        "metric": {"name": "val_accuracy", "value": 0.5, "direction": "maximize"},
        "config": {**QUICK, **config},
        "params": {}, "metrics": {},
        "provenance": {"storage": "sqlite:///studies.db", "data_fingerprint": None},
    }


def write(path: Path, document: Any) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def retrain_args(path: Path, data_dir: Path, out: Path, *more: str) -> list[str]:
    return [str(path), "--data-dir", str(data_dir), "--out", str(out), "--device", "cpu",
            "--no-progress", *more]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _broken(change: str) -> Any:
    document = exported_document()
    if change == "not a mapping":
        return ["objective", "mlp"]
    target, _, key = change.rpartition(".")
    holder = document[target] if target else document
    value = BROKEN[change][0]
    if value is DELETE:
        del holder[key]
    else:
        holder[key] = value
    return document


DELETE = object()
BROKEN: dict[str, tuple[Any, str]] = {
    "metric.value": ("0.93 (best)", "'metric.value' must be a finite number"),
    "metric.name": ("val_f1", "'metric.name' must be a metric of objective 'mlp'"),
    "metric.direction": ("up", "'metric.direction' must be maximize or minimize"),
    "metric": ("val_accuracy", "'metric' must be a mapping with 'name'"),
    "provenance": (None, "'provenance' must be a mapping"),
    "provenance.data_fingerprint": (7, "'provenance.data_fingerprint' must be a string or null"),
    "config": (DELETE, "missing key 'config'"),
    "objective": (["mlp"], "'objective' must be a name such as mlp"),
    "study": (dt.date(2024, 1, 1), "'study' must be a study name"),
    "trial": ("three", "'trial' must be a trial number"),
    "not a mapping": (None, "an exported config must be a mapping"),
}
CONFIG_BROKEN = {
    "config is a list": ([1, 2], "'config' must be a mapping of config keys to values"),
    "config is null": (None, "'config' must be a mapping of config keys to values"),
    "epochs=0": ({**QUICK, "epochs": 0}, "config: 'epochs' must be >= 1, got 0"),
    "lr=nan": ({**QUICK, "lr": float("nan")}, "config: 'lr' must be a finite number, got nan"),
}


@pytest.mark.parametrize("change", list(BROKEN))
def test_a_broken_exported_file_is_one_line_before_any_training(
        change: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path / "broken.yaml", _broken(change))
    assert main(retrain_args(path, data_dir, tmp_path / "runs")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path}: ") and BROKEN[change][1] in line, line
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder


@pytest.mark.parametrize("change", list(CONFIG_BROKEN))
def test_a_broken_config_in_the_file_is_one_line_before_any_training(
        change: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    document = {**exported_document(), "config": CONFIG_BROKEN[change][0]}
    path = write(tmp_path / "broken.yaml", document)
    assert main(retrain_args(path, data_dir, tmp_path / "runs")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert CONFIG_BROKEN[change][1] in line, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("content", "message"), [
    (b"objective: [mlp\n", "not valid YAML"),
    (b"", "an exported config must be a mapping"),
    (b"\xff\xfe\x00binary", "cannot be read as a YAML file"),
])
def test_an_unreadable_exported_file_is_one_line(content: bytes, message: str, data_dir: Path,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.yaml"
    path.write_bytes(content)
    assert main(retrain_args(path, data_dir, tmp_path / "runs")) == 1
    assert message in one_error_line(capsys.readouterr().err)


def test_the_real_cli_refuses_a_null_provenance(data_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", {**exported_document(), "provenance": None})
    done = subprocess.run([sys.executable, "-m", "search.retrain",
                           *retrain_args(path, data_dir, tmp_path / "runs")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "'provenance' must be a mapping" in one_error_line(done.stderr)
    assert not (tmp_path / "runs").exists()


def test_missing_pretrained_weights_stop_before_the_run_folder(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    document = {**exported_document(), "objective": "sklearn_probe",
                "config": {"weights": str(tmp_path / "none.pth"), "image_size": 32}}
    path = write(tmp_path / "probe.yaml", document)
    assert main(retrain_args(path, data_dir, tmp_path / "runs")) == 1
    assert "none.pth not found" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_a_diverging_retrain_ends_with_one_line_and_keeps_its_record(data_dir: Path,
                                                                     tmp_path: Path) -> None:
    document = exported_document(optimizer="sgd", lr=1e6, momentum=0.0, depth=6, width=16)
    path = write(tmp_path / "diverges.yaml", document)
    done = subprocess.run([sys.executable, "-m", "search.retrain",
                           *retrain_args(path, data_dir, tmp_path / "runs", "--seeds", "2")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    line = one_error_line(done.stderr)
    assert line.startswith("error: every seed failed: seed 0 diverged: loss became"), line
    assert "seed 1 diverged" in line and "Traceback" not in done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [f["seed"] for f in summary["failed"]] == [0, 1] and summary["seeds"] == []
    record = json.loads((run_dir / "seed0" / "metrics.json").read_text())
    assert record["error"].startswith("diverged: loss became") and record["weights"] is None
    assert (run_dir / "seed0" / "batch_losses.npy").is_file()  # what it made is kept


def test_a_seed_that_diverges_leaves_the_others_summarised(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_fit = objectives.mlp.fit

    def fit(config: Any, reporter: Any, runtime: Any) -> Any:
        if config.seed == 1:
            raise DivergedError("loss became nan at epoch 0 batch 3 (lr=0.001)")
        return real_fit(config, reporter, runtime)

    monkeypatch.setattr(objectives.mlp, "fit", fit)
    path = write(tmp_path / "ok.yaml", exported_document())
    assert main(retrain_args(path, data_dir, tmp_path / "runs", "--seeds", "3",
                             "--no-lanes")) == 1
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert line == ("error: seed 1 diverged: loss became nan at epoch 0 batch 3 (lr=0.001); "
                    "the summary covers the 2 other seed(s) [0, 2]"), line
    assert "2 seed(s) [0, 2]" in out and "test_accuracy" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seeds"] == [0, 2] and summary["failed"][0]["seed"] == 1
    assert len(summary["metrics"]["test_accuracy"]["values"]) == 2
    assert summary["reproduction"]["seed"] == 0
    assert sorted(p.parent.name for p in run_dir.glob("seed*/model.safetensors")) == [
        "seed0", "seed2"]


def test_an_error_mid_run_still_summarises_the_finished_seeds(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_fit = objectives.mlp.fit

    def fit(config: Any, reporter: Any, runtime: Any) -> Any:
        if config.seed == 1:
            raise KeyboardInterrupt
        return real_fit(config, reporter, runtime)

    monkeypatch.setattr(objectives.mlp, "fit", fit)
    path = write(tmp_path / "ok.yaml", exported_document())
    assert main(retrain_args(path, data_dir, tmp_path / "runs", "--seeds", "3",
                             "--no-lanes")) == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seeds"] == [0] and summary["stopped"].startswith("KeyboardInterrupt")
    assert "finished seed(s) are summarised" in capsys.readouterr().err


def test_two_retrains_in_the_same_second_get_their_own_folders(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrain_module, "_stamp", lambda: "20250101-120000")
    path = write(tmp_path / "ok.yaml", exported_document())
    assert main(retrain_args(path, data_dir, tmp_path / "runs")) == 0
    assert main(retrain_args(path, data_dir, tmp_path / "runs")) == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["ok-train-20250101-120000", "ok-train-20250101-120000-2"]
    for name in folders:
        assert (tmp_path / "runs" / name / "summary.json").is_file()


def test_the_option_decides_train_on_whatever_the_file_says(tmp_path: Path) -> None:
    path = write(tmp_path / "tv.yaml", exported_document(train_on="train+val"))
    (config,) = seed_configs(load_exported(path), 1, "train")
    assert config.train_on == "train"
