"""The Euro loader: the real CSVs, the synthetic stand-in, and every malformed-file error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from objectives.errors import DataError
from objectives.euro_data import load_euro, make_features, write_synthetic_euro


def test_loads_the_course_csvs(data_dir):
    data = load_euro(data_dir)
    assert data.x_train.shape == (106_897, 2) and data.x_train.dtype == np.float32
    assert len(data.y_val) == 13_363 and len(data.y_test) == 13_363
    assert set(np.unique(data.y_train)) == set(range(33))
    assert not data.synthetic


def test_implicit_features_are_twenty_sines():
    x = np.array([[10.0, 50.0]], dtype=np.float32)
    features = make_features(x, "implicit")
    assert features.shape == (1, 20)
    assert np.isclose(features[0, 0], np.sin(0.1 * 10.0))
    assert np.isclose(features[0, 19], np.sin(1.0 * 50.0))


def test_synthetic_stand_in_is_marked(tmp_path):
    write_synthetic_euro(tmp_path, sizes=(500, 100, 100))
    data = load_euro(tmp_path)
    assert data.synthetic
    assert data.x_train.shape == (500, 2)


def _copy_euro(data_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "euro"
    shutil.copytree(data_dir / "euro", target)
    return target


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no Euro data folder"):
        load_euro(tmp_path / "nowhere")


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty"),
    (",long,lat,country\n", "no rows"),
    (",long,lat\n0,1.0,2.0\n", "missing column"),
    (",long,lat,country\n0,1.0,2.0,40\n", "0-32"),
    (",long,lat,country\n0,abc,2.0,3\n", "must be numbers"),
    (",long,lat,country\n0,1.0,,3\n", "missing or infinite"),
    (",long,lat,country\n0,1.0,2.0,x\n", "integer labels"),
])
def test_malformed_file_names_the_file(data_dir, tmp_path, content, message):
    folder = _copy_euro(data_dir, tmp_path)
    (folder / "validation.csv").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_euro(tmp_path)
    assert "validation.csv" in str(info.value)


def test_missing_file_names_the_file(data_dir, tmp_path):
    folder = _copy_euro(data_dir, tmp_path)
    (folder / "test.csv").unlink()
    with pytest.raises(DataError, match="test.csv: file not found"):
        load_euro(tmp_path)
