"""Config values are range-checked when the config is built: one line, before any trial."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from cli_helpers import assert_one_line_error, run_cli

from objectives import OBJECTIVES, get_objective
from objectives.config import Range, above, at_least, check_config, config_fields, make_config
from objectives.errors import ConfigError
from objectives.runtime import Runtime

# (study, --set value, the expected message): lr and depth are searched by mlp_demo, so they
# are set on mlp_batchnorm, which fixes them.
CLI_CASES = [
    ("mlp_demo", "epochs=0", "'epochs' must be >= 1, got 0"),
    ("mlp_demo", "epochs=-3", "'epochs' must be >= 1, got -3"),
    ("mlp_demo", "batch_size=0", "'batch_size' must be >= 1, got 0"),
    ("mlp_demo", "train_fraction=0", "'train_fraction' must be in (0, 1], got 0.0"),
    ("mlp_demo", "momentum=1", "'momentum' must be in [0, 1), got 1.0"),
    ("mlp_demo", "weight_decay=-0.1", "'weight_decay' must be >= 0, got -0.1"),
    ("mlp_batchnorm", "lr=.nan", "'lr' must be a finite number, got nan"),
    ("mlp_batchnorm", "lr=-1", "'lr' must be > 0, got -1.0"),
    ("mlp_batchnorm", "lr=0", "'lr' must be > 0, got 0.0"),
    ("mlp_batchnorm", "depth=-1", "'depth' must be >= 1, got -1"),
]


@pytest.mark.parametrize(("study", "setting", "message"), CLI_CASES,
                         ids=[case[1] for case in CLI_CASES])
def test_cli_refuses_a_bad_value_before_any_trial(study: str, setting: str, message: str,
                                                  tmp_path: Path) -> None:
    db = tmp_path / "studies.db"
    result = run_cli("--study", study, "--set", setting, "--storage", f"sqlite:///{db}",
                     "--trials", "1", "--no-progress", timeout=120)
    assert_one_line_error(result, f"{study}.yaml (--set): {message}")
    if db.exists():  # the refusal came first: no study has a trial
        for summary in optuna.get_all_study_summaries(f"sqlite:///{db}"):
            assert summary.n_trials == 0


@pytest.mark.parametrize(("objective", "values", "message"), [
    ("mlp", {"width": 0}, "'width' must be >= 1, got 0"),
    ("mlp", {"lr": "inf"}, "'lr' must be a finite number, got inf"),
    ("mlp", {"seed": -1}, "'seed' must be in [0, 4294967295], got -1"),
    ("mlp", {"depth": 2, "monitor_layers": [3]}, "'monitor_layers' must be in [-3, 2]"),
    ("mlp", {"batch_norm": True, "batch_size": 1}, "'batch_size' must be >= 2 with batch_norm"),
    ("resnet", {"image_size": 16}, "'image_size' must be in [32, 1024], got 16"),
    ("resnet", {"lr": 0}, "'lr' must be > 0, got 0.0"),
    ("resnet", {"weight_decay": -1e-4}, "'weight_decay' must be >= 0, got -0.0001"),
    ("resnet", {"mode": "scratch", "batch_size": 1}, "'batch_size' must be >= 2 in mode"),
    ("resnet", {"train_fraction": 1.5}, "'train_fraction' must be in (0, 1], got 1.5"),
    ("xgboost", {"n_estimators": 0}, "'n_estimators' must be >= 1, got 0"),
    ("xgboost", {"max_depth": -1}, "'max_depth' must be >= 0, got -1"),
    ("xgboost", {"learning_rate": 0}, "'learning_rate' must be in (0, 1], got 0.0"),
    ("xgboost", {"subsample": 0}, "'subsample' must be in (0, 1], got 0.0"),
    ("xgboost", {"colsample_bytree": 1.5}, "'colsample_bytree' must be in (0, 1], got 1.5"),
    ("xgboost", {"reg_alpha": -1}, "'reg_alpha' must be >= 0, got -1.0"),
    ("xgboost", {"gamma": float("nan")}, "'gamma' must be a finite number, got nan"),
    ("xgboost", {"resize": 32, "crop": 64}, "'crop' must be <= 'resize' (32), got 64"),
    ("sklearn_probe", {"C": 0}, "'C' must be > 0, got 0.0"),
    ("sklearn_probe", {"max_iter": 0}, "'max_iter' must be >= 1, got 0"),
    ("toy", {"steps": 0}, "'steps' must be >= 1, got 0"),
    ("toy", {"sleep_s": -1}, "'sleep_s' must be >= 0, got -1.0"),
    ("toy", {"x": "-inf"}, "'x' must be a finite number, got -inf"),
])
def test_make_config_refuses_out_of_range_values(objective: str, values: dict,
                                                 message: str) -> None:
    config_cls = get_objective(objective).config_cls
    with pytest.raises(ConfigError) as caught:
        make_config(config_cls, values, source="study.yaml: fixed")
    assert str(caught.value).startswith(f"study.yaml: fixed: {message}"), str(caught.value)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_every_numeric_key_has_a_range_and_the_defaults_pass(objective: str) -> None:
    config_cls = get_objective(objective).config_cls
    numbers = (int, float, int | None, float | None)  # tuples are checked by Config.check()
    numeric = {name for name, hint in config_fields(config_cls).items() if hint in numbers}
    assert numeric <= set(config_cls.RANGES), numeric - set(config_cls.RANGES)
    assert set(config_cls.RANGES) <= set(config_fields(config_cls))  # no misspelt rule
    check_config(make_config(config_cls, {}))


@pytest.mark.parametrize(("objective", "values"), [
    ("mlp", {"epochs": 1, "batch_size": 1, "depth": 1, "width": 1, "momentum": 0.0,
             "weight_decay": 0.0, "train_fraction": 1.0, "seed": 0, "lr": 1e-12}),
    ("mlp", {"depth": 2, "monitor_layers": [0, 2, -3], "batch_norm": True, "batch_size": 2}),
    ("resnet", {"image_size": 32, "mode": "probe", "batch_size": 1, "train_fraction": 0.01}),
    ("xgboost", {"max_depth": 0, "learning_rate": 1.0, "subsample": 1.0, "reg_lambda": 0.0,
                 "resize": 16, "crop": 16}),
    ("sklearn_probe", {"C": 1e-6, "max_iter": 1, "image_size": 1024}),
    ("toy", {"x": -1e9, "steps": 1, "sleep_s": 0.0, "fail_above": -3.0}),
])
def test_values_on_the_edge_of_a_range_are_accepted(objective: str, values: dict) -> None:
    config = make_config(get_objective(objective).config_cls, values)
    assert all(getattr(config, key) == pytest.approx(value) or isinstance(value, list)
               for key, value in values.items())


def test_objectives_refuse_a_directly_built_config_before_loading_data(tmp_path: Path) -> None:
    from objectives import mlp, xgboost_pixels

    runtime = Runtime(data_dir=tmp_path)  # empty: the check must come first
    with pytest.raises(ConfigError, match="'lr' must be > 0, got 0"):
        mlp.run(mlp.Config(lr=0.0), None, runtime)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'subsample' must be in \\(0, 1\\]"):
        xgboost_pixels.run(xgboost_pixels.Config(subsample=0.0), None,  # type: ignore[arg-type]
                           runtime)


def test_a_search_range_bound_outside_the_rule_is_refused_at_load() -> None:
    from search.study.spec import parse_study_spec

    raw = {"objective": "mlp", "metric": "val_accuracy", "fixed": {"epochs": 2},
           "space": {"momentum": {"type": "float", "low": 0.5, "high": 1.0}}}
    with pytest.raises(ConfigError, match="'momentum' must be in \\[0, 1\\), got 1.0"):
        parse_study_spec(raw, name="t")


def test_range_describes_itself() -> None:
    assert str(at_least(1)) == ">= 1" and str(above(0)) == "> 0"
    assert str(Range(0, 1, low_open=True)) == "in (0, 1]"
    assert str(Range(high=5, high_open=True)) == "< 5"
    assert 1 in at_least(1) and 0 not in above(0) and math.nan not in Range()
