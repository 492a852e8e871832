"""Small PNG previews of a run (class map, curves), drawn with Pillow in a few milliseconds.

They are saved as artifacts beside the raw arrays, so optuna-dashboard shows them on the
trial's page; the report figures are drawn from the raw arrays, not from these.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

SIZE = (640, 400)  # curve images, pixels
MARGIN = (56, 20, 16, 28)  # left, top, right, bottom
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75))


def palette(n: int) -> np.ndarray:
    """``n`` distinct colours as an (n, 3) uint8 array (hues spread by the golden ratio)."""
    hues = (np.arange(n) * 0.618034) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.55 + 0.35 * (i % 2),
                                                                  0.95 - 0.25 * (i % 3 == 2))]
                     for i, h in enumerate(hues)], dtype=np.uint8)


def class_map_png(grid_classes: np.ndarray, longs: np.ndarray, lats: np.ndarray,
                  points: np.ndarray, wrong: np.ndarray, num_classes: int, scale: int = 2
                  ) -> bytes:
    """The predicted class per grid cell (north up), with misclassified points in black."""
    colours = palette(num_classes)[grid_classes[::-1]]  # row 0 of the image is the north
    colours = colours.repeat(scale, axis=0).repeat(scale, axis=1)
    height, width = colours.shape[:2]
    x = (points[wrong, 0] - longs[0]) / (longs[-1] - longs[0]) * (width - 1)
    y = (1 - (points[wrong, 1] - lats[0]) / (lats[-1] - lats[0])) * (height - 1)
    colours[np.clip(y.round().astype(int), 0, height - 1),
             np.clip(x.round().astype(int), 0, width - 1)] = 0
    image = Image.fromarray(colours, "RGB")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), f"{int(wrong.sum())} of {len(wrong)} test points wrong (black)",
              fill=(0, 0, 0))
    return _png(image)


def curves_png(series: Mapping[str, Sequence[float]], title: str, xlabel: str) -> bytes:
    """Lines of each series against its index, on shared axes with min/max labels."""
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN
    box = (left, top, SIZE[0] - right, SIZE[1] - bottom)
    draw.rectangle(box, outline=(0, 0, 0))
    finite = [np.asarray(v, dtype=float) for v in series.values() if len(v)]
    values = np.concatenate(finite) if finite else np.zeros(1)
    values = values[np.isfinite(values)] if np.isfinite(values).any() else np.zeros(1)
    low, high = float(values.min()), float(values.max())
    high = high if high > low else low + 1.0
    longest = max((len(v) for v in series.values()), default=1)
    for i, (name, ys) in enumerate(series.items()):
        ys = np.asarray(ys, dtype=float)
        xs = box[0] + np.arange(len(ys)) / max(longest - 1, 1) * (box[2] - box[0])
        ps = box[3] - (np.clip(ys, low, high) - low) / (high - low) * (box[3] - box[1])
        colour = COLOURS[i % len(COLOURS)]
        keep = np.isfinite(ps)
        draw.line(list(zip(xs[keep].tolist(), ps[keep].tolist(), strict=True)), fill=colour,
                  width=2 if len(ys) < 200 else 1)
        draw.text((box[2] - 60 * (len(series) - i), 4), name, fill=colour)
    draw.text((4, box[1]), f"{high:.4g}", fill=(0, 0, 0))
    draw.text((4, box[3] - 10), f"{low:.4g}", fill=(0, 0, 0))
    draw.text((box[0], 4), title, fill=(0, 0, 0))
    draw.text((box[0], box[3] + 8), f"{xlabel} 0 .. {longest - 1}", fill=(0, 0, 0))
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
