"""The faces data: an image folder ``faces/{train,val,test}/{0_real,1_fake}``, decoded once.

``load_split(data_dir, split, view, cache_dir)`` returns a split's images after the resize and
crop of ``view`` as a uint8 tensor (N, 3, H, W), with labels (0 = real, 1 = fake, torchvision
``ImageFolder`` order) and each image's path relative to ``faces/``. Decoding happens once: the
result is kept in memory and on disk under ``cache_dir``, keyed by the view and a fingerprint
of the split's files (names, sizes, modification times), and written atomically so several
worker processes can share the cache. ``to_float`` turns a batch into the float input of a
model (``ToTensor`` scaling, then the view's mean/std if it has one).

Missing split or class folders, empty folders and unreadable images raise a ``DataError``
naming the path.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from objectives.errors import DataError

SPLITS = ("train", "val", "test")
CLASSES = ("0_real", "1_fake")  # ImageFolder's alphabetical order: 0 = real, 1 = fake
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_VERSION = 1
MEMORY_SPLITS = 6  # decoded splits kept in memory per process (two views of three splits)

_MEMORY: dict[str, FaceSplit] = {}


@dataclass(frozen=True)
class ImageView:
    """How images are turned into model input.

    ``resize`` is applied first: with ``square`` to ``resize x resize`` (the exercise's scratch
    ``Resize((224, 224))``), otherwise to the shorter side (``Resize(256)``). ``crop`` then
    centre-crops (None: no crop). ``mean``/``std`` normalise after scaling to [0, 1]
    (None: no normalisation, as for the scratch model and XGBoost).
    """

    resize: int
    crop: int | None = None
    square: bool = False
    interpolation: str = "bilinear"  # bilinear or bicubic (torchvision, antialiased)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def geometry_key(self) -> dict[str, object]:
        """The parts that decide the cached uint8 pixels (normalisation happens per batch)."""
        data = asdict(self)
        data.pop("mean")
        data.pop("std")
        return data


def scratch_view(image_size: int) -> ImageView:
    """The exercise's scratch input: resize to ``image_size`` square, ToTensor, no normalisation."""
    return ImageView(resize=image_size, square=True)


def xgboost_view(resize: int = 224, crop: int = 64) -> ImageView:
    """The exercise's XGBoost input: resize 224, centre-crop 64 (flattened by the caller)."""
    return ImageView(resize=resize, crop=crop)


@dataclass(frozen=True)
class FaceSplit:
    """One split: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,), ``paths`` relative to
    ``faces/`` (e.g. ``test/1_fake/0012.png``), and the split's file ``fingerprint``."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: tuple[str, ...]
    fingerprint: str


def faces_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "faces"


def list_split(data_dir: Path, split: str) -> list[tuple[str, int]]:
    """Every image of ``split`` as (path relative to ``faces/``, label), sorted like ImageFolder."""
    root = faces_dir(data_dir)
    if not root.is_dir():
        raise DataError(f"no faces data folder at {root}; pass --data-dir (or set "
                        "$HPSEARCH_DATA) to the folder holding faces/{train,val,test}")
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder}: split folder not found; the faces data needs "
                        f"{', '.join(SPLITS)} folders, each with {' and '.join(CLASSES)}")
    items = []
    for label, name in enumerate(CLASSES):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise DataError(f"{class_dir}: class folder not found; each split needs "
                            f"{' and '.join(CLASSES)} (0 = real, 1 = fake)")
        files = sorted(p for p in class_dir.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir}: no images found (expected .png or .jpg files)")
        items += [(f"{split}/{name}/{p.name}", label) for p in files]
    return items


def split_fingerprint(data_dir: Path, items: list[tuple[str, int]]) -> str:
    """A short hash of the split's file names, sizes and modification times."""
    root = faces_dir(data_dir)
    digest = hashlib.sha256()
    for rel, label in items:
        stat = (root / rel).stat()
        digest.update(f"{rel}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_split(data_dir: Path, split: str, view: ImageView,
               cache_dir: Path | None = None) -> FaceSplit:
    """The split's images under ``view``, decoded once and cached in memory and on disk."""
    items = list_split(data_dir, split)
    fingerprint = split_fingerprint(data_dir, items)
    key = cache_key({"kind": "images", "split": split, "view": view.geometry_key(),
                     "fingerprint": fingerprint})
    if key in _MEMORY:
        return _MEMORY[key]
    path = None if cache_dir is None else Path(cache_dir) / "faces" / f"images-{key}.pt"
    loaded = load_cached(path)
    if loaded is not None:
        result = FaceSplit(loaded["images"], loaded["labels"], tuple(loaded["paths"]),
                           fingerprint)
    else:
        images = torch.stack([_decode(faces_dir(data_dir) / rel, view) for rel, _ in items])
        labels = torch.tensor([label for _, label in items], dtype=torch.int64)
        result = FaceSplit(images, labels, tuple(rel for rel, _ in items), fingerprint)
        save_cached(path, {"images": images, "labels": labels, "paths": list(result.paths)})
    _MEMORY[key] = result
    while len(_MEMORY) > MEMORY_SPLITS:  # drop the oldest: a search may switch views often
        _MEMORY.pop(next(iter(_MEMORY)))
    return result


def _decode(path: Path, view: ImageView) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); remove or replace it") from None
    mode = InterpolationMode(view.interpolation)
    size = [view.resize, view.resize] if view.square else view.resize
    image = F.resize(image, size, interpolation=mode, antialias=True)
    if view.crop is not None:
        image = F.center_crop(image, [view.crop, view.crop])
    return F.pil_to_tensor(image)


def to_float(images: torch.Tensor, view: ImageView) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [0, 1] (ToTensor), then normalised if the view says so."""
    x = images.float().div_(255.0)
    if view.mean is not None and view.std is not None:
        mean = torch.tensor(view.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(view.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x


def cache_key(parts: dict[str, object]) -> str:
    """A short, stable hash of a JSON-able description of a cached thing."""
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_cached(path: Path | None) -> dict | None:
    """A cache file's contents, or None when it is absent or unreadable (it is rebuilt)."""
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # a truncated or foreign file: ignore it and rebuild
        return None


def save_cached(path: Path | None, payload: dict) -> None:
    """Write a cache file atomically (temp file, then ``os.replace``), so concurrent workers
    never read a half-written file."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
