"""PNG previews of a run (learning curves, batch losses, class map, misclassified images).

They are drawn with matplotlib on its Agg canvas (no pyplot, no display, no global state, so
worker threads and processes can draw at once), with a title, axis labels, tick values and a
legend, and saved as artifacts beside the raw arrays: optuna-dashboard shows them on the
trial's page and in its note. The report figures are drawn from the raw arrays, not from these.
A figure costs tens of milliseconds (see README "What a trial records" for the measured cost
per trial); matplotlib is imported at the first one.
"""

from __future__ import annotations

import colorsys
import io
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
CURVE_SIZE = (6.4, 4.0)  # inches: 640 x 400 pixels at DPI
MAP_SIZE = (7.2, 6.0)
# The axes' box in figure fractions (left, bottom, right, top): fixed rather than fitted, so
# every preview has the same layout and the text margins are known (tests check them).
CURVE_AXES = (0.12, 0.14, 0.97, 0.90)
MAP_AXES = (0.10, 0.09, 0.98, 0.93)
MAP_POINTS = 1500  # at most this many misclassified points drawn on the class map
MANY_POINTS = 40  # series longer than this are drawn without markers
LOG_RATIO = 100.0  # positive series spanning more than this factor get a log y axis
PNG_OPTIONS = {"compress_level": 3}  # PIL's zlib level: a quarter of the default's time
_CACHE = threading.local()  # each thread's reusable figures (see _blank)


def palette(n: int) -> np.ndarray:
    """``n`` distinct colours as an (n, 3) uint8 array (hues spread by the golden ratio)."""
    hues = (np.arange(n) * 0.618034) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.55 + 0.35 * (i % 2),
                                                                  0.95 - 0.25 * (i % 3 == 2))]
                     for i, h in enumerate(hues)], dtype=np.uint8)


def curves_png(series: Mapping[str, Sequence[float]], title: str, xlabel: str, ylabel: str,
               *, x_step: int = 1) -> bytes:
    """One line per series against its index times ``x_step`` (0, x_step, 2 x_step, ...: a
    series of block means keeps the x of the blocks' first items), with a legend.

    Non-finite values leave gaps. A positive series spanning more than ``LOG_RATIO`` gets a
    logarithmic y axis (a loss that falls from 10 to 0.01 stays readable). Short series get
    markers, so a one-epoch run still shows its point.
    """
    from matplotlib.ticker import MaxNLocator

    figure, axes = _blank(CURVE_SIZE, CURVE_AXES)
    finite: list[np.ndarray] = []
    for name, values in series.items():
        ys = np.asarray(values, dtype=float)
        xs = np.arange(len(ys)) * x_step
        marker = "o" if len(ys) <= MANY_POINTS else None
        axes.plot(xs, ys, label=name, marker=marker, markersize=4,
                  linewidth=1.5 if len(ys) < 200 else 0.8)
        finite.append(ys[np.isfinite(ys)])
    values = np.concatenate(finite) if finite else np.zeros(0)
    if len(values) and values.min() > 0 and values.max() / values.min() > LOG_RATIO:
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and batches are whole
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    if series:
        axes.legend(loc="best", fontsize="small")
    if not len(values):
        axes.text(0.5, 0.5, "no finite values", ha="center", va="center",
                  transform=axes.transAxes)
    return _png(figure)


def class_map_png(grid_classes: np.ndarray, longs: np.ndarray, lats: np.ndarray,
                  points: np.ndarray, wrong: np.ndarray, num_classes: int,
                  names: Sequence[str] = (), places: Sequence[tuple[float, float]] = ()
                  ) -> bytes:
    """The predicted class per grid cell over longitude and latitude, the misclassified test
    points as black crosses, and each class's name (``names``) at its place (``places``:
    (long, lat) pairs, e.g. the capitals)."""
    from matplotlib.colors import ListedColormap

    figure, axes = _blank(MAP_SIZE, MAP_AXES)
    colours = ListedColormap(palette(num_classes) / 255.0)
    axes.imshow(grid_classes, origin="lower", cmap=colours, vmin=-0.5,
                vmax=num_classes - 0.5, interpolation="nearest", aspect="auto",
                extent=(float(longs[0]), float(longs[-1]), float(lats[0]), float(lats[-1])))
    shown = points[wrong]
    label = f"misclassified test point ({len(shown)} of {len(wrong)}"
    if len(shown) > MAP_POINTS:  # a seeded sample: thousands of crosses hide the map
        shown = shown[np.random.default_rng(0).choice(len(shown), MAP_POINTS, replace=False)]
        label += f", {MAP_POINTS} drawn"
    axes.scatter(shown[:, 0], shown[:, 1], s=6, marker="x", c="black", linewidths=0.6,
                 label=label + ")")
    for name, (long, lat) in zip(names, places, strict=False):
        if longs[0] <= long <= longs[-1] and lats[0] <= lat <= lats[-1]:
            axes.text(long, lat, name, fontsize=6, ha="center", va="center",
                      bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                            "alpha": 0.7})
    axes.set_title("predicted country per map cell")
    axes.set_xlabel("longitude (°E)")
    axes.set_ylabel("latitude (°N)")
    axes.legend(loc="upper left", fontsize="small", framealpha=0.9)
    return _png(figure)


def image_grid_png(images: Sequence[np.ndarray], captions: Sequence[str], title: str,
                   columns: int = 4) -> bytes:
    """Images (H, W, 3 uint8) in a grid, each with its caption, under ``title``."""
    from matplotlib.figure import Figure

    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(1.5 * columns, 1.6 * rows + 0.5), dpi=DPI)
    figure.suptitle(title, fontsize="medium")
    for index in range(rows * columns):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.set_axis_off()
        if index < len(images):
            axes.imshow(images[index], interpolation="bilinear")
            axes.set_title(captions[index], fontsize=8)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / (1.6 * rows + 0.5),
                           hspace=0.3, wspace=0.08)
    return _png(figure)


def _figure(size: tuple[float, float], box: tuple[float, float, float, float]
            ) -> tuple[Figure, Axes]:
    """A figure on an Agg canvas with one axes placed at ``box`` (figure fractions)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(figure)
    left, bottom, right, top = box
    axes = figure.add_axes((left, bottom, right - left, top - bottom))
    return figure, axes


def _blank(size: tuple[float, float], box: tuple[float, float, float, float]
           ) -> tuple[Figure, Axes]:
    """This thread's figure of that layout, emptied of what the last preview drew.

    Building the axes (their ticks, labels and fonts) costs about a third of a preview, so each
    thread keeps one figure per layout and redraws it (threads never share one).
    """
    cache = _CACHE.__dict__.setdefault("figures", {})
    if (size, box) not in cache:
        cache[size, box] = _figure(size, box)
    figure, axes = cache[size, box]
    for artist in [*axes.lines, *axes.collections, *axes.images, *axes.texts]:
        artist.remove()
    if axes.get_legend() is not None:
        axes.get_legend().remove()
    axes.set_yscale("linear")
    axes.set_prop_cycle(None)  # the first line is blue again
    axes.relim()  # forget the last preview's data limits
    axes.set_autoscale_on(True)
    return figure, axes


def _png(figure: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    if not isinstance(figure.canvas, FigureCanvasAgg):
        FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=DPI, pil_kwargs=PNG_OPTIONS)
    return buffer.getvalue()
