"""Every ``--sampler`` and ``--pruner`` the CLI offers runs a small study out of the box, and a
sampler whose package is missing is refused in one line before any trial."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.records.storage import open_storage
from search.run import main
from search.study.spec import PRUNERS, SAMPLERS
from tests.cli_helpers import assert_one_line_error

# The toy bowl over two floats (CMA-ES needs two or more): each trial takes milliseconds.
TOY_STUDY = """description: toy bowl for the sampler and pruner tests
objective: toy
metric: val_loss
direction: minimize
fixed: {steps: 6}
space:
  x: {type: float, low: -3.0, high: 3.0}
  y: {type: float, low: -2.0, high: 2.0}
sampler: random
"""
TRIALS = 12


@pytest.fixture
def toy_study(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_STUDY)
    return path


def _run(study: Path, storage_url: str, data_dir: Path, *args: str) -> int:
    return main(["--study", str(study), "--trials", str(TRIALS), "--storage", storage_url,
                 "--data-dir", str(data_dir), "--seed", "0", "--no-progress", *args])


def _trials(storage_url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="toy", storage=open_storage(storage_url)).trials


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "grid"])
def test_every_sampler_runs_a_study(sampler, toy_study, storage_url, data_dir):
    assert _run(toy_study, storage_url, data_dir, "--sampler", sampler) == 0
    trials = _trials(storage_url)
    assert len(trials) == TRIALS
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    if sampler == "cmaes":  # CMA-ES itself drew them (not its random fallback)
        assert any(key.startswith("cma:") for t in trials for key in t.system_attrs)


def test_the_grid_sampler_runs_a_grid_study(tmp_path, storage_url, data_dir):
    study = tmp_path / "toy.yaml"
    study.write_text(TOY_STUDY.split("space:")[0] + "grid: {x: [0.0, 1.0, 2.0]}\n")
    assert _run(study, storage_url, data_dir, "--sampler", "grid") == 0
    assert sorted(t.params["x"] for t in _trials(storage_url)) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_runs_a_study(pruner, toy_study, storage_url, data_dir):
    assert _run(toy_study, storage_url, data_dir, "--pruner", pruner) == 0
    trials = _trials(storage_url)
    assert len(trials) == TRIALS
    states = [t.state for t in trials]
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}, states
    if pruner != "none":  # worse trials stay worse at every step: some are stopped early
        assert TrialState.PRUNED in states
    else:
        assert TrialState.PRUNED not in states


@pytest.mark.parametrize(("sampler", "module", "package"),
                         [("cmaes", "cmaes", "cmaes"), ("qmc", "scipy.stats.qmc", "scipy")])
def test_a_sampler_without_its_package_is_refused_before_any_trial(
        sampler, module, package, toy_study, storage_url, data_dir):
    # A fresh interpreter where importing the package fails, as when it is not installed.
    code = (f"import sys; sys.modules[{module!r}] = None; from search.run import main; "
            f"sys.exit(main({['--study', str(toy_study), '--sampler', sampler, '--storage', storage_url, '--data-dir', str(data_dir)]!r}))")  # noqa: E501
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert_one_line_error(result, f"sampler {sampler} needs the Python package {package!r}")
    assert f"pip install {package}" in result.stderr
    assert result.stdout == ""  # refused before the study header, before any trial
    assert not Path(storage_url.removeprefix("sqlite:///")).exists()
