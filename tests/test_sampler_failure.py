"""A sampler that raises while drawing leaves no orphan trial: the trial it drew for is FAIL
with the sampler's error, the run stops with one line, and nothing is retried into more FAILs
(a real SQLite storage, the real dealer)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.driver.claims import SamplerError, TrialDealer
from search.records.liveness import Owner
from search.records.storage import open_storage
from search.study.spec import parse_study_spec


class BrokenSampler(optuna.samplers.RandomSampler):
    """A sampler whose every draw raises, as a sampler with a bad option or a bug would."""

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: ANN001
        raise ValueError("cannot draw x")


@pytest.mark.parametrize("where", ["independent", "relative"])
def test_a_failing_sampler_fails_its_trial_and_stops(tmp_path: Path, where: str) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = parse_study_spec({"objective": "toy", "metric": "val_loss", "direction": "minimize",
                             "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}},
                            name="toy_broken")
    sampler: optuna.samplers.BaseSampler = BrokenSampler()
    if where == "relative":  # raise inside study.ask(), before the trial id is known
        class BrokenRelative(optuna.samplers.RandomSampler):
            def infer_relative_search_space(self, study, trial):  # noqa: ANN001
                raise ValueError("cannot infer the space")
        sampler = BrokenRelative()
    study = optuna.create_study(study_name="toy_broken", storage=open_storage(url),
                                sampler=sampler)
    dealer = TrialDealer(study, spec, url, run_id="run1")
    with pytest.raises(SamplerError, match="the sampler failed: ValueError"):
        dealer.next_trial(Owner.of())
    trials = optuna.load_study(study_name="toy_broken", storage=url).trials
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert trials[0].user_attrs["run_id"] == "run1"
    assert trials[0].user_attrs["error"].startswith("the sampler failed: ValueError")
