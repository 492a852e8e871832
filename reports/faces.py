"""Figures 11 and 12 of the exercise, from the faces study ``cnn_modes``.

Figure 11 is a table of test accuracy per baseline (the ``mode``, with the backbone when
several were run) and learning rate, marking each baseline's two best runs and the worst run
overall. Figure 12 shows five test images that the best trial (by test accuracy) classifies
right and the worst classifies wrong, captioned with the label and both predictions; best and
worst go by test accuracy, as in the exercise (the searches themselves choose by validation
accuracy), and the figure says so.

The table says how the probe ran (the config's ``probe_bn``): ``train``, the exercise's
skeleton, runs the frozen backbone with BatchNorm in training mode (batch statistics, running
statistics updated); ``eval`` runs it in eval mode on cached features (trials recorded before
``probe_bn`` existed ran that way). When a study holds probes of both kinds, each gets its own
row. A trial over seeds shows its test accuracy as mean ± sd over the seeds.

The XGBoost study (``xgboost_defaults``) and the sklearn probe at the exercise's default C=1
(``sklearn_probe``) join the table as rows without a learning rate, and join the pool from
which figure 12 takes its best and worst model.

A trial's test predictions are read from, in order: the artifact ``test_predictions.json``
(``{"paths", "labels", "probs"}`` lists, as objectives/face_predictions.py writes it, or a list
of ``{"path", "label", "prob"}``) or ``test_predictions.npz``, else the user attribute
``test_errors`` (the misclassified images only). ``prob`` is the predicted probability of
"fake" (label 1); paths are relative to the ``faces/`` data folder.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.data import (
    DECODE_ERRORS,
    StudyInfo,
    TrialInfo,
    UnreadableArtifact,
    decode_error,
)
from reports.exercise import Context, ExerciseFigure, need
from reports.figure import (
    TEMPLATE,
    MissingData,
    ReportFigure,
    mean_sd,
    seed_counts_text,
    table_size,
)

FACES_STUDY = "cnn_modes"
OTHER_BASELINES = ("xgboost_defaults", "sklearn_probe")  # rows without a learning rate
NO_LR = "no learning rate"
CLASS_NAMES = ("real", "fake")
SHOWN_IMAGES = 5
BEST_COLOR, WORST_COLOR = "#c7e9c0", "#fcbba1"
PROBE_BN = {"train": "train: the frozen backbone's BatchNorm in training mode, as in the "
                     "exercise's skeleton",
            "eval": "eval: the frozen backbone in eval mode on cached features"}


class Prediction(NamedTuple):
    label: int
    prob: float | None  # probability of "fake"; None when only the error list is known

    @property
    def predicted(self) -> int:
        if self.prob is None:
            return self.label
        return int(self.prob > 0.5)


def probe_bn(trial: TrialInfo) -> str | None:
    """How a probe trial ran its frozen backbone's BatchNorm (``train`` or ``eval``; trials
    made before ``probe_bn`` existed ran ``eval``); None for any other trial."""
    if trial.user_attrs.get("objective", "resnet") != "resnet" or \
            trial.config.get("mode", trial.params.get("mode")) != "probe":
        return None
    return str(trial.config.get("probe_bn", "eval"))


def baseline_name(trial: TrialInfo, with_probe_bn: bool = False) -> str:
    """``finetune (resnet18)``, ``XGBoost`` or ``sklearn probe (resnet18, C=1)``; with
    ``with_probe_bn`` a probe is ``probe (resnet18, BN train)``."""
    objective = trial.user_attrs.get("objective", "")
    backbone = trial.config.get("backbone")
    if objective == "xgboost":
        return "XGBoost (pixels)"
    if objective == "sklearn_probe":
        return f"sklearn probe ({backbone}, C={trial.config.get('C', '?'):g})"
    name = str(trial.config.get("mode", trial.params.get("mode", "?")))
    details = [str(backbone)] if backbone else []
    if with_probe_bn and probe_bn(trial) is not None:
        details.append(f"BN {probe_bn(trial)}")
    return f"{name} ({', '.join(details)})" if details else name


def other_trials(context: Context) -> list[TrialInfo]:
    """XGBoost trials and the sklearn probe at C=1 (LogisticRegression's default)."""
    found = []
    for name in OTHER_BASELINES:
        study = context.studies.get(name)
        for trial in study.complete() if study else []:
            if name != "sklearn_probe" or trial.config.get("C") == 1.0:
                found.append(trial)
    return found


def test_accuracy(trial: TrialInfo) -> float:
    return float(trial.metrics.get("test_accuracy", math.nan))


# Figure 11 -------------------------------------------------------------------------------
def accuracy_table(study: StudyInfo, others: list[TrialInfo]
                   ) -> tuple[list[str], list[float | str], dict[tuple[str, float | str],
                                                                 TrialInfo]]:
    """(baselines, columns: learning rates high to low then NO_LR, {(baseline, column): trial})."""
    trials = [t for t in study.complete() if math.isfinite(test_accuracy(t))]
    if not trials:
        raise MissingData(study.name, "has no complete trial with a test_accuracy metric")
    cells: dict[tuple[str, float | str], TrialInfo] = {}
    mixed = len({probe_bn(t) for t in trials} - {None}) > 1  # then a row per probe_bn
    for trial in trials + [t for t in others if math.isfinite(test_accuracy(t))]:
        column = float(trial.config["lr"]) if "lr" in trial.config else NO_LR
        key = (baseline_name(trial, with_probe_bn=mixed), column)
        if key not in cells or test_accuracy(trial) > test_accuracy(cells[key]):
            cells[key] = trial
    baselines = sorted({b for b, c in cells if c != NO_LR}) + sorted(
        {b for b, c in cells if c == NO_LR})
    rates: list[float | str] = sorted({c for _, c in cells if c != NO_LR}, reverse=True)
    if any(c == NO_LR for _, c in cells):
        rates.append(NO_LR)
    return baselines, rates, cells


def figure_11(context: Context) -> list[ReportFigure]:
    study = need(context, FACES_STUDY)
    baselines, rates, cells = accuracy_table(study, other_trials(context))
    best_two = {b: sorted((test_accuracy(t), str(lr)) for (bb, lr), t in cells.items()
                          if bb == b and lr != NO_LR)[-2:] for b in baselines}
    worst = min(cells.items(), key=lambda item: test_accuracy(item[1]))[0]
    values, fills = [baselines], [["white"] * len(baselines)]
    for lr in rates:
        column, fill = [], []
        for b in baselines:
            trial = cells.get((b, lr))
            if trial is None:
                column.append("-")
                fill.append("white")
                continue
            text = mean_sd(test_accuracy(trial), trial.seed_sd("test_accuracy"))
            if (b, lr) == worst:
                column.append(f"<b>{text}</b> (worst)")
                fill.append(WORST_COLOR)
            elif any(str(lr) == r for _, r in best_two[b]):
                column.append(f"<b>{text}</b> ★")
                fill.append(BEST_COLOR)
            else:
                column.append(text)
                fill.append("white")
        values.append(column)
        fills.append(fill)
    header = ["<b>baseline</b>", *[f"<b>lr {lr:g}</b>" if lr != NO_LR else f"<b>{NO_LR}</b>"
                                   for lr in rates]]
    notes = ["★ the two best of each baseline, red: the worst overall"]
    seeds = seed_counts_text([len(t.seeds) for t in cells.values() if t.over_seeds])
    if seeds:
        notes.append(f"runs over seeds: mean ± sd of {seeds} seeds")
    modes = sorted({m for t in cells.values() if (m := probe_bn(t)) is not None},
                   reverse=True)
    if modes:
        notes.append("probe_bn " + "; ".join(PROBE_BN.get(m, m) for m in modes))
    margin = {"t": 64 + 16 * len(notes), "l": 10, "r": 10, "b": 20}  # a line per note
    size = table_size(header, values, cell_height=28, header_height=28, margin=margin)
    figure = go.Figure(go.Table(
        columnwidth=size.columnwidth,
        header={"values": header, "fill_color": "#dde5f0", "align": "center", "height": 28},
        cells={"values": values, "fill_color": fills, "align": "center", "height": 28}))
    figure.update_layout(
        template=TEMPLATE, margin=margin,
        title={"text": "Figure 11: test accuracy of each face baseline at each learning rate "
                       f"({FACES_STUDY})<br><sup>{'<br>'.join(notes)}</sup>", "x": 0.01})
    return [ReportFigure("fig11_faces_accuracy_table", "Figure 11: face baselines' test "
                         "accuracy", figure, width=size.width, height=size.height)]


# Figure 12 -------------------------------------------------------------------------------
def predictions(context: Context, trial: TrialInfo) -> tuple[dict[str, Prediction], bool]:
    """({path: Prediction}, complete) for one trial; complete is False when only the errors
    are known (every image not listed is then taken as classified right)."""
    store = context.store
    name = "test_predictions.json"
    records = store.json(trial, name)
    if records is None:
        name = "test_predictions.npz"
        data = store.npz(trial, name)
        records = None if data is None else {key: data[key].tolist() for key in data}
    if records is not None:
        try:
            return _from_records(records), True
        except DECODE_ERRORS as exc:  # valid JSON, but not the records the objectives write
            raise UnreadableArtifact(trial, name, decode_error(exc),
                                     store.artifact_path(trial, name)) from None
    errors = trial.user_attrs.get("test_errors")
    if errors is not None:
        return _from_records(errors), False
    raise MissingData(FACES_STUDY, f"trial #{trial.number} stored no test predictions "
                      "(test_predictions.npz/.json artifact or test_errors attribute)")


def _from_records(records: object) -> dict[str, Prediction]:
    if isinstance(records, dict):  # {"paths": [...], "labels": [...], "probs": [...]}
        columns = {key.removesuffix("s"): values for key, values in records.items()
                   if key.removesuffix("s") in ("path", "label", "prob")}
        records = [dict(zip(columns, row, strict=True))
                   for row in zip(*columns.values(), strict=True)]
    return {str(r["path"]): Prediction(int(r["label"]),
                                       None if r.get("prob") is None else float(r["prob"]))
            for r in records}


def right_then_wrong(best: tuple[dict[str, Prediction], bool],
                     worst: tuple[dict[str, Prediction], bool], limit: int = SHOWN_IMAGES
                     ) -> list[tuple[str, Prediction | None, Prediction]]:
    """Images the best trial gets right and the worst gets wrong, the worst's most confident
    mistakes first: (path, best's prediction or None when unknown, worst's prediction)."""
    best_map, best_full = best
    worst_map, _ = worst
    chosen = []
    for path, wrong in worst_map.items():
        if wrong.prob is not None and wrong.predicted == wrong.label:
            continue  # the worst trial got this one right
        right = best_map.get(path)
        if right is not None and (right.prob is None or right.predicted != right.label):
            continue  # in the best trial's error list, or wrong there too
        if right is None and best_full:
            continue  # the best trial has no prediction for it
        chosen.append((path, right, wrong))
    chosen.sort(key=lambda row: -abs((row[2].prob if row[2].prob is not None else 0.5) - 0.5))
    return chosen[:limit]


def load_image(data_dir: Path, path: str) -> np.ndarray | None:
    """The image as an RGB uint8 array, or None when it is not on disk."""
    from PIL import Image

    for candidate in (data_dir / "faces" / path, data_dir / path):
        if candidate.is_file():
            with Image.open(io.BytesIO(candidate.read_bytes())) as image:
                return np.asarray(image.convert("RGB"))
    return None


def _caption(path: str, best: Prediction | None, wrong: Prediction) -> str:
    def said(p: Prediction | None, fallback: int) -> str:
        if p is None or p.prob is None:
            return CLASS_NAMES[fallback]
        return f"{CLASS_NAMES[p.predicted]} (p fake {p.prob:.2f})"

    label = wrong.label
    return (f"{Path(path).name}<br>label: {CLASS_NAMES[label]}<br>best: {said(best, label)}"
            f"<br>worst: {said(wrong, 1 - label)}")


def _lr(trial: TrialInfo) -> str:
    return f", lr {trial.config['lr']:g}" if "lr" in trial.config else ""


def figure_12(context: Context) -> list[ReportFigure]:
    study = need(context, FACES_STUDY)
    trials = [t for t in study.complete() + other_trials(context)
              if math.isfinite(test_accuracy(t))]
    if len(trials) < 2:
        raise MissingData(study.name, "needs at least 2 complete trials with test_accuracy")
    best, worst = max(trials, key=test_accuracy), min(trials, key=test_accuracy)
    rows = right_then_wrong(predictions(context, best), predictions(context, worst))
    if not rows:
        raise MissingData(study.name, f"no test image is right in #{best.number} and wrong "
                          f"in #{worst.number}")
    figure = make_subplots(rows=1, cols=len(rows), horizontal_spacing=0.02,
                           subplot_titles=[_caption(*row) for row in rows])
    missing = []
    for col, (path, _, _) in enumerate(rows, start=1):
        image = load_image(context.data_dir, path)
        if image is None:
            missing.append(path)
            image = np.full((64, 64, 3), 230, dtype=np.uint8)
        figure.add_trace(go.Image(z=image, hovertemplate=f"{path}<extra></extra>"),
                         row=1, col=col)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_annotations(font_size=12)
    # The exercise picks the best and worst face model by test accuracy (figure 11's table);
    # the searches rank by validation accuracy, so the figure says which it used.
    title = ("Figure 12: test images right for the best model and wrong for the worst<br>"
             "best and worst chosen by test accuracy, as the exercise does (the searches "
             "choose by validation accuracy)<br>"
             f"best: #{best.number}, {baseline_name(best)}{_lr(best)}, test acc "
             f"{test_accuracy(best):.3f}; worst: #{worst.number}, "
             f"{baseline_name(worst)}{_lr(worst)}, test acc {test_accuracy(worst):.3f}")
    figure.update_layout(template=TEMPLATE,
                         title={"text": title, "x": 0.01, "y": 1, "yref": "container",
                                "yanchor": "top", "pad": {"t": 24}, "font_size": 14},
                         margin={"t": 170, "l": 10, "r": 10, "b": 10})
    if missing:
        figure.add_annotation(
            text=f"{len(missing)} image(s) not found under {context.data_dir / 'faces'}; pass "
                 "--data-dir (or set $HPSEARCH_DATA) to the folder holding faces/",
            xref="paper", yref="paper", x=0, y=-0.05, showarrow=False, font_color="#a33")
    return [ReportFigure("fig12_faces_examples", "Figure 12: right for the best, wrong for the "
                         "worst", figure, width=1200, height=460)]


FACES_FIGURES = (
    ExerciseFigure(11, "face baselines: test accuracy per learning rate",
                   (FACES_STUDY, *OTHER_BASELINES), figure_11),
    ExerciseFigure(12, "five test faces right for the best model and wrong for the worst",
                   (FACES_STUDY, *OTHER_BASELINES), figure_12),
)
