"""The faces image-folder loader: layout, labels, the decode cache and clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from objectives import faces_data
from objectives.errors import DataError
from objectives.faces_data import ImageView, list_split, load_split, scratch_view, to_float


def test_train_split_has_imagefolder_labels_and_relative_paths(data_dir: Path, tmp_path: Path):
    split = load_split(data_dir, "train", scratch_view(32), tmp_path)
    assert split.images.shape == (560, 3, 32, 32) and split.images.dtype == torch.uint8
    assert int((split.labels == 0).sum()) == 280 and int((split.labels == 1).sum()) == 280
    assert split.paths[0].startswith("train/0_real/") and split.paths[-1].startswith(
        "train/1_fake/")
    assert (data_dir / "faces" / split.paths[0]).is_file()


def test_decoded_split_is_cached_on_disk_and_reused(data_dir: Path, tmp_path: Path):
    first = load_split(data_dir, "val", scratch_view(40), tmp_path)
    files = list((tmp_path / "faces").glob("images-*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    faces_data._MEMORY.clear()
    again = load_split(data_dir, "val", scratch_view(40), tmp_path)
    assert torch.equal(first.images, again.images) and first.paths == again.paths
    assert files[0].stat().st_mtime_ns == mtime  # read back, not rewritten
    other = load_split(data_dir, "val", ImageView(resize=48, crop=40), tmp_path)
    assert len(list((tmp_path / "faces").glob("images-*.pt"))) == 2  # keyed by the transform
    assert not torch.equal(first.images, other.images)


def test_to_float_scales_then_normalises():
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(to_float(images, scratch_view(2)), torch.ones(1, 3, 2, 2))
    view = ImageView(resize=2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.allclose(to_float(images, view), torch.full((1, 3, 2, 2), 2.0))


@pytest.fixture
def small_faces(tmp_path: Path, data_dir: Path) -> Path:
    """A copy of a few faces images in the same layout."""
    for split in ("train", "val", "test"):
        for name in ("0_real", "1_fake"):
            target = tmp_path / "faces" / split / name
            target.mkdir(parents=True)
            for source in sorted((data_dir / "faces" / split / name).glob("*.png"))[:2]:
                shutil.copy(source, target)
    return tmp_path


def test_missing_split_folder_is_named(small_faces: Path):
    shutil.rmtree(small_faces / "faces" / "val")
    with pytest.raises(DataError, match=r"faces/val: split folder not found"):
        list_split(small_faces, "val")


def test_missing_class_folder_is_named(small_faces: Path):
    shutil.rmtree(small_faces / "faces" / "test" / "1_fake")
    with pytest.raises(DataError, match=r"test/1_fake: class folder not found"):
        list_split(small_faces, "test")


def test_empty_class_folder_is_named(small_faces: Path):
    for path in (small_faces / "faces" / "train" / "0_real").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"train/0_real: no images found"):
        list_split(small_faces, "train")


def test_unreadable_image_is_named(small_faces: Path, tmp_path: Path):
    bad = small_faces / "faces" / "train" / "1_fake" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        load_split(small_faces, "train", scratch_view(32), None)


def test_missing_faces_folder_says_how_to_fix(tmp_path: Path):
    with pytest.raises(DataError, match=r"no faces data folder .*--data-dir"):
        list_split(tmp_path, "train")
