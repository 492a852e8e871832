"""Figures 1-10 of the exercise, each drawn from its MLP study (see ASSIGNMENT.md).

Every ``figure_N(context)`` returns ``ReportFigure`` records, or raises ``MissingData`` naming
the study it needs. ``EXERCISE_FIGURES`` lists them with the studies they read; the first
study is where the index shows the figure.

A trial over seeds (``seeds: N``) is drawn as the mean over its seeds with a band from the
lowest to the highest seed (``reports.figure.BAND``), and the title says so; its decision
boundaries are those of the seed whose validation accuracy is the median. One-seed trials are
drawn as single runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from reports.boundary import accuracy_on_map, boundary_figure
from reports.data import StudyInfo, StudyStore, TrialInfo
from reports.figure import (
    BAND,
    SPLIT_COLORS,
    SPLIT_NAMES,
    MissingData,
    ReportFigure,
    band_bounds,
    band_trace,
    line_mode,
    mean_sd,
    seed_counts_text,
    seed_note,
    styled,
    with_note,
)

LINE_COLORS = qualitative.D3
LONG_SERIES = 1000  # curves with more points are drawn with WebGL (Scattergl), not SVG
SMOOTHING = 100  # figure 5c's moving average spans 1/SMOOTHING of a run's batches
MAX_LINE_POINTS = 2000  # a moving average is drawn through at most this many of its points
SPLITS = ("train", "val", "test")
DEFAULT_LR = 0.001  # figure 1's "default run" is the mlp_lr trial at the skeleton's lr


@dataclass(frozen=True)
class Context:
    """What the figure functions read: the store, the loaded studies and the data folder."""

    store: StudyStore
    studies: dict[str, StudyInfo | None]
    data_dir: Path


class ExerciseFigure(NamedTuple):
    number: int
    caption: str
    studies: tuple[str, ...]
    build: Callable[[Context], list[ReportFigure]]


def need(context: Context, name: str) -> StudyInfo:
    """The study, or ``MissingData`` when it is not stored or has no finished trial."""
    study = context.studies.get(name)
    if study is None:
        raise MissingData(name, "not in storage")
    if not study.finished():
        raise MissingData(name, "has no complete or pruned trial yet")
    return study


def epochs(values: list[float]) -> list[int]:
    return list(range(1, len(values) + 1))


def seed_count(trial: TrialInfo) -> int:
    """How many seeds the trial's curves average (1 for a single run)."""
    return len(trial.seeds) if trial.over_seeds else 1


def add_curve(figure: go.Figure, trial: TrialInfo, key: str, *, name: str, color: str,
              dash: str | None = None, mode: str | None = None, legendgroup: str | None = None,
              showlegend: bool | None = None, row: int | None = None, col: int | None = None
              ) -> None:
    """The trial's per-epoch ``key``; for a trial over seeds the mean, drawn over a band from
    the lowest to the highest seed (the band is toggled with its line in the legend)."""
    values = trial.history.get(key)
    if not values:
        return
    x = epochs(values)
    extra: dict[str, object] = {}
    if trial.over_seeds:
        legendgroup = legendgroup or name
        low, high = band_bounds(trial.seed_curves(key), len(values))
        figure.add_trace(band_trace(x, low, high, color, legendgroup=legendgroup,
                                    name=f"{name}: {BAND} over {seed_count(trial)} seeds"),
                         row=row, col=col)
        extra = {"customdata": np.column_stack([low, high]),
                 "hovertemplate": f"{name}<br>epoch %{{x}}: %{{y:.4g}} (mean of "
                                  f"{seed_count(trial)} seeds; {BAND} %{{customdata[0]:.4g}} "
                                  "to %{customdata[1]:.4g})<extra></extra>"}
    line = {"color": color} if dash is None else {"color": color, "dash": dash}
    figure.add_trace(go.Scatter(
        x=x, y=values, mode=mode or line_mode(len(values)), name=name, legendgroup=legendgroup,
        showlegend=showlegend, line=line, **extra), row=row, col=col)


