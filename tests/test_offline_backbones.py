"""Offline face studies: the pre-run weights check sees the combinations a trial can get, and
its message suggests only ways out that work (no ResNet18 weights anywhere in these tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from objectives.errors import ConfigError
from objectives.runtime import Runtime
from search.study.preflight import Searched, combinations, preflight
from search.study.spec import SPACES_DIR, load_study_spec
from tests.cli_helpers import REPO, assert_one_line_error


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ResNet18 weights: an empty torch cache and no download; returns the torch home."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("HPSEARCH_OFFLINE", "1")
    return home


def study_copy(tmp_path: Path, name: str, **choices: list) -> Path:
    """A copy of ``spaces/NAME.yaml`` with the given keys' choices replaced, as a user makes."""
    raw = yaml.safe_load((SPACES_DIR / f"{name}.yaml").read_text())
    for key, values in choices.items():
        raw["space"][key]["choices"] = values
    path = tmp_path / f"{name}_copy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def check(study: str | Path, data_dir: Path, tmp_path: Path, *sets: str) -> None:
    """The check ``python -m search.run`` runs before the first trial."""
    from search.run import parse_overrides

    spec = load_study_spec(study).with_overrides(fixed=parse_overrides(list(sets)))
    preflight(spec, Runtime(data_dir=data_dir, device="cpu", cache_dir=tmp_path / "cache"))


def test_cnn_search_with_only_efficientnet_passes_offline(offline: Path, data_dir: Path,
                                                          tmp_path: Path):
    # What cnn_search's description says to do offline: keep only efficientnet_lite0.
    copy = study_copy(tmp_path, "cnn_search", backbone=["efficientnet_lite0"])
    check(copy, data_dir, tmp_path)  # probe and finetune meet only efficientnet_lite0


def test_cnn_search_without_weights_suggests_only_what_works(offline: Path, data_dir: Path,
                                                             tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        check("cnn_search", data_dir, tmp_path)
    message = str(info.value)
    assert "ResNet18 ImageNet weights not found" in message
    assert "can get mode='probe', backbone='resnet18'" in message  # a real combination
    assert str(offline / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    # backbone is searched: --set backbone is refused and --set weights would feed the
    # ResNet18 file to efficientnet_lite0 trials too, so neither is offered.
    assert "--set" not in message
    assert "remove 'resnet18' from 'backbone' in a copy of" in message
    # The suggestions work: each copy they describe passes the same check.
    check(study_copy(tmp_path, "cnn_search", backbone=["efficientnet_lite0"]), data_dir, tmp_path)
    assert "remove 'probe', 'finetune' from 'mode'" in message
    check(study_copy(tmp_path, "cnn_search", mode=["scratch"]), data_dir, tmp_path)
    # Removing probe alone would not do (finetune needs the weights too): not suggested.
    assert "remove 'probe' from" not in message


def test_cnn_modes_keeps_the_set_fixes_for_its_fixed_backbone(offline: Path, data_dir: Path,
                                                              tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        check("cnn_modes", data_dir, tmp_path)
    message = str(info.value)
    assert "--set backbone=efficientnet_lite0" in message and "--set weights=PATH" in message
    check("cnn_modes", data_dir, tmp_path, "backbone=efficientnet_lite0")  # and it works


def test_the_cli_refuses_cnn_search_before_any_trial(offline: Path, data_dir: Path,
                                                     tmp_path: Path):
    storage_url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "search.run", "--study", "cnn_search", "--storage", storage_url,
         "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"), "--no-progress"],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert_one_line_error(result, "remove 'resnet18' from 'backbone'")
    assert "--set" not in result.stderr
    assert optuna.get_all_study_names(storage_url) == []


def test_many_combinations_still_check_only_real_ones():
    searched = [Searched(f"k{i}", (0, 1, 2)) for i in range(8)]  # 3**8 > the cap
    found = combinations(searched)
    assert len(found) == 1 + 8 * 2  # each value once
    assert all(set(c) == {s.name for s in searched} for c in found)  # every key has a value


def test_no_set_of_a_searched_key_even_when_every_value_fails(offline: Path, data_dir: Path,
                                                               tmp_path: Path):
    copy = study_copy(tmp_path, "cnn_search", mode=["probe", "finetune"], backbone=["resnet18"])
    with pytest.raises(ConfigError) as info:
        check(copy, data_dir, tmp_path)
    assert "--set" not in str(info.value) and "download.pytorch.org" in str(info.value)
