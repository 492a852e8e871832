"""The figure record every drawing function returns, and the shared look of the figures."""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go

PAGE_WIDTH = 1000  # PNG size in px at scale 1: fits a PDF page's text width
PAGE_HEIGHT = 600
TEMPLATE = "plotly_white"
SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


class ReportFigure(NamedTuple):
    """A drawn figure and the file stem it is saved under (inside its study's folder)."""

    stem: str
    title: str
    figure: go.Figure
    width: int = PAGE_WIDTH
    height: int = PAGE_HEIGHT


class MissingData(Exception):
    """A figure cannot be drawn: ``study`` is missing or lacks what the figure needs."""

    def __init__(self, study: str, reason: str):
        super().__init__(f"{study}: {reason}")
        self.study = study
        self.reason = reason


METRIC_LABELS = {"accuracy": "accuracy (fraction correct)", "loss": "cross-entropy loss"}


def metric_label(name: str) -> str:
    """``val_accuracy`` -> ``validation accuracy (fraction correct)``; others unchanged."""
    split, _, kind = name.partition("_")
    if split in SPLIT_NAMES and kind in METRIC_LABELS:
        return f"{SPLIT_NAMES[split]} {METRIC_LABELS[kind]}"
    return name


def integer_epochs(figure: go.Figure, count: int) -> None:
    """Whole-number ticks on the epoch axes of short runs (no "1.5" epochs)."""
    if count <= 15:
        figure.update_xaxes(dtick=1)


def styled(figure: go.Figure, title: str, x_title: str, y_title: str,
           legend_title: str | None = None) -> go.Figure:
    """Apply the common template, title, axis titles and legend title."""
    figure.update_layout(template=TEMPLATE, title={"text": title, "x": 0.01},
                         legend_title_text=legend_title, margin={"t": 70, "r": 20})
    figure.update_xaxes(title_text=x_title)
    figure.update_yaxes(title_text=y_title)
    if x_title == "epoch":
        integer_epochs(figure, max((len(t.x) for t in figure.data if t.x is not None),
                                   default=0))
    return figure
