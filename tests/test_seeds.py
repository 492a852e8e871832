"""Trials over seeds (``seeds: N``, ``--seeds``), the ``lcb`` aggregate and ``search.confirm``:
real MLP trials on the course CSVs (as lanes and one seed after another) and toy studies whose
per-seed results are known, in real SQLite files."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from cli_helpers import QUICK_SET, REPO, assert_one_line_error, run_cli
from optuna.trial import TrialState

from objectives.reporter import RecordingReporter
from search.driver.seeds import SeedGroup, seed_statistics


def _study(storage_url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_url)


def test_seed_statistics_are_the_t_bound() -> None:
    stats = seed_statistics([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and stats["sd"] == 1.0
    # t(0.95, 2 dof) = 2.919986; the bound is below the mean when maximising ...
    assert stats["lcb"] == pytest.approx(2.0 - 2.919986 / math.sqrt(3), rel=1e-6)
    # ... and above it when minimising (the pessimistic side either way)
    assert seed_statistics([1.0, 2.0, 3.0], "minimize")["lcb"] == pytest.approx(
        2.0 + 2.919986 / math.sqrt(3), rel=1e-6)
    one = seed_statistics([0.9])
    assert one["lcb"] == 0.9 and math.isnan(one["sd"])


def test_group_reports_the_mean_once_every_seed_has_the_step() -> None:
    parent = RecordingReporter()
    parent.artifacts = {}
    group = SeedGroup(parent, [5, 6], "val_accuracy")
    first, second = group.reporter(0), group.reporter(1)
    first.report(0, {"val_accuracy": 0.5})
    assert parent.steps == []  # seed 6 has not reached step 0 yet
    second.report(0, {"val_accuracy": 0.7})
    assert parent.steps == [0] and parent.history["val_accuracy"] == [pytest.approx(0.6)]


@pytest.mark.parametrize("lanes", ["8", "1"])
def test_three_seed_mlp_trial_reports_the_mean(data_dir: Path, storage_url: str,
                                               lanes: str) -> None:
    """As lanes and one seed after another: 3 per-seed results, their mean per epoch."""
    result = run_cli("--study", "mlp_demo", "--trials", "1", "--seeds", "3", "--lanes", lanes,
                     "--storage", storage_url, "--data-dir", str(data_dir), "--seed", "0",
                     "--no-progress", *QUICK_SET)
    assert result.returncode == 0, result.stdout + result.stderr
    trial = _study(storage_url, "mlp_demo").trials[0]
    assert trial.state == TrialState.COMPLETE
    attrs = trial.user_attrs
    assert attrs["seeds"] == [0, 1, 2]
    per_seed = [m["val_accuracy"] for m in attrs["seed_metrics"]]
    assert len(per_seed) == 3 and len(set(per_seed)) > 1  # three different trainings
    assert trial.value == pytest.approx(sum(per_seed) / 3)
    histories = attrs["seed_histories"]
    for step, value in trial.intermediate_values.items():
        assert value == pytest.approx(sum(h["val_accuracy"][step] for h in histories) / 3)
    assert len(trial.intermediate_values) == 2  # QUICK_SET: two epochs
    assert attrs["metrics"]["val_accuracy_sd"] == pytest.approx(
        math.sqrt(sum((v - trial.value) ** 2 for v in per_seed) / 2))
    # the median seed's artifacts keep the plain names; every seed's are kept
    assert attrs["median_seed"] in (0, 1, 2)
    assert "decision_boundary.npz" in attrs["artifacts"]
    assert {f"seed{s}_batch_losses.npy" for s in (0, 1, 2)} <= set(attrs["artifacts"])


def _toy_seed_grid(tmp_path: Path, aggregate: str) -> Path:
    path = tmp_path / f"toy_seeds_{aggregate}.yaml"
    path.write_text("description: toy grid over seeds\nobjective: toy\nmetric: val_loss\n"
                    "direction: minimize\nfixed: {steps: 3, x: 1.0}\n"
                    "grid: {seed_spread: [0.0, 0.5]}\n"
                    f"seeds: 4\naggregate: {aggregate}\n")
    return path


@pytest.mark.parametrize("aggregate", ["lcb", "mean"])
def test_lcb_ranks_a_noisy_config_below_a_steady_one(tmp_path: Path, data_dir: Path,
                                                     storage_url: str, aggregate: str) -> None:
    result = run_cli("--study", str(_toy_seed_grid(tmp_path, aggregate)), "--storage",
                     storage_url, "--data-dir", str(data_dir), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    study = _study(storage_url, f"toy_seeds_{aggregate}")
    by_spread = {t.params["seed_spread"]: t for t in study.trials}
    steady, noisy = by_spread[0.0], by_spread[0.5]
    # the same mean over seeds 0-3 (+-0.5 cancel) ...
    assert steady.user_attrs["metrics"]["val_loss"] == pytest.approx(
        noisy.user_attrs["metrics"]["val_loss"])
    assert [m["val_loss"] for m in noisy.user_attrs["seed_metrics"]] == pytest.approx(
        [steady.user_attrs["metrics"]["val_loss"] + d for d in (-0.5, 0.5, -0.5, 0.5)])
    if aggregate == "lcb":  # ... but the bound puts the noisy one behind
        assert noisy.value > steady.value
        assert study.best_trial.number == steady.number
    else:
        assert noisy.value == pytest.approx(steady.value)


def test_resuming_with_other_seeds_is_refused(tmp_path: Path, data_dir: Path,
                                              storage_url: str) -> None:
    study_file = _toy_seed_grid(tmp_path, "mean")
    first = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                    str(data_dir), "--no-progress", "--trials", "1")
    assert first.returncode == 0, first.stderr
    again = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                    str(data_dir), "--no-progress", "--seeds", "2")
    assert_one_line_error(again, "made with seeds 4, not 2")


@pytest.mark.parametrize("value", ["0", "101"])
def test_bad_seed_count_is_one_line(data_dir: Path, storage_url: str, value: str) -> None:
    result = run_cli("--study", "mlp_demo", "--seeds", value, "--storage", storage_url,
                     "--data-dir", str(data_dir))
    assert_one_line_error(result, "--seeds must be a whole number from 1 to 100")


def test_confirm_retrains_the_best_over_fresh_seeds(tmp_path: Path, data_dir: Path,
                                                     storage_url: str) -> None:
    study_file = tmp_path / "toy_search.yaml"
    study_file.write_text("description: toy search\nobjective: toy\nmetric: val_loss\n"
                          "direction: minimize\nfixed: {steps: 3, y: -0.5}\n"
                          "space:\n  x: {type: float, low: 0.0, high: 2.0}\n"
                          "  seed_spread: {type: float, low: 0.0, high: 0.3}\n"
                          "sampler: random\ntrials: 6\n")
    search = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                     str(data_dir), "--seed", "3", "--no-progress")
    assert search.returncode == 0, search.stderr
    confirm = subprocess.run(
        [sys.executable, "-m", "search.confirm", "--study", "toy_search", "--top", "3",
         "--seeds", "4", "--storage", storage_url, "--data-dir", str(data_dir),
         "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert confirm.returncode == 0, confirm.stdout + confirm.stderr
    source = _study(storage_url, "toy_search")
    linked = _study(storage_url, "toy_search.confirm")
    assert linked.user_attrs["confirms"] == "toy_search"
    assert linked.user_attrs["fixed"]["seed"] == 1  # one past seed 0, the search's only seed
    best3 = sorted((t for t in source.trials if t.value is not None), key=lambda t: t.value)[:3]
    assert sorted(linked.user_attrs["confirms_trials"].values()) == sorted(
        t.number for t in best3)
    assert len(linked.trials) == 3
    for trial in linked.trials:
        assert trial.user_attrs["seeds"] == [1, 2, 3, 4]
        assert len(trial.user_attrs["seed_metrics"]) == 4
    # ranked by the bound: the printed order is the confirmation study's order by value
    lines = confirm.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "trial"])
    ranked = [int(line.split()[1].lstrip("#")) for line in lines[header + 1:header + 4]]
    assert ranked == [t.number for t in sorted(linked.trials, key=lambda t: t.value)]
    # seeds 1-4 over +-spread: every confirmed mean is the noise-free bowl
    for trial in linked.trials:
        config = trial.user_attrs["config"]
        assert trial.user_attrs["metrics"]["val_loss"] == pytest.approx(
            (config["x"] - 1.0) ** 2 + 1.0 / 3)
    # a second confirm reuses the same fresh seeds and finds nothing left to run
    again = subprocess.run(
        [sys.executable, "-m", "search.confirm", "--study", "toy_search", "--top", "3",
         "--seeds", "4", "--storage", storage_url, "--data-dir", str(data_dir),
         "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(_study(storage_url, "toy_search.confirm").trials) == 3
    # the export of the confirmed winner carries its seed statistics
    export = subprocess.run(
        [sys.executable, "-m", "search.export", "--study", "toy_search.confirm", "--storage",
         storage_url, "--out", str(tmp_path / "configs")], cwd=REPO, capture_output=True,
        text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    document = yaml.safe_load(next((tmp_path / "configs").glob("*.yaml")).read_text())
    winner = min(linked.trials, key=lambda t: t.value)
    assert document["trial"] == winner.number
    assert document["seeds"]["seeds"] == [1, 2, 3, 4] and document["seeds"]["aggregate"] == "lcb"
    assert document["seeds"]["lcb"] == pytest.approx(winner.value)
    assert list(document["seeds"]["per_seed"]) == [1, 2, 3, 4]


def test_confirm_refuses_a_missing_study(storage_url: str, tmp_path: Path) -> None:
    optuna.create_study(study_name="other", storage=storage_url)
    result = subprocess.run(
        [sys.executable, "-m", "search.confirm", "--study", "nope", "--storage", storage_url],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "no study 'nope'")
    missing = tmp_path / "missing.db"  # a storage file that is not there is not created
    result = subprocess.run(
        [sys.executable, "-m", "search.confirm", "--study", "nope", "--storage",
         f"sqlite:///{missing}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "missing.db")
    assert not missing.exists()