def add_split_lines(figure: go.Figure, trial: TrialInfo, kind: str, *, row: int | None = None,
                    col: int | None = None, dash: str = "solid", suffix: str = "",
                    showlegend: bool = True) -> None:
    """Train/validation/test ``kind`` (loss or accuracy) per epoch, one line per split."""
    for split in SPLITS:
        name = SPLIT_NAMES[split] + suffix
        add_curve(figure, trial, f"{split}_{kind}", name=name, color=SPLIT_COLORS[split],
                  dash=dash, legendgroup=name, showlegend=showlegend, row=row, col=col)


def note_for(trials: list[TrialInfo]) -> str:
    """The title's line on seeds for these trials ("" when all are single runs)."""
    return seed_note([seed_count(t) for t in trials])


def metric_text(trial: TrialInfo, metric: str) -> str:
    """``0.951`` for a single run; ``0.951 ± 0.004 (3 seeds)``, mean ± sd, over seeds."""
    value = trial.metrics.get(metric)
    if metric == "val_accuracy" and value is None:
        value = trial.value
    text = mean_sd(None if value is None else float(value), trial.seed_sd(metric))
    return f"{text} ({seed_count(trial)} seeds)" if trial.over_seeds else text


def loss_accuracy_figure(trials: list[tuple[TrialInfo, str, str]], title: str) -> go.Figure:
    """Loss and accuracy per epoch side by side; ``trials`` holds (trial, dash, legend suffix)."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for trial, dash, suffix in trials:
        for col, kind in enumerate(("loss", "accuracy"), start=1):
            add_split_lines(figure, trial, kind, row=1, col=col, dash=dash, suffix=suffix,
                            showlegend=col == 1)
    styled(figure, with_note(title, note_for([t for t, _, _ in trials])), "epoch", "", "split")
    figure.update_yaxes(title_text="cross-entropy loss", row=1, col=1)
    figure.update_yaxes(title_text="accuracy (fraction correct)", row=1, col=2)
    return figure


BOUNDARY_KEYS = ("longs", "lats", "grid_classes", "test_points", "test_labels",
                 "test_predicted")


def boundary(context: Context, study: StudyInfo, trial: TrialInfo) -> dict[str, np.ndarray]:
    """The trial's decision-boundary arrays (over seeds: the median seed's, see
    ``TrialInfo.median_seed``); ``MissingData`` without the artifact, and
    ``UnreadableArtifact`` when it cannot be read."""
    name = "decision_boundary.npz"
    seed = trial.median_seed
    if seed is not None and f"seed{seed}_{name}" in trial.artifacts:
        name = f"seed{seed}_{name}"
    data = context.store.npz(trial, name, keys=BOUNDARY_KEYS)
    if data is None:
        raise MissingData(study.name, f"trial #{trial.number} has no decision_boundary.npz "
                          "artifact (is the artifact folder beside the storage?)")
    return data


def map_note(trial: TrialInfo) -> str:
    """Which seed a boundary map shows: "" for a single run."""
    if trial.median_seed is None:
        return ""
    return (f"seed {trial.median_seed}, the median of {seed_count(trial)} by validation "
            "accuracy")


def find_trial(study: StudyInfo, **config: object) -> TrialInfo | None:
    """The first complete trial whose config has these values."""
    for trial in study.complete():
        if all(trial.config.get(key) == value for key, value in config.items()):
            return trial
    return None


# Figure 1 --------------------------------------------------------------------------------
def default_run(context: Context) -> tuple[StudyInfo, TrialInfo]:
    """The default run: mlp_lr's lr=0.001 trial, else mlp_batchnorm's run without BatchNorm."""
    for name, config in (("mlp_lr", {"lr": DEFAULT_LR}), ("mlp_batchnorm", {"batch_norm": False})):
        study = context.studies.get(name)
        trial = find_trial(study, **config) if study else None
        if trial is not None:
            return study, trial
    raise MissingData("mlp_lr", "no complete trial with lr=0.001 (nor an mlp_batchnorm trial "
                      "without BatchNorm)")


def figure_1(context: Context) -> list[ReportFigure]:
    study, trial = default_run(context)
    what = f"{study.name} trial #{trial.number}"
    curves = loss_accuracy_figure([(trial, "solid", "")],
                                  f"Figure 1: default MLP (depth 6, width 16, lr 0.001), {what}")
    data = boundary(context, study, trial)
    panel = f"test accuracy {accuracy_on_map(data):.3f}"
    if map_note(trial):
        panel += f" ({map_note(trial)})"
    maps = boundary_figure([data], [panel],
                           f"Figure 1: decision boundaries of the default MLP ({what})")
    return [ReportFigure("fig01_default_curves", "Figure 1: loss and accuracy per epoch", curves),
            ReportFigure("fig01_default_boundary", "Figure 1: decision boundaries", maps,
                         height=900)]


# Figure 2 --------------------------------------------------------------------------------
def figure_2(context: Context) -> list[ReportFigure]:
    study = need(context, "mlp_lr")
    figure = go.Figure()
    trials = sorted(study.finished(), key=lambda t: -float(t.config.get("lr", 0)))
    for index, trial in enumerate(trials):
        values = trial.history.get("val_loss", [])
        name = f"lr={trial.config.get('lr'):g}"
        if trial.state == "PRUNED":
            name += f" (stopped after epoch {len(values)}: diverged)" if "diverged" in trial.note \
                else f" (pruned after epoch {len(values)})"
        add_curve(figure, trial, "val_loss", name=name,
                  color=LINE_COLORS[index % len(LINE_COLORS)],
                  dash="dash" if trial.state == "PRUNED" else "solid")
    styled(figure, with_note("Figure 2: validation loss per epoch for each learning rate "
                             "(mlp_lr)", note_for(trials)),
           "epoch", "validation cross-entropy loss (log scale)", "learning rate")
    figure.update_yaxes(type="log")
    return [ReportFigure("fig02_lr_val_loss", "Figure 2: validation loss per learning rate",
                         figure)]


# Figure 3 --------------------------------------------------------------------------------
def figure_3(context: Context) -> list[ReportFigure]:
    study = need(context, "mlp_epochs")
    trial = max(study.finished(), key=lambda t: len(t.history.get("train_loss", [])))
    figure = go.Figure()
    add_split_lines(figure, trial, "loss")
    n = len(trial.history.get("train_loss", []))
    styled(figure, with_note(f"Figure 3: train, validation and test loss over {n} epochs "
                             f"(mlp_epochs #{trial.number})", note_for([trial])),
           "epoch", "cross-entropy loss", "split")
    return [ReportFigure("fig03_epochs_loss", "Figure 3: loss over the epochs", figure)]


# Figure 4 --------------------------------------------------------------------------------
def figure_4(context: Context) -> list[ReportFigure]:
    study = need(context, "mlp_batchnorm")
    rows = []
    for trial in sorted(study.finished(), key=lambda t: bool(t.config.get("batch_norm"))):
        with_bn = bool(trial.config.get("batch_norm"))
        rows.append((trial, "solid" if with_bn else "dot",
                     ", with BatchNorm" if with_bn else ", without BatchNorm"))
    figure = loss_accuracy_figure(rows, "Figure 4: loss and accuracy per epoch with and without "
                                        "BatchNorm (mlp_batchnorm)")
    figure.update_layout(legend_title_text="split, model")
    return [ReportFigure("fig04_batchnorm", "Figure 4: with and without BatchNorm", figure)]


# Figure 5 --------------------------------------------------------------------------------
def moving_average(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(batch index at each window's centre, the window's mean) for every full window of
    ``window`` consecutive batches (batch indices from 1), thinned to at most MAX_LINE_POINTS
    points, the last one kept: a moving average barely moves from one batch to the next."""
    sums = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64))])
    means = (sums[window:] - sums[:-window]) / window
    x = np.arange(len(means)) + (window + 1) / 2
    keep = np.unique(np.r_[np.arange(0, len(means), max(1, -(-len(means) // MAX_LINE_POINTS))),
                           len(means) - 1])
    return x[keep], means[keep]


def batch_losses(context: Context, study: StudyInfo, trial: TrialInfo
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(the shown run's per-batch training losses, every seed's): a single run's
    ``batch_losses.npy`` twice, or the median seed's and each seed's ``seed{S}_`` file."""
    shown = trial.median_seed
    name = f"seed{shown}_batch_losses.npy" if shown is not None else "batch_losses.npy"
    raw = context.store.npy(trial, name)
    if raw is None:
        raw = context.store.npy(trial, "batch_losses.npy")
    if raw is None:
        raise MissingData(study.name, f"trial #{trial.number} has no batch_losses.npy")
    if not trial.over_seeds:
        return raw, [raw]
    runs = [context.store.npy(trial, f"seed{seed}_batch_losses.npy") for seed in trial.seeds]
    return raw, [r for r in runs if r is not None] or [raw]


def batch_loss_traces(figure: go.Figure, trial: TrialInfo, raw: np.ndarray,
                      runs: list[np.ndarray], name: str, color: str) -> bool:
    """Figure 5c's traces of one batch size: the loss of every batch as stored (raw, on a
    linear batch axis) and, over it, a moving average; over seeds the moving average is of the
    per-batch mean, with a band from the lowest to the highest seed's moving average. True
    when a moving average was drawn (a single run of under 2 * SMOOTHING batches has none)."""
    webgl = len(raw) > LONG_SERIES  # SVG slows to a crawl on tens of thousands of points
    kind = go.Scattergl if webgl else go.Scatter
    window = len(raw) // SMOOTHING
    smooth = window >= 2 or trial.over_seeds
    shown = f" (seed {trial.median_seed}, the median)" if trial.over_seeds else ""
    # The legend groups each batch size's traces under its name and toggles them together.
    figure.add_trace(kind(
        x=np.arange(1, len(raw) + 1, dtype=np.int32), y=raw, mode="lines",
        name=f"every batch{shown}",
        legendgroup=name, legendgrouptitle_text=name, opacity=0.35 if smooth else 1.0,
        line={"color": color, "width": 1}))
    if not smooth:
        return False
    window = max(1, window)
    length = min(len(r) for r in runs)
    averaged = [moving_average(r[:length], window) for r in runs]
    x, mean = moving_average(np.mean([r[:length] for r in runs], axis=0), window)
    what = f"moving average over {window} batches" if window > 1 else "per batch"
    if trial.over_seeds:
        low, high = band_bounds([list(a[1]) for a in averaged], len(x))
        figure.add_trace(band_trace(x, low, high, color, legendgroup=name, webgl=webgl,
                                    name=f"{BAND} over {len(runs)} seeds ({what})"))
        what = f"mean of {len(runs)} seeds, {what}"
    figure.add_trace(kind(x=x, y=mean, mode="lines", name=what, legendgroup=name,
                          line={"color": color, "width": 2.5}))
    return True


def figure_5(context: Context) -> list[ReportFigure]:
    study = need(context, "mlp_batch_size")
    trials = sorted(study.finished(), key=lambda t: t.config.get("batch_size", 0))
    names = [f"batch {t.config.get('batch_size')}, {t.config.get('epochs')} epoch(s)"
             for t in trials]
    colors = [LINE_COLORS[i % len(LINE_COLORS)] for i in range(len(trials))]
    note = note_for(trials)
    seeds = seed_counts_text([seed_count(t) for t in trials])

    accuracy = go.Figure()
    for trial, name, color in zip(trials, names, colors, strict=True):
        add_curve(accuracy, trial, "val_accuracy", name=name, color=color, mode="lines+markers")
    styled(accuracy, with_note("Figure 5a: validation accuracy per epoch for each batch size",
                               note), "epoch", "validation accuracy (fraction correct)",
           "batch size")

    speed = make_subplots(rows=1, cols=2, subplot_titles=("iterations per epoch",
                                                          "seconds per epoch (mean)"))
    for trial, name, color in zip(trials, names, colors, strict=True):
        label = str(trial.config.get("batch_size"))
        iterations = trial.history.get("iterations", [np.nan])
        seconds = trial.history.get("epoch_seconds", [np.nan])
        spread = {}
        if trial.over_seeds:  # whiskers from the fastest to the slowest seed's mean epoch
            per_seed = [float(np.mean(c)) for c in trial.seed_curves("epoch_seconds")]
            if per_seed:
                middle = float(np.mean(seconds))
                spread = {"error_y": {"type": "data", "symmetric": False,
                                      "array": [max(per_seed) - middle],
                                      "arrayminus": [middle - min(per_seed)]}}
        speed.add_trace(go.Bar(x=[label], y=[iterations[0]], name=name, marker_color=color,
                               legendgroup=name, text=[f"{iterations[0]:,.0f}"]), row=1, col=1)
        speed.add_trace(go.Bar(x=[label], y=[float(np.mean(seconds))], name=name,
                               marker_color=color, legendgroup=name, showlegend=False,
                               text=[f"{np.mean(seconds):.2f} s"], **spread), row=1, col=2)
    styled(speed, with_note("Figure 5b: iterations and seconds per epoch for each batch size",
                            f"seconds: mean over {seeds} seeds; whiskers: {BAND} of the seeds' "
                            "mean epoch" if seeds else ""),
           "batch size", "", "batch size")
    speed.update_yaxes(title_text="iterations (batches) per epoch (log scale)", type="log",
                       row=1, col=1)
    speed.update_yaxes(title_text="seconds per epoch", row=1, col=2)

    losses = go.Figure()
    smoothed = False
    for trial, name, color in zip(trials, names, colors, strict=True):
        raw, runs = batch_losses(context, study, trial)
        smoothed |= batch_loss_traces(losses, trial, raw, runs, name, color)
    average = f"moving average over 1/{SMOOTHING} of the run's batches"
    explain = ""
    if seeds:
        explain = (f"thin: the loss of every batch of the median seed; thick: the mean of "
                   f"{seeds} seeds' losses, {average}; bands: {BAND} of the seeds' moving "
                   "averages")
    elif smoothed:
        explain = f"thin: the loss of every batch; thick: its {average}"
    styled(losses, with_note("Figure 5c: training loss of every batch for each batch size",
                             explain),
           "batch index (batches since the start of training)",
           "training cross-entropy loss of the batch", "batch size")
    return [ReportFigure("fig05a_batch_size_val_accuracy", "Figure 5a: validation accuracy",
                         accuracy),
            ReportFigure("fig05b_batch_size_iterations", "Figure 5b: iterations and seconds",
                         speed),
            ReportFigure("fig05c_batch_size_batch_loss", "Figure 5c: loss per batch", losses)]


# Figures 6-8 -------------------------------------------------------------------------------
def grid_label(trial: TrialInfo) -> str:
    return f"depth {trial.config.get('depth')}, width {trial.config.get('width')}"


def val_accuracy(trial: TrialInfo) -> float:
    return float(trial.metrics.get("val_accuracy", trial.value or float("nan")))


def figure_6(context: Context) -> list[ReportFigure]:
    study = need(context, "mlp_grid")
    complete = study.complete()
    if not complete:
        raise MissingData(study.name, "has no complete trial yet")
    best = max(complete, key=val_accuracy)
    worst = min(complete, key=val_accuracy)
    titles = [f"best: {grid_label(best)} (val acc {metric_text(best, 'val_accuracy')})",
              f"worst: {grid_label(worst)} (val acc {metric_text(worst, 'val_accuracy')})"]
    curves = make_subplots(rows=1, cols=2, subplot_titles=titles, shared_yaxes=True)
    add_split_lines(curves, best, "loss", row=1, col=1)
    add_split_lines(curves, worst, "loss", row=1, col=2, showlegend=False)
    styled(curves, with_note("Figure 6: loss per epoch of the best and worst grid models "
                             "(mlp_grid)", note_for([best, worst])), "epoch", "", "split")
    curves.update_yaxes(title_text="cross-entropy loss", row=1, col=1)
    map_titles = [title + (f"<br>map: {map_note(t)}" if map_note(t) else "")
                  for title, t in zip(titles, (best, worst), strict=True)]
    maps = boundary_figure([boundary(context, study, best), boundary(context, study, worst)],
                           map_titles, "Figure 6: decision boundaries of the best and worst "
                                       "grid models (mlp_grid)")
    return [ReportFigure("fig06_grid_best_worst_loss", "Figure 6: best and worst loss", curves),
            ReportFigure("fig06_grid_best_worst_boundary", "Figure 6: best and worst boundaries",
                         maps, width=1400, height=850)]


def accuracy_against(context: Context, key: str, fixed: dict[str, int], number: int,
                     log_x: bool) -> list[ReportFigure]:
    study = need(context, "mlp_grid")
    rows = sorted((t for t in study.complete()
                   if all(t.config.get(k) == v for k, v in fixed.items())),
                  key=lambda t: t.config[key])
    if not rows:
        raise MissingData(study.name, f"no complete trial with {fixed}")
    figure = go.Figure()
    x = [t.config[key] for t in rows]
    seeded = any(t.over_seeds for t in rows)
    for split in SPLITS:
        metric = f"{split}_accuracy"
        y = [t.metrics.get(metric) for t in rows]
        if seeded:  # from the lowest to the highest seed of each trial
            values = [t.seed_values(metric) or [np.nan if v is None else v]
                      for t, v in zip(rows, y, strict=True)]
            figure.add_trace(band_trace(
                x, np.array([min(v) for v in values]), np.array([max(v) for v in values]),
                SPLIT_COLORS[split], legendgroup=SPLIT_NAMES[split],
                name=f"{SPLIT_NAMES[split]}: {BAND} over the seeds"))
        figure.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=SPLIT_NAMES[split],
            line={"color": SPLIT_COLORS[split]},
            **({"legendgroup": SPLIT_NAMES[split]} if seeded else {})))
    what = ", ".join(f"{k} {v}" for k, v in fixed.items())
    styled(figure, with_note(f"Figure {number}: final accuracy against {key} at {what} "
                             "(mlp_grid)", note_for(rows)),
           f"{key} ({'hidden layers' if key == 'depth' else 'units per hidden layer'}"
           f"{', log scale' if log_x else ''})", "accuracy (fraction correct)", "split")
    figure.update_xaxes(tickvals=x, type="log" if log_x else "linear")
    return [ReportFigure(f"fig{number:02d}_accuracy_vs_{key}", f"Figure {number}: accuracy "
                         f"against {key}", figure)]


def figure_7(context: Context) -> list[ReportFigure]:
    return accuracy_against(context, "depth", {"width": 16}, 7, log_x=False)


def figure_8(context: Context) -> list[ReportFigure]:
    return accuracy_against(context, "width", {"depth": 6}, 8, log_x=True)


# Figure 9 --------------------------------------------------------------------------------
def fix_label(trial: TrialInfo) -> str:
    parts = [name for key, name in (("residual", "residual"), ("batch_norm", "BatchNorm"))
             if trial.config.get(key)]
    return " + ".join(parts) if parts else "no fix"


def _gradient_title(study: str, trial: TrialInfo) -> str:
    """Panel title; names the layers whose gradient is exactly 0 (a log axis cannot show 0)."""
    zero = [k.removeprefix("grad_sq_norm_layer") for k, v in trial.history.items()
            if k.startswith("grad_sq_norm_layer") and v and max(v) == 0.0]
    text = (f"{fix_label(trial)}<br>({study} #{trial.number}, val acc "
            f"{metric_text(trial, 'val_accuracy')})")
    return text + (f"<br>gradient exactly 0: layer {', '.join(zero)}" if zero else "")


def figure_9(context: Context) -> list[ReportFigure]:
    panels = [("mlp_deep_gradients", t) for t in need(context, "mlp_deep_gradients").finished()]
    fix = context.studies.get("mlp_deep_fix")
    if fix is not None:
        panels += [("mlp_deep_fix", t) for t in fix.finished()]
    titles = [_gradient_title(name, t) for name, t in panels]
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, shared_yaxes=True)
    for col, (_, trial) in enumerate(panels, start=1):
        keys = sorted((k for k in trial.history if k.startswith("grad_sq_norm_layer")),
                      key=lambda k: int(k.removeprefix("grad_sq_norm_layer")))
        for index, key in enumerate(keys):
            layer = key.removeprefix("grad_sq_norm_layer")
            add_curve(figure, trial, key, name=f"layer {layer}", legendgroup=layer,
                      color=LINE_COLORS[index % len(LINE_COLORS)], mode="lines+markers",
                      showlegend=col == 1, row=1, col=col)
    figure.update_annotations(font_size=12)
    styled(figure, with_note("Figure 9: mean squared gradient norm per epoch of Linear layers "
                             "of the depth-100 net, before and after the fix",
                             note_for([t for _, t in panels])), "epoch", "", "Linear layer")
    figure.update_yaxes(type="log", exponentformat="power")
    figure.update_yaxes(title_text="mean squared L2 norm of the weight gradient (log scale)",
                        row=1, col=1)
    figure.update_layout(margin={"t": 140})
    return [ReportFigure("fig09_deep_gradients", "Figure 9: gradient norms of the deep net",
                         figure, width=max(1000, 420 * len(panels)), height=650)]


# Figure 10 -------------------------------------------------------------------------------
def figure_10(context: Context) -> list[ReportFigure]:
    study = need(context, "mlp_implicit")
    trials = [find_trial(study, features=kind) for kind in ("raw", "implicit")]
    present = [t for t in trials if t is not None]
    if not present:
        raise MissingData(study.name, "has no complete trial")
    titles = [f"{'raw (long, lat)' if t.config.get('features') == 'raw' else 'implicit sin(a·x)'}"
              f" input, test acc {_test_accuracy(t)}"
              + (f"<br>map: {map_note(t)}" if map_note(t) else "") for t in present]
    maps = boundary_figure([boundary(context, study, t) for t in present], titles,
                           "Figure 10: decision boundaries with raw and implicit-representation "
                           "inputs (mlp_implicit)")
    return [ReportFigure("fig10_implicit_boundary", "Figure 10: raw against implicit input",
                         maps, width=1400 if len(present) > 1 else 1000,
                         height=850 if len(present) > 1 else 900)]


def _test_accuracy(trial: TrialInfo) -> str:
    if trial.over_seeds:
        return metric_text(trial, "test_accuracy")
    return f"{trial.metrics.get('test_accuracy', float('nan')):.3f}"


EXERCISE_FIGURES = (
    ExerciseFigure(1, "default run: loss, accuracy and decision boundaries",
                   ("mlp_lr", "mlp_batchnorm"), figure_1),
    ExerciseFigure(2, "validation loss per learning rate", ("mlp_lr",), figure_2),
    ExerciseFigure(3, "loss over 100 epochs", ("mlp_epochs",), figure_3),
    ExerciseFigure(4, "with and without BatchNorm", ("mlp_batchnorm",), figure_4),
    ExerciseFigure(5, "batch sizes: accuracy, iterations, loss per batch", ("mlp_batch_size",),
                   figure_5),
    ExerciseFigure(6, "best and worst grid model", ("mlp_grid",), figure_6),
    ExerciseFigure(7, "accuracy against depth", ("mlp_grid",), figure_7),
    ExerciseFigure(8, "accuracy against width", ("mlp_grid",), figure_8),
    ExerciseFigure(9, "gradient magnitudes of the deep net, before and after the fix",
                   ("mlp_deep_gradients", "mlp_deep_fix"), figure_9),
    ExerciseFigure(10, "implicit representation against raw input", ("mlp_implicit",),
                   figure_10),
)
