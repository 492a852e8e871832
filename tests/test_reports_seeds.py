"""reports/ over seeds: tiny real 3-seed studies (real CSVs, real SQLite storage) drawn with a
min-max band around the mean, the median seed's boundary maps and mean ± sd in the top-trials
table; figure 5c's raw per-batch losses; figure 11's probe_bn note.

mlp_lr and mlp_grid are made through the real ``search.run`` CLI; the studies of figures 3,
4, 5, 9 and 10 in-process (about 5 s each against 30 s), as tests/test_reports.py makes its
one-seed ones.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from cli_helpers import REPO, run_cli

from reports.data import StudyStore, TrialInfo
from reports.exercise import EXERCISE_FIGURES, LONG_SERIES, Context
from reports.faces import figure_11
from reports.search_plots import search_figures, top_trials_table
from search.driver.runner import RunOptions, run_study
from search.records.storage import open_storage
from search.study.spec import SPACES_DIR, parse_study_spec

SEEDS = 3
CLI_STUDIES = ("mlp_lr", "mlp_grid")
QUICK = {"epochs": 2, "train_fraction": 0.01}
IN_PROCESS = ("mlp_epochs", "mlp_batchnorm", "mlp_batch_size", "mlp_deep_gradients",
              "mlp_implicit")


def tiny_seed_spec(name: str):
    """The study file over 3 seeds, at most 2 epochs on 1% of the training split (batch size
    1 keeps its one epoch: 1,069 batches)."""
    raw = yaml.safe_load((SPACES_DIR / f"{name}.yaml").read_text())
    if "epochs" in raw.get("grid", {}):
        raw["grid"]["epochs"] = [QUICK["epochs"]]
    elif any("epochs" in point for point in raw.get("grid_points") or []):
        for point in raw["grid_points"]:
            point["epochs"] = min(point["epochs"], QUICK["epochs"])
    else:
        raw["fixed"]["epochs"] = QUICK["epochs"]
    raw["fixed"]["train_fraction"] = QUICK["train_fraction"]
    raw["seeds"] = SEEDS
    return parse_study_spec(raw, name=name)


@pytest.fixture(scope="module")
def storage(tmp_path_factory, data_dir) -> str:
    import torch

    torch.set_num_threads(1)
    url = f"sqlite:///{tmp_path_factory.mktemp('seeds') / 'studies.db'}"
    for name in CLI_STUDIES:
        settings = [arg for key, value in QUICK.items() for arg in ("--set", f"{key}={value}")]
        result = run_cli("--study", name, "--seeds", str(SEEDS), *settings, "--storage", url,
                         "--data-dir", str(data_dir), "--no-progress")
        assert result.returncode == 0, result.stdout + result.stderr
    for name in IN_PROCESS:
        spec = tiny_seed_spec(name)
        run_study(spec, RunOptions(n_trials=spec.grid_size(), data_dir=data_dir,
                                   storage_url=url, progress=False, seed=0))
    return url


@pytest.fixture(scope="module")
def context(storage, data_dir) -> Context:
    store = StudyStore(storage)
    return Context(store, {name: store.load(name) for name in store.names()}, data_dir)


def figures(context: Context, number: int):
    return {f.number: f for f in EXERCISE_FIGURES}[number].build(context)


def bands(figure) -> list:
    return [t for t in figure.data if t.fill == "toself"]


def band_edges(trace) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) edge of a band polygon (upper edge out, lower edge back)."""
    y = np.asarray(trace.y, dtype=float)
    half = len(y) // 2
    return y[half:][::-1], y[:half]


