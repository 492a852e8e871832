"""Write figures: an interactive HTML file each at once, and all PNGs in one Kaleido session.

Kaleido 1.x drives a Chromium browser (Debian's ``chromium`` package, or ``plotly_get_chrome``);
starting it costs seconds, so ``Exporter`` queues the PNGs and ``write_pngs`` renders them in
one ``plotly.io.write_images`` batch. The HTML files share one ``plotly.min.js`` in the output
folder, so they work offline without repeating 4.6 MB of JavaScript in each.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import plotly.io as pio
import plotly.offline

from objectives.errors import ConfigError
from reports.figure import ReportFigure

PLOTLY_JS = "plotly.min.js"
DEFAULT_SCALE = 2  # PNG pixels per layout pixel: 1000x600 layouts give 2000x1200 PNGs
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED = {"index.html", PLOTLY_JS}  # files of the output folder itself


def study_folder(name: str) -> str:
    """The folder, inside the output folder, for a study's figures.

    A plain name (letters, digits, ``_.-``, starting with a letter or digit, at most 64
    characters) is kept as it is. Any other name (``../escaped``, ``a/b``, ``.hidden``, spaces)
    becomes its plain characters plus a hash of the whole name, so it cannot leave the output
    folder and two distinct names never share a folder.
    """
    if PLAIN_NAME.fullmatch(name) and not name.endswith(".") and name.lower() not in RESERVED:
        return name
    return _hashed(name)


def study_folders(names: list[str]) -> dict[str, str]:
    """``study_folder`` of each name, also distinct on case-insensitive file systems: of
    names equal but for case, a lower-case plain name keeps its folder, the others get a hash."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for name in sorted(set(names), key=lambda n: (study_folder(n) != n, n != n.lower(), n)):
        folder = study_folder(name)
        if folder.lower() in taken:  # "MLP" after "mlp"
            folder = _hashed(name)
        taken.add(folder.lower())
        folders[name] = folder
    return folders


def _hashed(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:40] or "study"
    return f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Written:
    """Where one figure went, relative to the output folder."""

    title: str
    html: str
    png: str | None
    size: tuple[int, int]  # PNG size in pixels


@dataclass
class Exporter:
    """Writes HTML at once and queues PNGs for one batch render (``write_pngs``)."""

    out: Path
    png: bool = True
    scale: float = DEFAULT_SCALE
    queued: list[tuple[ReportFigure, Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        script = self.out / PLOTLY_JS
        if not script.exists():
            script.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")

    def add(self, folder: str, item: ReportFigure) -> Written:
        """Write ``item`` as ``folder/stem.html`` and queue ``folder/stem.png``; ``folder``
        must be a ``study_folder`` name (one plain path component)."""
        if study_folder(folder) != folder:
            raise ValueError(f"folder must be one plain name from study_folder(), got {folder!r}")
        target = self.out / folder
        target.mkdir(parents=True, exist_ok=True)
        item.figure.update_layout(height=item.height)
        item.figure.write_html(target / f"{item.stem}.html", include_plotlyjs="../" + PLOTLY_JS,
                               full_html=True)
        png = None
        if self.png:
            png = f"{folder}/{item.stem}.png"
            self.queued.append((item, self.out / png))
        size = (round(item.width * self.scale), round(item.height * self.scale))
        return Written(item.title, f"{folder}/{item.stem}.html", png, size)

    def write_pngs(self) -> float:
        """Render every queued PNG in one Kaleido batch; return the seconds it took."""
        if not self.queued:
            return 0.0
        start = time.perf_counter()
        figures, paths = zip(*self.queued, strict=True)
        try:
            pio.write_images(list(f.figure for f in figures), list(paths), format="png",
                             width=[f.width for f in figures], height=[f.height for f in figures],
                             scale=self.scale)
        except Exception as exc:  # Kaleido/Chromium raise many types; one line says which
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"PNG export failed ({type(exc).__name__}: {first}); it needs "
                              "Chromium: run `bash scripts/install-system-deps.sh` (Debian "
                              "chromium) or `plotly_get_chrome`, or pass --no-png") from None
        self.queued.clear()
        return time.perf_counter() - start
