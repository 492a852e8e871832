"""Frozen-backbone features of the faces splits, computed once and cached.

Linear probes (the ``resnet`` objective in ``probe`` mode and ``sklearn_probe``) train only a
head, so the backbone's features of each split are computed once, in eval mode, and kept in
memory and on disk under ``cache_dir/faces``. The key holds the backbone, its weights' source,
the input view and the split's file fingerprint; a cache hit never builds the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from objectives.backbones import build_backbone, input_view, weights_source
from objectives.faces_data import (
    SPLITS,
    FaceSplit,
    cache_key,
    load_cached,
    load_split,
    save_cached,
    to_float,
)

FEATURE_BATCH = 64

_MEMORY: dict[str, torch.Tensor] = {}


@dataclass(frozen=True)
class SplitFeatures:
    """A split's frozen features (N, D) float32 with its labels and image paths."""

    features: torch.Tensor
    split: FaceSplit


def load_features(data_dir: Path, backbone: str, weights: str | None, image_size: int,
                  device: str, cache_dir: Path | None) -> tuple[dict[str, SplitFeatures], str]:
    """Features of every split, and where they came from: ``memory``, ``disk`` or ``computed``
    (the most expensive of the three splits)."""
    view = input_view(backbone, image_size)
    source = weights_source(backbone, weights)
    model = None
    out: dict[str, SplitFeatures] = {}
    origins = []
    for split in SPLITS:
        images = load_split(data_dir, split, view, cache_dir)
        key = cache_key({"kind": "features", "backbone": backbone, "weights": source,
                         "view": view.geometry_key(), "mean": view.mean, "std": view.std,
                         "split": split, "fingerprint": images.fingerprint})
        path = None if cache_dir is None else Path(cache_dir) / "faces" / f"features-{key}.pt"
        if key in _MEMORY:
            origins.append("memory")
        else:
            cached = load_cached(path)
            if cached is not None:
                _MEMORY[key] = cached["features"]
                origins.append("disk")
            else:
                if model is None:
                    model = build_backbone(backbone, pretrained=True, weights=weights)
                    model = model.to(device).eval()
                _MEMORY[key] = _extract(model, images, view, device)
                save_cached(path, {"features": _MEMORY[key]})
                origins.append("computed")
        out[split] = SplitFeatures(_MEMORY[key], images)
    origin = next(o for o in ("computed", "disk", "memory") if o in origins)
    return out, origin


@torch.no_grad()
def _extract(model: torch.nn.Module, images: FaceSplit, view, device: str) -> torch.Tensor:
    chunks = []
    for first in range(0, images.images.shape[0], FEATURE_BATCH):
        batch = to_float(images.images[first:first + FEATURE_BATCH].to(device), view)
        chunks.append(model(batch).float().cpu())
    return torch.cat(chunks)