def median_seed(trial: TrialInfo) -> int:
    """The seed whose validation accuracy is the median, worked out here from the records."""
    ranked = sorted(trial.seed_metrics, key=lambda m: m["val_accuracy"])
    return ranked[(len(ranked) - 1) // 2]["seed"]


def assert_mean_band(figure, trial: TrialInfo, key: str, name: str) -> None:
    """The line ``name`` is the trial's per-epoch mean over the seeds of ``key``, drawn over a
    band from the lowest to the highest seed."""
    curves = np.array([h[key] for h in trial.user_attrs["seed_histories"]], dtype=float)
    line = next(t for t in figure.data if t.name == name and t.fill != "toself"
                and list(t.y) == pytest.approx(trial.history[key]))
    assert list(line.y) == pytest.approx(list(curves.mean(axis=0)))
    band = next(t for t in bands(figure) if t.legendgroup == line.legendgroup
                and t.xaxis == line.xaxis and "min-max over 3 seeds" in t.name)
    low, high = band_edges(band)
    assert low == pytest.approx(curves.min(axis=0)) and high == pytest.approx(curves.max(axis=0))


def title(item) -> str:
    return item.figure.layout.title.text


def test_report_cli_builds_every_band_figure(storage, tmp_path, data_dir):
    done = subprocess.run(
        [sys.executable, "-m", "reports.build", "--all", "--storage", storage, "--out",
         str(tmp_path), "--data-dir", str(data_dir), "--no-png"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    stems = {p.stem for p in tmp_path.rglob("fig*.html")}
    for number in range(1, 11):
        assert any(stem.startswith(f"fig{number:02d}") for stem in stems), number


def test_loss_and_accuracy_curves_are_the_mean_over_a_min_max_band(context):
    curves, _ = figures(context, 1)
    trial = next(t for t in context.studies["mlp_lr"].complete() if t.config["lr"] == 0.001)
    assert trial.seeds == [42, 43, 44]
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        for kind in ("loss", "accuracy"):
            assert_mean_band(curves.figure, trial, f"{split}_{kind}", name)
    assert len(bands(curves.figure)) == 6
    assert "lines: mean over 3 seeds; bands: min-max over the seeds" in title(curves)


@pytest.mark.parametrize("number", [2, 3, 4, 9])
def test_every_curve_figure_has_a_band_per_line(context, number):
    (item, *_) = figures(context, number)
    lines = [t for t in item.figure.data if t.fill != "toself"]
    assert len(bands(item.figure)) == len(lines) > 0
    assert "min-max over the seeds" in title(item)


def test_learning_rate_bands_follow_the_seeds(context):
    (item,) = figures(context, 2)
    for trial in context.studies["mlp_lr"].finished():
        assert_mean_band(item.figure, trial, "val_loss", f"lr={trial.config['lr']:g}")


def test_boundary_maps_show_the_median_seed(context):
    _, maps = figures(context, 1)
    trial = next(t for t in context.studies["mlp_lr"].complete() if t.config["lr"] == 0.001)
    seed = median_seed(trial)
    assert trial.median_seed == seed == trial.user_attrs["median_seed"]
    stored = context.store.npz(trial, f"seed{seed}_decision_boundary.npz")
    assert np.array_equal(maps.figure.data[0].z, stored["grid_classes"])
    assert f"seed {seed}, the median of 3" in maps.figure.layout.annotations[0].text


def test_best_and_worst_grid_models_use_their_median_seeds(context):
    curves, maps = figures(context, 6)
    grid = context.studies["mlp_grid"].complete()
    best = max(grid, key=lambda t: t.metrics["val_accuracy"])
    worst = min(grid, key=lambda t: t.metrics["val_accuracy"])
    assert_mean_band(curves.figure, best, "val_loss", "validation")
    heatmaps = [t for t in maps.figure.data if t.type == "heatmap"]
    for trial, heatmap, note in zip((best, worst), heatmaps, maps.figure.layout.annotations,
                                    strict=True):
        stored = context.store.npz(trial, f"seed{median_seed(trial)}_decision_boundary.npz")
        assert np.array_equal(heatmap.z, stored["grid_classes"])
        assert f"map: seed {median_seed(trial)}, the median of 3" in note.text
        sd = statistics.stdev(trial.seed_values("val_accuracy"))
        assert f"{trial.metrics['val_accuracy']:.3f} ± {sd:.3f} (3 seeds)" in note.text


def test_implicit_maps_use_the_median_seed(context):
    (maps,) = figures(context, 10)
    study = context.studies["mlp_implicit"]
    for trial, heatmap in zip(sorted(study.complete(), key=lambda t: t.config["features"] !=
                                     "raw"), [t for t in maps.figure.data if t.type ==
                                              "heatmap"], strict=True):
        stored = context.store.npz(trial, f"seed{median_seed(trial)}_decision_boundary.npz")
        assert np.array_equal(heatmap.z, stored["grid_classes"])


@pytest.mark.parametrize(("number", "key", "fixed"), [(7, "depth", {"width": 16}),
                                                      (8, "width", {"depth": 6})])
def test_accuracy_against_depth_and_width_spans_the_seeds(context, number, key, fixed):
    (item,) = figures(context, number)
    rows = sorted((t for t in context.studies["mlp_grid"].complete()
                   if all(t.config[k] == v for k, v in fixed.items())),
                  key=lambda t: t.config[key])
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        line = next(t for t in item.figure.data if t.name == name)
        band = next(t for t in bands(item.figure) if t.legendgroup == name)
        assert list(line.y) == pytest.approx([t.metrics[f"{split}_accuracy"] for t in rows])
        low, high = band_edges(band)
        assert low == pytest.approx([min(t.seed_values(f"{split}_accuracy")) for t in rows])
        assert high == pytest.approx([max(t.seed_values(f"{split}_accuracy")) for t in rows])
    assert "bands: min-max over the seeds" in title(item)


def test_batch_size_figures_band_the_seeds(context):
    accuracy, speed, _ = figures(context, 5)
    for trial in context.studies["mlp_batch_size"].finished():
        name = f"batch {trial.config['batch_size']}, {trial.config['epochs']} epoch(s)"
        assert_mean_band(accuracy.figure, trial, "val_accuracy", name)
    seconds = [t for t in speed.figure.data if t.error_y.array is not None]
    assert len(seconds) == 4 and "whiskers: min-max" in title(speed)


def test_batch_loss_figure_draws_every_stored_batch_loss(context):
    """Figure 5c: per batch size one raw trace equal to the median seed's stored losses on a
    linear batch axis (WebGL past LONG_SERIES points) and a mean moving average over a band."""
    _, _, losses = figures(context, 5)
    figure = losses.figure
    assert figure.layout.xaxis.type in (None, "linear")
    raw = [t for t in figure.data if t.name.startswith("every batch")]
    trials = sorted(context.studies["mlp_batch_size"].finished(),
                    key=lambda t: t.config["batch_size"])
    assert len(raw) == len(trials) == 4
    kinds = set()
    for trial, trace in zip(trials, raw, strict=True):
        stored = context.store.npy(trial, f"seed{median_seed(trial)}_batch_losses.npy")
        assert np.array_equal(np.asarray(trace.y), stored)
        assert list(trace.x) == list(range(1, len(stored) + 1))
        assert trace.type == ("scattergl" if len(stored) > LONG_SERIES else "scatter")
        kinds.add(trace.type)
        group = [t for t in figure.data if t.legendgroup == trace.legendgroup]
        assert any(t.fill == "toself" and "min-max over 3 seeds" in t.name for t in group)
        assert any(t.name.startswith("mean of 3 seeds") for t in group)
    assert kinds == {"scattergl", "scatter"}  # batch 1 is long (1,069 batches), 1024 short
    assert len(raw[0].y) > LONG_SERIES > len(raw[-1].y)
    assert "thin: the loss of every batch of the median seed" in title(losses)


def test_top_trials_show_mean_and_sd_and_search_figures_the_mean(context):
    info = context.studies["mlp_grid"]
    table = top_trials_table(info).figure
    header = [h.replace("<b>", "").replace("</b>", "") for h in table.data[0].header.values]
    cells = dict(zip(header, table.data[0].cells.values, strict=True))
    best = info.ranked()[0]
    values = best.seed_values("val_accuracy")
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    text = cells["val_accuracy (mean ± sd)"][0]
    shown_mean, shown_sd = (float(v) for v in text.split(" ± "))
    assert shown_mean == pytest.approx(mean, abs=1e-3) and shown_sd == pytest.approx(sd, rel=0.1)
    assert " ± " in cells["test_accuracy (mean ± sd)"][0]
    assert cells["seeds"][0] == "42, 43, 44"
    store = StudyStore(context.store.url)
    found, _ = search_figures(store.study("mlp_grid"), info)
    history = next(f for f in found if f.stem == "search_history").figure
    assert "mean of 3 seeds" in history.layout.yaxis.title.text
    dots = next(t for t in history.data if t.mode == "markers")
    assert sorted(dots.y) == pytest.approx(sorted(t.value for t in info.complete()))
    assert sorted(dots.y) == pytest.approx(sorted(t.metrics["val_accuracy"]
                                                  for t in info.complete()))


def test_lcb_study_ranks_by_the_bound_and_says_so(tmp_path, data_dir, storage_url):
    study_file = tmp_path / "toy_seeds_lcb.yaml"
    study_file.write_text("description: toy grid over seeds\nobjective: toy\nmetric: val_loss\n"
                          "direction: minimize\nfixed: {steps: 3, x: 1.0}\n"
                          "grid: {seed_spread: [0.0, 0.5]}\nseeds: 4\naggregate: lcb\n")
    result = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                     str(data_dir), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    info = StudyStore(storage_url).load("toy_seeds_lcb")
    item = top_trials_table(info)
    header = [h.replace("<b>", "").replace("</b>", "") for h in item.figure.data[0].header.values]
    cells = dict(zip(header, item.figure.data[0].cells.values, strict=True))
    assert [float(v) for v in cells["value (95% bound)"]] == pytest.approx(
        [t.value for t in info.ranked()], rel=1e-3)
    assert "95% upper confidence bound on the mean of 4 seeds" in title(item)
    assert all(" ± " in v for v in cells["val_loss (mean ± sd)"])


# Figure 11: which probe_bn the probe ran with ---------------------------------------------
def face_study(url: str, probes: list[str | None]) -> None:
    """cnn_modes with a finetune trial and one probe trial per ``probes`` entry (its probe_bn,
    None for a trial recorded before probe_bn existed), records as the objective writes them."""
    study = optuna.create_study(study_name="cnn_modes", storage=open_storage(url),
                                direction="maximize")
    study.set_user_attr("metric", "val_accuracy")
    runs = [("finetune", None, 0.8)] + [("probe", bn, 0.7 - 0.05 * i)
                                        for i, bn in enumerate(probes)]
    for mode, bn, accuracy in runs:
        trial = study.ask()
        config = {"mode": mode, "lr": 0.001, "backbone": "resnet18"}
        if bn is not None:
            config["probe_bn"] = bn
        trial.set_user_attr("objective", "resnet")
        trial.set_user_attr("config", config)
        trial.set_user_attr("metrics", {"val_accuracy": accuracy, "test_accuracy": accuracy})
        study.tell(trial, accuracy)


def face_table(url: str, data_dir: Path):
    store = StudyStore(url)
    (item,) = figure_11(Context(store, {n: store.load(n) for n in store.names()}, data_dir))
    return item.figure.data[0].cells.values[0], item.figure.layout.title.text


def test_figure_11_says_the_probe_ran_batchnorm_in_training_mode(storage_url, data_dir):
    face_study(storage_url, ["train"])
    rows, text = face_table(storage_url, data_dir)
    assert list(rows) == ["finetune (resnet18)", "probe (resnet18)"]
    assert "probe_bn train: the frozen backbone's BatchNorm in training mode, as in the " \
           "exercise's skeleton" in text
    assert "eval" not in text


def test_figure_11_splits_probes_of_both_kinds(storage_url, data_dir):
    face_study(storage_url, ["train", None])  # None: recorded before probe_bn, so eval
    rows, text = face_table(storage_url, data_dir)
    assert list(rows) == ["finetune (resnet18)", "probe (resnet18, BN eval)",
                          "probe (resnet18, BN train)"]
    assert "train: the frozen backbone's BatchNorm in training mode" in text
    assert "eval: the frozen backbone in eval mode on cached features" in text
