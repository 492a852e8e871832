"""reports/: figures from tiny real studies (real CSVs, real SQLite storage, real Kaleido)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from PIL import Image

from objectives.euro_data import NUM_CLASSES
from reports.build import BuildOptions, build, main
from reports.data import StudyStore
from reports.exercise import EXERCISE_FIGURES, Context
from search.driver.runner import RunOptions, run_study
from search.study.spec import SPACES_DIR, parse_study_spec

REPO = Path(__file__).resolve().parent.parent
TINY = {"train_fraction": 0.01, "epochs": 2}
MLP_STUDIES = ("mlp_lr", "mlp_epochs", "mlp_batchnorm", "mlp_batch_size", "mlp_grid",
               "mlp_deep_gradients", "mlp_deep_fix", "mlp_implicit", "mlp_demo")
SCALE = 1
PNG_STUDIES = ("mlp_lr", "mlp_grid", "mlp_demo")


def tiny_spec(name: str):
    """The study file with 2 epochs on 1% of the training split (the grid left as it is)."""
    raw = yaml.safe_load((SPACES_DIR / f"{name}.yaml").read_text())
    if "epochs" in raw.get("grid", {}):
        raw["grid"]["epochs"] = [TINY["epochs"]]
    for point in raw.get("grid_points") or []:
        if "epochs" in point:
            point["epochs"] = min(point["epochs"], TINY["epochs"])
    searched = set(raw.get("grid", {})) | {k for p in raw.get("grid_points") or [] for k in p}
    raw["fixed"].update({k: v for k, v in TINY.items() if k not in searched})
    return parse_study_spec(raw, name=name)


@pytest.fixture(scope="module")
def storage(tmp_path_factory, data_dir) -> str:
    """Every MLP study of the exercise, tiny, in one SQLite storage."""
    import torch

    torch.set_num_threads(1)
    url = f"sqlite:///{tmp_path_factory.mktemp('studies') / 'studies.db'}"
    for name in MLP_STUDIES:
        spec = tiny_spec(name)
        run_study(spec, RunOptions(n_trials=spec.grid_size() or 6, data_dir=data_dir,
                                   storage_url=url, progress=False, seed=0))
    return url


@pytest.fixture(scope="module")
def built(storage, tmp_path_factory, data_dir):
    """Every study, HTML only (PNGs cost about a second each on a busy machine)."""
    out = tmp_path_factory.mktemp("report")
    result = build(BuildOptions(storage_url=storage, out=out, data_dir=data_dir, png=False))
    return out, result


@pytest.fixture(scope="module")
def built_png(storage, tmp_path_factory, data_dir):
    """Three studies with PNGs: line plots, maps, tables and every Optuna plot among them."""
    out = tmp_path_factory.mktemp("report_png")
    result = build(BuildOptions(storage_url=storage, out=out, data_dir=data_dir, scale=SCALE,
                                studies=PNG_STUDIES))
    return out, result


@pytest.fixture(scope="module")
def context(storage, data_dir) -> Context:
    store = StudyStore(storage)
    return Context(store, {name: store.load(name) for name in store.names()}, data_dir)


def exercise_figure(context: Context, number: int):
    return {f.number: f for f in EXERCISE_FIGURES}[number].build(context)


def test_every_exercise_figure_but_the_faces_is_drawn(built):
    _, result = built
    stems = {Path(w.html).stem for w in result.written}
    for number in range(1, 11):
        assert any(stem.startswith(f"fig{number:02d}") for stem in stems), number
    assert all(line.startswith(("figure 11", "figure 12")) for line in result.missing)


def test_every_figure_has_html_and_a_non_blank_png_of_the_page_size(built_png):
    out, result = built_png
    assert len(result.written) >= 20
    for written in result.written:
        assert (out / written.html).stat().st_size > 1000
        with Image.open(out / written.png) as image:
            assert image.size == written.size, written.png
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 5, f"{written.png} looks blank"


def test_every_study_gets_search_figures(built):
    out, result = built
    assert len(result.written) > 50
    assert all((out / w.html).stat().st_size > 1000 and w.png is None for w in result.written)
    for name in MLP_STUDIES:
        stems = {Path(w.html).stem for w in result.written if w.html.startswith(name + "/")}
        assert {"search_history", "search_learning_curves", "search_top_trials"} <= stems, name


def test_index_links_every_file_and_names_the_missing_study(built_png):
    out, result = built_png
    index = (out / "index.html").read_text()
    links = set(re.findall(r"(?:href|src)='([^'#]+)'", index))
    for written in result.written:
        assert written.html in links and written.png in links
    assert all((out / link).is_file() for link in links)
    assert "4 trials: 4 complete" in index  # mlp_lr
    assert "figure 9" not in index.lower()  # not among the studies asked for


def test_index_names_the_command_for_a_missing_study(built, storage):
    out, _ = built
    index = (out / "index.html").read_text()
    assert ("not in storage: run <code>python -m search.run --study cnn_modes --storage "
            f"{storage}</code>") in index


def test_learning_rate_figure_has_one_line_per_learning_rate(context):
    (figure,) = exercise_figure(context, 2)
    lrs = sorted(t.config["lr"] for t in context.studies["mlp_lr"].finished())
    assert lrs == [0.00001, 0.001, 0.01, 1.0]
    assert sorted(float(t.name.split()[0].removeprefix("lr=")) for t in figure.figure.data) == lrs


def test_batch_size_figures_have_one_curve_per_batch_size(context):
    accuracy, speed, losses = exercise_figure(context, 5)
    raw = [t for t in losses.figure.data if t.name.startswith("every batch")]  # + averages
    assert len(accuracy.figure.data) == len(raw) == 4
    assert [bar.y[0] for bar in speed.figure.data[::2]] == [1068, 67, 9, 2]  # ceil(1068 / b)


def test_decision_boundary_has_the_33_classes(context):
    curves, maps = exercise_figure(context, 1)
    heatmap = maps.figure.data[0]
    assert heatmap.type == "heatmap" and heatmap.zmax - heatmap.zmin == NUM_CLASSES
    countries = [t for t in maps.figure.data if t.type == "scattergl"]
    assert len({t.name for t in countries}) == NUM_CLASSES
    assert len({t.marker.color for t in countries}) == NUM_CLASSES
    assert len(curves.figure.data) == 6  # 3 splits x (loss, accuracy)


def test_grid_figures_follow_depth_and_width(context):
    (depth,) = exercise_figure(context, 7)
    (width,) = exercise_figure(context, 8)
    assert list(depth.figure.data[0].x) == [1, 2, 6, 10]
    assert list(width.figure.data[0].x) == [8, 16, 32, 64]


def test_gradient_figure_has_a_panel_per_model_and_a_line_per_layer(context):
    (figure,) = exercise_figure(context, 9)
    assert len(figure.figure.layout.annotations) == 4  # no fix + 3 fixes
    assert len(figure.figure.data) == 4 * 6


def test_missing_study_gets_a_line_not_a_crash(tmp_path, data_dir):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="mlp_demo", storage=url)  # stored, but no trial yet
    result = build(BuildOptions(storage_url=url, out=tmp_path / "out",
                                studies=("mlp_grid", "mlp_demo"), data_dir=data_dir, png=False))
    assert result.written == []
    assert [line.split(":")[0] for line in result.missing] == ["figure 6", "figure 7",
                                                               "figure 8"]
    index = (tmp_path / "out" / "index.html").read_text()
    assert ("not in storage: run <code>python -m search.run --study mlp_grid --storage "
            f"{url}</code>") in index  # made where the report reads it


def test_cli_writes_html_only(storage, tmp_path, data_dir):
    command = [sys.executable, "-m", "reports.build", "--storage", storage, "--out",
               str(tmp_path), "--data-dir", str(data_dir)]
    done = subprocess.run([*command, "--study", "mlp_lr", "--no-png"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mlp_lr" / "fig02_lr_val_loss.html").is_file()
    assert not list(tmp_path.rglob("*.png"))


def test_cli_rejects_an_unknown_study_in_one_line(storage, tmp_path, capsys):
    assert main(["--study", "nope", "--storage", storage, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown study 'nope'; known: ") and err.count("\n") == 1
