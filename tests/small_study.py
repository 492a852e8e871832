"""A small real study for the dashboard, export and retrain tests: a few short mlp_demo trials."""

from __future__ import annotations

from pathlib import Path

from search.driver.runner import RunOptions, RunSummary, run_study
from search.study.spec import load_study_spec

STUDY = "mlp_demo"


def make_small_study(data_dir: Path, storage_url: str, trials: int = 3) -> RunSummary:
    """Run ``trials`` trials of mlp_demo with 2 epochs (about 3 s each) into ``storage_url``."""
    spec = load_study_spec(STUDY).with_overrides(fixed={"epochs": 2})
    summary = run_study(spec, RunOptions(n_trials=trials, data_dir=data_dir,
                                         storage_url=storage_url, device="cpu", seed=1,
                                         progress=False, command="pytest small study",
                                         lanes=1))  # single trials: retrain reproduces exactly
    assert summary.complete == trials, summary
    return summary
