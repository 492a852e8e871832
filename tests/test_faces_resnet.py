"""The face CNN objective: each mode trains and reports; probe freezes, fine-tune changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from objectives import face_features
from objectives.backbones import build_backbone, input_view
from objectives.faces_data import load_split, to_float
from objectives.reporter import RecordingReporter
from objectives.resnet import METRICS, Config, fit
from objectives.runtime import Runtime

SMALL = {"image_size": 32, "batch_size": 32, "epochs": 2, "lr": 1e-3, "train_fraction": 0.25}


@pytest.fixture(scope="module")
def runtime(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    torch.set_num_threads(1)
    return Runtime(data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize(("mode", "backbone"), [("scratch", "resnet18"),
                                                ("probe", "efficientnet_lite0"),
                                                ("finetune", "efficientnet_lite0")])
def test_each_mode_trains_and_reports(mode: str, backbone: str, runtime: Runtime):
    reporter = RecordingReporter()
    fitted = fit(Config(mode=mode, backbone=backbone, **SMALL), reporter, runtime)
    assert reporter.steps == [0, 1]
    for key in METRICS:
        assert len(reporter.history[key]) == 2
        assert np.isfinite(fitted.metrics[key])
    assert 0.0 <= fitted.metrics["test_accuracy"] <= 1.0
    saved = json.loads(reporter.artifacts["test_predictions.json"])
    assert len(saved["paths"]) == 160 and saved["paths"][0].startswith("test/0_real/")
    wrong = [p for p, y, q in zip(saved["paths"], saved["labels"], saved["probs"], strict=True)
             if (q > 0.5) != (y == 1)]
    assert [e["path"] for e in reporter.logs["test_errors"]] == wrong
    assert fitted.metrics["test_accuracy"] == pytest.approx(1 - len(wrong) / 160)


def test_probe_keeps_the_pretrained_backbone_and_fine_tune_changes_it(runtime: Runtime):
    view = input_view("efficientnet_lite0", 32)
    test_images = to_float(load_split(runtime.data_dir, "test", view, runtime.cache_dir).images,
                           view)
    pretrained = build_backbone("efficientnet_lite0", pretrained=True).eval()

    probe = fit(Config(mode="probe", backbone="efficientnet_lite0", **SMALL),
                RecordingReporter(), runtime)
    # The probe's predictions are its head on the untouched pretrained backbone's features.
    with torch.no_grad():
        probs = torch.sigmoid(probe.model.head(pretrained(test_images)).squeeze(1)).numpy()
    np.testing.assert_allclose(probs, probe.test_probs, atol=1e-5)

    tuned = fit(Config(mode="finetune", backbone="efficientnet_lite0", **SMALL),
                RecordingReporter(), runtime)
    before = pretrained.state_dict()
    changed = [k for k, v in tuned.model.backbone.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > 0.9 * sum(v.is_floating_point() for v in before.values())


def test_probe_bn_train_updates_running_statistics_and_eval_keeps_them(runtime: Runtime):
    """``probe_bn: train`` (the exercise's skeleton) runs the frozen backbone in training mode:
    its weights stay, its BatchNorm running statistics move to the faces; ``eval`` (cached
    features) leaves the pretrained backbone as it was."""
    pretrained = build_backbone("efficientnet_lite0", pretrained=True).state_dict()
    config = {"mode": "probe", "backbone": "efficientnet_lite0", **SMALL, "epochs": 1}
    trained = fit(Config(**config, probe_bn="train"), RecordingReporter(), runtime)
    cached = fit(Config(**config, probe_bn="eval"), RecordingReporter(), runtime)
    assert isinstance(cached.model.backbone, torch.nn.Identity)  # features came from the cache
    state = trained.model.backbone.state_dict()
    running = [k for k in state if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in state if state[k].is_floating_point() and k not in running]
    assert running and all(torch.equal(state[k], pretrained[k]) for k in weights)
    moved = [k for k in running if not torch.equal(state[k], pretrained[k])]
    assert len(moved) == len(running)  # every BatchNorm layer saw the faces' batches
    for fitted in (trained, cached):
        assert 0.0 <= fitted.metrics["val_accuracy"] <= 1.0
    assert trained.metrics["val_loss"] != pytest.approx(cached.metrics["val_loss"], abs=1e-6)


def test_feature_cache_is_reused_across_trials(data_dir: Path, tmp_path: Path):
    torch.set_num_threads(1)
    runtime = Runtime(data_dir=data_dir, cache_dir=tmp_path)
    config = Config(mode="probe", backbone="efficientnet_lite0", image_size=40, epochs=1)
    origins, results = [], []
    for clear_memory in (False, False, True):
        if clear_memory:
            face_features._MEMORY.clear()  # a new worker process: only the disk cache is left
        reporter = RecordingReporter()
        results.append(fit(config, reporter, runtime).metrics)
        origins.append(reporter.logs["feature_cache"])
    assert origins == ["computed", "memory", "disk"]
    assert len(list((tmp_path / "faces").glob("features-*.pt"))) == 3  # one per split
    assert results[0] == results[1] == results[2]  # seeded: the cache changes nothing
