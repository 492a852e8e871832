"""reports/faces.py: figures 11 and 12 from face studies.

Most tests here write studies through Optuna's API with the face objectives' records (config,
metrics, ``test_predictions.json`` artifact, ``test_errors``), real test images and made-up
accuracies, so the marking of best and worst can be checked against known values; the last
test trains a real tiny ``cnn_modes`` grid and builds the figures from it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from PIL import Image

from reports.build import BuildOptions, build
from reports.data import StudyStore
from reports.exercise import Context
from reports.faces import figure_11, figure_12
from search.records.storage import artifact_dir_for, open_storage

MODES = ("scratch", "probe", "finetune")
RATES = (0.01, 0.001, 0.0001)


def accuracy_of(mode: str, lr: float) -> float:
    """Made-up test accuracies: fine-tuning at 1e-4 best, scratch at 1e-2 worst."""
    return round({"scratch": 0.5, "probe": 0.7, "finetune": 0.8}[mode]
                 - 0.05 * math.log10(lr / 0.01), 3)


def add_trial(study: optuna.Study, store: FileSystemArtifactStore, paths: list[str],
              labels: np.ndarray, objective: str, config: dict, accuracy: float,
              tmp: Path) -> None:
    choices = {"mode": MODES, "lr": RATES}
    study.enqueue_trial({key: config[key] for key in choices if key in config})
    trial = study.ask()
    for key in choices:
        if key in config:
            trial.suggest_categorical(key, list(choices[key]))
    n_right = round(accuracy * len(paths))
    right = np.zeros(len(paths), bool)
    right[np.random.default_rng(len(paths) + n_right).permutation(len(paths))[:n_right]] = True
    probs = np.where(right == (labels == 1), 0.9, 0.1)
    file = tmp / f"{trial.number}.json"
    file.write_text(json.dumps({"paths": paths, "labels": labels.tolist(),
                                "probs": probs.tolist()}))
    artifact = upload_artifact(artifact_store=store, file_path=str(file), study_or_trial=trial)
    trial.set_user_attr("objective", objective)
    trial.set_user_attr("config", {"backbone": "resnet18", **config})
    trial.set_user_attr("metrics", {"val_accuracy": accuracy, "test_accuracy": accuracy})
    trial.set_user_attr("artifacts", {"test_predictions.json": artifact})
    rows = zip(paths, labels, probs, right, strict=True)
    trial.set_user_attr("test_errors", [{"path": p, "label": int(y), "prob": float(q)}
                                        for p, y, q, r in rows if not r])
    trial.set_user_attr("history", {"val_accuracy": [accuracy]})
    trial.report(accuracy, 0)
    study.tell(trial, accuracy)


@pytest.fixture(scope="module")
def storage(tmp_path_factory, data_dir) -> str:
    root = tmp_path_factory.mktemp("faces")
    url = f"sqlite:///{root / 'studies.db'}"
    faces = data_dir / "faces"
    files = sorted((faces / "test").glob("*/*.png"))
    paths = [str(f.relative_to(faces)) for f in files]
    labels = np.array([int(f.parent.name.startswith("1")) for f in files])
    store = FileSystemArtifactStore(str(artifact_dir_for(url)))
    artifact_dir_for(url).mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cnn = optuna.create_study(study_name="cnn_modes", storage=open_storage(url),
                              direction="maximize")
    cnn.set_user_attr("metric", "val_accuracy")
    for mode in MODES:
        for lr in RATES:
            add_trial(cnn, store, paths, labels, "resnet", {"mode": mode, "lr": lr},
                      accuracy_of(mode, lr), root)
    xgb = optuna.create_study(study_name="xgboost_defaults", storage=open_storage(url),
                              direction="maximize")
    add_trial(xgb, store, paths, labels, "xgboost", {"seed": 0}, 0.735, root)
    return url


def context(storage: str, data_dir: Path) -> Context:
    store = StudyStore(storage)
    return Context(store, {name: store.load(name) for name in store.names()}, data_dir)


def test_table_marks_two_best_per_baseline_and_the_worst(storage, data_dir):
    (item,) = figure_11(context(storage, data_dir))
    table = item.figure.data[0]
    header = [h.replace("<b>", "").replace("</b>", "") for h in table.header.values]
    assert header == ["baseline", "lr 0.01", "lr 0.001", "lr 0.0001", "no learning rate"]
    rows, *columns = table.cells.values
    assert list(rows) == ["finetune (resnet18)", "probe (resnet18)", "scratch (resnet18)",
                          "XGBoost (pixels)"]
    cells = [list(row) for row in zip(*columns, strict=True)]
    assert cells[0][2] == "<b>0.900</b> ★" and cells[0][0] == "0.800"  # finetune 1e-4 best
    assert [sum("★" in c for c in row) for row in cells] == [2, 2, 2, 0]
    assert cells[2][0] == "<b>0.500</b> (worst)"
    assert cells[3] == ["-", "-", "-", "0.735"]


def test_examples_are_right_for_the_best_and_wrong_for_the_worst(storage, data_dir):
    (item,) = figure_12(context(storage, data_dir))
    images = [t for t in item.figure.data if t.type == "image"]
    assert len(images) == 5
    assert all(np.asarray(t.z).ndim == 3 and np.asarray(t.z).std() > 10 for t in images)
    captions = [a.text for a in item.figure.layout.annotations]
    assert all("label: " in c and "best: " in c and "worst: " in c for c in captions)
    for caption in captions:
        label = caption.split("label: ")[1].split("<br>")[0]
        assert caption.split("best: ")[1].startswith(label)
        assert not caption.split("worst: ")[1].startswith(label)
    assert "finetune (resnet18), lr 0.0001" in item.figure.layout.title.text
    assert "chosen by test accuracy, as the exercise does" in item.figure.layout.title.text


def test_examples_say_so_when_the_images_are_missing(storage, tmp_path):
    (item,) = figure_12(context(storage, tmp_path / "nowhere"))
    notes = [a.text for a in item.figure.layout.annotations if "not found" in a.text]
    assert notes and "--data-dir" in notes[0]


def test_build_writes_both_face_figures_as_png(storage, data_dir, tmp_path):
    result = build(BuildOptions(storage_url=storage, out=tmp_path, studies=("cnn_modes",),
                                data_dir=data_dir, scale=1))
    assert result.missing == []
    for stem in ("fig11_faces_accuracy_table", "fig12_faces_examples"):
        with Image.open(tmp_path / "cnn_modes" / f"{stem}.png") as image:
            assert np.asarray(image.convert("L"), dtype=float).std() > 5
    assert "fig12_faces_examples.html" in (tmp_path / "index.html").read_text()


def test_a_bad_predictions_artifact_skips_figure_12_and_names_it(storage, data_dir,
                                                                  tmp_path):
    root = Path(storage.removeprefix("sqlite:///")).parent
    shutil.copytree(root, tmp_path / "copy")
    url = f"sqlite:///{tmp_path / 'copy' / 'studies.db'}"
    store = StudyStore(url)
    for trial in store.load("cnn_modes").trials + store.load("xgboost_defaults").trials:
        path = store.artifact_path(trial, "test_predictions.json")
        path.write_text(path.read_text()[:100])  # truncated mid-list
    result = build(BuildOptions(storage_url=url, out=tmp_path / "out", studies=("cnn_modes",),
                                data_dir=data_dir, png=False))
    (line,) = result.missing
    assert line.startswith("figure 12: ") and "test_predictions.json is unreadable " \
        "(JSONDecodeError" in line
    assert (tmp_path / "out" / "cnn_modes" / "fig11_faces_accuracy_table.html").is_file()
    assert "test_predictions.json is unreadable" in (tmp_path / "out" / "index.html").read_text()


def test_figures_from_a_real_tiny_cnn_modes_grid(data_dir, tmp_path, monkeypatch):
    from search.driver.runner import RunOptions, run_study
    from search.study.spec import load_study_spec

    monkeypatch.setenv("HPSEARCH_OFFLINE", "1")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = load_study_spec("cnn_modes").with_overrides(fixed={
        "backbone": "efficientnet_lite0", "image_size": 32, "train_fraction": 0.25})
    summary = run_study(spec, RunOptions(n_trials=15, data_dir=data_dir, storage_url=url,
                                         device="cpu", cache_dir=tmp_path / "cache",
                                         progress=False))
    assert summary.complete == 15

    (table,) = figure_11(context(url, data_dir))
    rows, *columns = table.figure.data[0].cells.values
    assert sorted(rows) == ["finetune (efficientnet_lite0)", "probe (efficientnet_lite0)",
                            "scratch (efficientnet_lite0)"]
    assert all(len(column) == 3 for column in columns) and len(columns) == 5  # 5 rates
    study = optuna.load_study(study_name="cnn_modes", storage=url)
    recorded = {f"{t.user_attrs['metrics']['test_accuracy']:.3f}" for t in study.trials}
    shown = {c.replace("<b>", "").replace("</b>", "").split()[0] for col in columns for c in col}
    assert shown == recorded

    result = build(BuildOptions(storage_url=url, out=tmp_path / "out", studies=("cnn_modes",),
                                data_dir=data_dir, scale=1))
    assert result.missing == []
    with Image.open(tmp_path / "out" / "cnn_modes" / "fig12_faces_examples.png") as image:
        assert np.asarray(image.convert("L"), dtype=float).std() > 5
