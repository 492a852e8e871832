"""Backbones: genuine ImageNet weights load, and missing ResNet18 weights fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from objectives.backbones import build_backbone, build_classifier, input_view
from objectives.errors import ConfigError
from objectives.faces_data import to_float

CAT_CLASSES = set(range(281, 286))  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat


def _cat_batch(view) -> torch.Tensor:
    """scikit-image's bundled photo of Chelsea the cat, through the backbone's own transform."""
    from PIL import Image
    from skimage import data
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    image = Image.fromarray(data.chelsea())
    image = F.resize(image, view.resize, interpolation=InterpolationMode(view.interpolation))
    image = F.center_crop(image, [view.crop, view.crop])
    return to_float(F.pil_to_tensor(image)[None], view)


@torch.no_grad()
def test_efficientnet_imagenet_weights_recognise_a_cat():
    torch.set_num_threads(1)
    batch = _cat_batch(input_view("efficientnet_lite0", 224))
    pretrained = build_classifier("efficientnet_lite0", pretrained=True).eval()
    probs = pretrained(batch).softmax(1)[0]
    assert int(probs.argmax()) in CAT_CLASSES, f"top-5 {probs.topk(5).indices.tolist()}"
    assert float(probs[sorted(CAT_CLASSES)].sum()) > 0.5  # confident, and about cats
    torch.manual_seed(0)
    random = build_classifier("efficientnet_lite0", pretrained=False).eval()
    random_probs = random(batch).softmax(1)[0]
    assert float(random_probs[sorted(CAT_CLASSES)].sum()) < 0.2  # no cat without the weights


def test_backbone_gives_features_of_the_declared_size():
    model = build_backbone("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1280)
    model = build_backbone("resnet18", pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_missing_resnet18_weight_file_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"weights file .*nope\.pth not found"):
        build_backbone("resnet18", pretrained=True, weights=str(tmp_path / "nope.pth"))


def test_resnet18_without_weights_says_where_to_put_them(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HPSEARCH_OFFLINE", "1")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ConfigError, match=r"ResNet18 ImageNet weights not found") as info:
        build_backbone("resnet18", pretrained=True)
    assert str(expected) in str(info.value) and "download.pytorch.org" in str(info.value)


def test_resnet18_loads_a_local_weight_file(tmp_path: Path):
    torch.manual_seed(1)
    source = build_classifier("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    loaded = build_classifier("resnet18", pretrained=True, weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_a_foreign_weight_file_is_rejected(tmp_path: Path):
    path = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ConfigError, match=r"not resnet18 weights"):
        build_backbone("resnet18", pretrained=True, weights=str(path))
    with pytest.raises(ConfigError, match=r"not EfficientNet-Lite0 weights"):
        build_backbone("efficientnet_lite0", pretrained=True, weights=str(path))
