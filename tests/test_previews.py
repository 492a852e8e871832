"""The per-trial PNG previews: matplotlib figures with readable axes, drawn by the objectives."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from objectives import previews
from objectives.euro_data import CAPITALS, COUNTRY_NAMES
from objectives.reporter import RecordingReporter
from objectives.runtime import Runtime
from tests.reporters import StopAfter

CURVE_PIXELS = (640, 400)  # CURVE_SIZE at DPI


def pixels(png: bytes) -> np.ndarray:
    """The PNG as an (H, W) array of grey levels, 0 black .. 255 white."""
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("L"), dtype=np.int16)


def dark(area: np.ndarray) -> int:
    """How many pixels of ``area`` are ink (darker than mid grey)."""
    return int((area < 128).sum())


def margins(grey: np.ndarray) -> dict[str, np.ndarray]:
    """The strips around the axes box of a curve preview: tick values and axis labels go
    left and below it, the title above it."""
    height, width = grey.shape
    left, bottom, right, top = previews.CURVE_AXES
    x0, x1 = int(left * width), int(right * width)
    y_top, y_bottom = int((1 - top) * height), int((1 - bottom) * height)
    return {"left": grey[y_top:y_bottom, :x0 - 3],  # the axis line itself is not text
            "below": grey[y_bottom + 3:, x0:x1], "above": grey[:y_top - 3, x0:x1]}


@pytest.fixture(scope="module")
def blank_margins() -> dict[str, np.ndarray]:
    """The same layout with the axes switched off: what the margins hold without any text."""
    figure, axes = previews._figure(previews.CURVE_SIZE, previews.CURVE_AXES)
    axes.plot([0, 1, 2], [3.0, 2.0, 1.5])
    axes.set_axis_off()
    return margins(pixels(previews._png(figure)))


def test_curves_have_the_size_and_text_in_every_margin(blank_margins) -> None:
    png = previews.curves_png({"train": [2.5, 1.2, 0.8, 0.7], "validation": [2.6, 1.4, 1.0, 0.9]},
                              "loss per epoch", "epoch", "loss")
    grey = pixels(png)
    assert grey.shape[::-1] == CURVE_PIXELS
    drawn = margins(grey)
    for side in ("left", "below", "above"):
        assert dark(blank_margins[side]) == 0, side  # the blank layout has no ink there
        # Tick values and the axis label (or the title) put ink there: dozens of glyphs.
        assert dark(drawn[side]) > 150, (side, dark(drawn[side]))


def test_one_epoch_still_shows_its_point_and_a_legend() -> None:
    grey = pixels(previews.curves_png({"train": [0.7], "validation": [0.6]}, "accuracy",
                                      "epoch", "accuracy"))
    height, width = grey.shape
    left, bottom, right, top = previews.CURVE_AXES
    inside = grey[int((1 - top) * height) + 3:int((1 - bottom) * height) - 3,
                  int(left * width) + 3:int(right * width) - 3]
    assert dark(inside) > 20  # the markers and the legend's text


def test_non_finite_values_do_not_break_a_curve() -> None:
    png = previews.curves_png({"train": [1.0, float("nan"), float("inf"), 0.5]}, "loss",
                              "epoch", "loss")
    assert pixels(png).shape[::-1] == CURVE_PIXELS
    png = previews.curves_png({"train": [float("nan")]}, "loss", "epoch", "loss")
    assert pixels(png).shape[::-1] == CURVE_PIXELS


def test_class_map_shows_classes_names_and_wrong_points() -> None:
    rng = np.random.default_rng(0)
    longs, lats = np.linspace(-12, 42, 60), np.linspace(34, 72, 50)
    grid = rng.integers(0, 33, (50, 60)).astype(np.uint8)
    points = np.stack([rng.uniform(-10, 40, 3000), rng.uniform(35, 70, 3000)], 1)
    wrong = rng.random(3000) < 0.9  # more than MAP_POINTS: a sample is drawn
    png = previews.class_map_png(grid, longs, lats, points, wrong, 33, COUNTRY_NAMES,
                                 [(x, y) for _, x, y in CAPITALS])
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[:2] == (600, 720)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 33  # every class has a colour


def test_image_grid_fits_the_images_it_is_given() -> None:
    images = [np.full((64, 64, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    png = previews.image_grid_png(images, [f"image {i}" for i in range(5)], "five images")
    width, height = Image.open(io.BytesIO(png)).size
    assert (width, height) == (600, 370)  # 4 columns, 2 rows


def test_mlp_saves_readable_previews_for_the_dashboard(data_dir: Path) -> None:
    from objectives.mlp import Config, fit

    torch.set_num_threads(1)
    reporter = RecordingReporter()
    fit(Config(depth=2, width=16, epochs=3, batch_size=512, train_fraction=0.1), reporter,
        Runtime(data_dir=data_dir, device="cpu"))
    for name in ("loss_curves.png", "accuracy_curves.png", "batch_losses.png"):
        assert pixels(reporter.artifacts[name]).shape[::-1] == CURVE_PIXELS, name
    assert pixels(reporter.artifacts["decision_boundary.png"]).shape == (600, 720)


def test_face_trials_save_curves_and_their_misclassified_images(data_dir: Path,
                                                                tmp_path: Path) -> None:
    from objectives.resnet import Config, fit

    torch.set_num_threads(1)
    reporter = RecordingReporter()
    fit(Config(mode="scratch", image_size=32, epochs=1, batch_size=32, lr=1e-3,
               train_fraction=0.1), reporter,
        Runtime(data_dir=data_dir, device="cpu", cache_dir=tmp_path))
    for name in ("loss_curves.png", "accuracy_curves.png"):
        assert pixels(reporter.artifacts[name]).shape[::-1] == CURVE_PIXELS, name
    wrong = len(reporter.logs["test_errors"])
    if wrong:
        grid = pixels(reporter.artifacts["test_errors.png"])
        rows = -(-min(wrong, 16) // 4)
        assert grid.shape == (int(100 * (1.6 * rows + 0.5)), 600)
    else:
        assert "test_errors.png" not in reporter.artifacts


def test_a_reused_figure_draws_what_a_fresh_one_draws() -> None:
    """Each thread redraws its own figures: what an earlier preview drew (a log axis, other
    lines, a legend) must not show in the next."""
    import threading

    series = {"train": [0.9, 0.5, 0.4], "validation": [1.0, 0.7, 0.6]}
    fresh: list[bytes] = []
    thread = threading.Thread(target=lambda: fresh.append(
        previews.curves_png(series, "loss per epoch", "epoch", "loss")))
    thread.start()
    thread.join()
    previews.curves_png({"a": 10 ** -np.linspace(0, 3, 100), "b": [1.0] * 50}, "log", "x", "y")
    assert previews.curves_png(series, "loss per epoch", "epoch", "loss") == fresh[0]


PNGS = {"loss_curves.png", "accuracy_curves.png", "batch_losses.png", "decision_boundary.png"}
RAW = {"batch_losses.npy", "decision_boundary.npz"}


@pytest.mark.parametrize(("policy", "stop_after", "drawn"), [
    ("all", 1, True), ("finished", 1, False), ("finished", 99, True), ("none", 99, False)])
def test_the_previews_policy_decides_which_runs_draw(data_dir: Path, policy: str,
                                                     stop_after: int, drawn: bool) -> None:
    """``finished`` skips the runs the reporter stopped early (pruned trials); ``none`` skips
    all. The raw arrays the report figures read are saved whatever the policy."""
    from objectives.mlp import Config, fit

    torch.set_num_threads(1)
    reporter = StopAfter(stop_after)
    fit(Config(depth=2, width=16, epochs=2, batch_size=512, train_fraction=0.1), reporter,
        Runtime(data_dir=data_dir, device="cpu", previews=policy))
    assert len(reporter.steps) == min(stop_after, 2)
    assert set(reporter.artifacts) >= RAW
    assert (set(reporter.artifacts) >= PNGS) if drawn else not PNGS & set(reporter.artifacts)


def test_lanes_follow_the_previews_policy_per_lane(data_dir: Path) -> None:
    """In one pack under ``finished``, the lane stopped early draws nothing and the lane that
    ran its epochs draws its four previews."""
    from objectives.mlp import Config
    from objectives.mlp_lanes import LaneTask, train_lanes

    torch.set_num_threads(1)
    config = Config(depth=2, width=16, epochs=3, batch_size=512, train_fraction=0.1)
    stopped, finished = StopAfter(1), StopAfter(99)
    ends = []
    train_lanes([LaneTask(config, stopped), LaneTask(config, finished)],
                Runtime(data_dir=data_dir, device="cpu", previews="finished"), ends.append)
    assert [end.error for end in ends] == [None, None]
    assert (len(stopped.steps), len(finished.steps)) == (1, 3)
    assert set(stopped.artifacts) >= RAW and not PNGS & set(stopped.artifacts)
    assert set(finished.artifacts) >= RAW | PNGS


def test_a_study_run_with_previews_none_keeps_the_raw_arrays_and_says_so(
        data_dir: Path, storage_url: str) -> None:
    import optuna
    from optuna_dashboard import get_note

    from search.driver.runner import RunOptions, run_study
    from search.study.spec import load_study_spec

    spec = load_study_spec("mlp_demo").with_overrides(fixed={"epochs": 2}, previews="none")
    run_study(spec, RunOptions(n_trials=2, data_dir=data_dir, storage_url=storage_url,
                               device="cpu", seed=1, progress=False, lanes=2))
    study = optuna.load_study(study_name="mlp_demo", storage=storage_url)
    for frozen in study.trials:
        artifacts = set(frozen.user_attrs["artifacts"])
        assert artifacts >= RAW and not any(name.endswith(".png") for name in artifacts)
        note = get_note(optuna.Trial(study, frozen._trial_id))
        assert "No PNG previews: this run drew them for no trial" in note


@pytest.mark.parametrize("where", ["file", "flag"])
def test_a_bad_previews_value_is_one_line(where: str, tmp_path: Path) -> None:
    import yaml

    from objectives.errors import ConfigError
    from search.study.spec import load_study_spec

    if where == "flag":
        with pytest.raises(ConfigError, match=r"--previews must be one of all, finished, none"):
            load_study_spec("mlp_demo").with_overrides(previews="some")
        return
    study = yaml.safe_load((Path(__file__).parents[1] / "spaces" / "mlp_demo.yaml").read_text())
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump({**study, "previews": True}))
    with pytest.raises(ConfigError, match=r"'previews' must be one of all, finished, none"):
        load_study_spec(str(path))
