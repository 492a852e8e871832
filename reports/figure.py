"""The figure record every drawing function returns, and the shared look of the figures."""

from __future__ import annotations

import math
import re
import warnings
from typing import NamedTuple

import numpy as np
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


SHORT_CURVE = 3  # curves with fewer points also get markers: a one-point line draws nothing


def line_mode(points: int) -> str:
    """The Scatter mode for a curve of ``points`` points: markers on short ones, so that a
    one-epoch run still shows (as a dot)."""
    return "lines+markers" if points < SHORT_CURVE else "lines"


# Seed bands. A trial over seeds (search.driver.seeds) is drawn as the mean over its seeds with a
# band from the lowest to the highest seed: with the 3-5 seeds a study runs, the range shows every
# seed, where a standard deviation of so few values would be a rough estimate.
BAND = "min-max"
BAND_OPACITY = 0.18


def seed_counts_text(counts: list[int]) -> str:
    """``"3"`` (or ``"3-5"`` when trials differ) for the seed counts above 1; "" for none."""
    several = sorted({n for n in counts if n > 1})
    if not several:
        return ""
    return str(several[0]) if len(several) == 1 else f"{several[0]}-{several[-1]}"


def seed_note(counts: list[int]) -> str:
    """``"lines: mean over 3 seeds; bands: min-max over the seeds"`` for the seed counts of the
    drawn trials, or "" when none has several seeds (the figure is then drawn as before)."""
    n = seed_counts_text(counts)
    return f"lines: mean over {n} seeds; bands: {BAND} over the seeds" if n else ""


def with_note(title: str, note: str) -> str:
    """The title with ``note`` as a smaller second line (unchanged when ``note`` is empty)."""
    return f"{title}<br><sup>{note}</sup>" if note else title


def mean_sd(mean: float | None, sd: float | None, digits: int = 3) -> str:
    """``0.951 ± 0.004`` (``0.951`` without a standard deviation; ``-`` without a mean)."""
    if mean is None:
        return "-"
    text = f"{mean:.{digits}f}"
    return text if sd is None or not math.isfinite(sd) else f"{text} ± {sd:.{digits}f}"


def band_bounds(curves: list[list[float]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-step lowest and highest value over ``curves``, for the first ``length`` steps (a
    step only some curves reached uses those; NaNs, as from a diverged seed, are ignored)."""
    table = np.full((max(1, len(curves)), length), np.nan)
    for row, curve in enumerate(curves):
        values = np.asarray(curve[:length], dtype=float)
        table[row, :len(values)] = values
    with warnings.catch_warnings():  # an all-NaN step warns; the band has a gap there
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(table, axis=0), np.nanmax(table, axis=0)


def rgba(color: str, alpha: float) -> str:
    """``#1f77b4`` (or ``rgb(31, 119, 180)``) as ``rgba(31,119,180,alpha)``."""
    if color.startswith("#") and len(color) == 7:
        red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    else:
        red, green, blue = (int(float(v)) for v in re.findall(r"[\d.]+", color)[:3])
    return f"rgba({red},{green},{blue},{alpha})"


def band_trace(x: list | np.ndarray, low: np.ndarray, high: np.ndarray, color: str, *,
               name: str, legendgroup: str, webgl: bool = False) -> go.Scatter:
    """A filled polygon from ``low`` to ``high`` over ``x`` (no legend entry: the legend
    toggles it with its line through ``legendgroup``; ``name`` says what it spans)."""
    x = np.asarray(x, dtype=float)
    kind = go.Scattergl if webgl else go.Scatter
    return kind(x=np.concatenate([x, x[::-1]]),
                y=np.concatenate([np.asarray(high, float), np.asarray(low, float)[::-1]]),
                fill="toself", fillcolor=rgba(color, BAND_OPACITY), mode="lines",
                line={"width": 0, "color": rgba(color, 0)}, hoverinfo="skip",
                showlegend=False, name=name, legendgroup=legendgroup)


# Tables: plotly wraps a cell's text at spaces (and cuts a word wider than its column), so a
# fixed row height clips the last rows of a PNG. ``table_size`` gives the columns the widths
# their longest texts need (the figure grows up to MAX_TABLE_WIDTH), then counts the lines
# each row wraps into at those widths. The character widths overestimate Kaleido's fonts:
# too wide a column costs a little space, too narrow a one a clipped row.
CHAR_PX = {False: 7.0, True: 7.8}  # regular and bold, at the tables' 12 px font
CELL_PAD = 16  # a cell's horizontal padding, both sides together
LINE_PX = 20  # what each wrapped line adds to a row
MAX_TABLE_WIDTH = 1800
TABLE_SLACK = 16  # room below the last row


class TableSize(NamedTuple):
    columnwidth: list[float]  # go.Table's relative column widths
    width: int  # the figure's width and height at scale 1
    height: int


def table_size(header: list[str], columns: list[list[str]], *, cell_height: int,
               header_height: int, margin: dict[str, int], min_width: int = PAGE_WIDTH
               ) -> TableSize:
    """The column widths and figure size that show every row of a ``go.Table`` whole;
    ``margin`` is the layout's (``t``, ``b``, ``l``, ``r``) and the table fills the rest."""
    texts = [[head, *column] for head, column in zip(header, columns, strict=True)]
    needed = [max(_text_px(text) for text in column) + CELL_PAD for column in texts]
    words = [max(_word_px(text) for text in column) + CELL_PAD for column in texts]
    sides = margin["l"] + margin["r"]
    width = int(min(MAX_TABLE_WIDTH, max(min_width, sum(needed) + sides)))
    space = width - sides
    if sum(needed) <= space:  # plotly stretches the columns to fill the table's width
        widths = [w * space / sum(needed) for w in needed]
    elif sum(words) < space:  # each column keeps its longest word; the rest wraps
        spare = (space - sum(words)) / (sum(needed) - sum(words))
        widths = [m + (w - m) * spare for w, m in zip(needed, words, strict=True)]
    else:  # even the words do not fit: shrink everything alike (words get cut)
        widths = [m * space / sum(words) for m in words]
    room = [max(CELL_PAD, w - CELL_PAD) for w in widths]

    def row_height(texts: list[str], base: int) -> int:
        lines = max(_lines(text, px) for text, px in zip(texts, room, strict=True))
        return base + (lines - 1) * LINE_PX

    rows = [row_height(list(row), cell_height) for row in zip(*columns, strict=True)]
    height = (margin["t"] + row_height(header, header_height) + sum(rows) + margin["b"]
              + TABLE_SLACK)
    return TableSize(widths, width, int(height))


def _text_px(text: str) -> float:
    """The widest explicit line of ``text`` (``<br>`` breaks it), in pixels."""
    return max(_line_px(line) for line in _plain_lines(text))


def _word_px(text: str) -> float:
    """The widest word of ``text`` (plotly breaks lines at spaces only), in pixels."""
    return max(_line_px((word, bold)) for line, bold in _plain_lines(text)
               for word in [*line.split(), ""])


def _lines(text: str, room: float) -> int:
    """Lines ``text`` takes in a column ``room`` pixels wide (wrapping at spaces)."""
    return sum(max(1, math.ceil(_line_px(line) / room)) for line in _plain_lines(text))


def _plain_lines(text: str) -> list[tuple[str, bool]]:
    bold = "<b>" in text
    return [(re.sub(r"<[^>]+>", "", line), bold) for line in re.split(r"<br\s*/?>", text)]


def _line_px(line: tuple[str, bool]) -> float:
    text, bold = line
    return len(text) * CHAR_PX[bold]
