"""Study files: every file in spaces/ loads, and each schema rule has its own error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from objectives.errors import ConfigError
from search.study.spec import list_studies, load_study_spec, parse_study_spec

BASE = {
    "objective": "mlp", "metric": "val_accuracy", "direction": "maximize",
    "fixed": {"epochs": 2},
    "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
}


@pytest.mark.parametrize("path", list_studies(), ids=lambda p: p.stem)
def test_every_study_file_loads(path: Path):
    spec = load_study_spec(path)
    assert spec.description
    assert spec.metric.startswith("val_")


def test_exercise_grids_hold_the_assignment_values():
    assert load_study_spec("mlp_lr").grid == {"lr": (1.0, 0.01, 0.001, 0.00001)}
    pairs = [(p["depth"], p["width"]) for p in load_study_spec("mlp_grid").grid_points]
    assert pairs == [(1, 16), (2, 16), (6, 16), (10, 16), (6, 8), (6, 32), (6, 64)]
    sizes = [(p["batch_size"], p["epochs"]) for p in load_study_spec("mlp_batch_size").grid_points]
    assert sizes == [(1, 1), (16, 10), (128, 50), (1024, 50)]
    deep = load_study_spec("mlp_deep_gradients")
    assert deep.fixed["depth"] == 100 and deep.fixed["width"] == 4
    assert deep.fixed["monitor_layers"] == [0, 30, 60, 90, 95, 99]


def _parse(**changes):
    raw = {**BASE, **changes}
    return parse_study_spec({k: v for k, v in raw.items() if v is not None}, name="t")


@pytest.mark.parametrize(("changes", "message"), [
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"objective": "gpt"}, "unknown objective 'gpt'"),
    ({"metric": "test_accuracy"}, "must be a validation metric"),
    ({"metric": "val_f1"}, "not reported by objective"),
    ({"direction": "up"}, "'direction' must be maximize or minimize"),
    ({"fixed": {"depht": 3}}, "unknown config key 'depht'"),
    ({"fixed": {"depth": "deep"}}, "'depth' must be an integer"),
    ({"space": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}}, "'space.lr.low' must be <="),
    ({"space": {"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
     "must be > 0 when log is true"),
    ({"space": {"width": {"type": "categorical", "choices": []}}}, "non-empty list"),
    ({"space": {"lr": {"type": "normal"}}}, "must be float, int or categorical"),
    ({"space": {"lr": {"type": "float", "low": 0.1, "high": 1, "logg": True}}},
     "space.lr.logg is not a parameter setting"),
    ({"space": {"colour": {"type": "categorical", "choices": [1]}}},
     "searched key 'colour' is not a config key"),
    ({"space": {"epochs": {"type": "int", "low": 1, "high": 3}}}, "both fixed and searched"),
    ({"space": {"features": {"type": "categorical", "choices": ["raw", "fourier"]}}},
     "'features' must be one of"),
    ({"grid": {"lr": [0.1]}}, "exactly one of"),
    ({"space": None}, "exactly one of"),
    ({"sampler": "annealing"}, "unknown sampler 'annealing'"),
    ({"pruner": "wizard"}, "unknown pruner 'wizard'"),
    ({"sampler": "grid"}, "'sampler' grid goes with"),
    ({"trials": 0}, "'trials' must be a positive integer"),
    ({"fixed": {"train_on": "train+val"}}, "'train_on' must stay 'train'"),
])
def test_invalid_study_file_is_rejected(changes, message):
    with pytest.raises(ConfigError, match=message):
        _parse(**changes)


def test_grid_points_need_the_same_keys():
    with pytest.raises(ConfigError, match="give every point the same keys"):
        _parse(space=None, grid_points=[{"depth": 1}, {"depth": 2, "width": 8}])


def test_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({**BASE, "fixed": {"lr": -1, "epochs": "x"}}))
    with pytest.raises(ConfigError, match=r"broken.yaml: fixed: 'epochs' must be an integer"):
        load_study_spec(path)


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("objective: [mlp\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study_spec(path)


def test_set_override_cannot_fix_a_searched_key():
    spec = load_study_spec("mlp_lr")
    with pytest.raises(ConfigError, match="searched by this study"):
        spec.with_overrides(fixed={"lr": 0.1})
    assert spec.with_overrides(fixed={"epochs": 3}).fixed["epochs"] == 3


@pytest.mark.parametrize(("space", "message"), [
    ({"lr": {"type": "float", "low": 0.0, "high": 0.1}},
     "'lr' must be > 0, got 0.0"),
    ({"batch_size": {"type": "categorical", "choices": [0, 32]}},
     "'batch_size' must be >= 1, got 0"),
    ({"train_fraction": {"type": "float", "low": 0.5, "high": 1.5}},
     "'train_fraction' must be in (0, 1], got 1.5"),
])
def test_a_searched_value_outside_a_key_range_is_refused(space, message):
    with pytest.raises(ConfigError) as caught:
        _parse(space=space)
    assert str(caught.value).startswith("t: ") and str(caught.value).endswith(message)


def test_fixed_values_are_range_checked_at_load():
    with pytest.raises(ConfigError, match=r"^t: .*'epochs' must be >= 1, got 0$"):
        _parse(fixed={"epochs": 0})
