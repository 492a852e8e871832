"""``index.html``: every written figure, grouped by study, with what is missing and why.

The index covers every study built into its folder, not only the last build's: each build
records its sections in ``.index.json`` there (``update_index``), and the index is written from
those of this build plus those of earlier builds that it did not rebuild. A figure folder that
no record names (written by an older version, or the record lost) is listed by its files.
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.compute import UNIT_NAMES, UNITS, Comparison, fmt_compute
from reports.export import Written, study_folder

RECORD = ".index.json"  # a dot name: never a study folder (see export.study_folder)
COMPUTE_RECORD = ".compute.json"  # the last grid-against-search comparison (reports.compute)
LOCK = ".index.lock"  # two builds into one folder merge their sections one after the other
LOCK_TIMEOUT_S = 120


@dataclass
class ExerciseEntry:
    """One exercise figure: its files, or the line saying what it needs."""

    number: int
    caption: str
    study: str
    files: list[Written] = field(default_factory=list)
    missing: str = ""


@dataclass
class Section:
    """One study's part of the index."""

    study: str
    description: str = ""
    counts: dict[str, int] | None = None  # None: the study is not in the storage
    notes: list[str] = field(default_factory=list)
    exercise: list[ExerciseEntry] = field(default_factory=list)
    search: list[Written] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    folder: str = ""  # its folder (and the page anchor); default: study_folder(study)
    storage: str = ""  # the storage URL it was built from
    built: str = ""  # when: "2025-06-01 12:00:00"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
.note { color: #a33; } .counts { color: #555; } code { background: #f3f3f3; padding: 0 .2em; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.card { width: 360px; border: 1px solid #ddd; padding: .5em; border-radius: 4px; }
.card img { width: 100%; } .card p { margin: .3em 0; font-size: 90%; }
table.toc td { padding: .1em .6em; vertical-align: top; }
table.compute { border-collapse: collapse; }
table.compute td, table.compute th { border: 1px solid #ddd; padding: .2em .6em; }
table.compute td.num { text-align: right; white-space: nowrap; }
"""


def update_index(out: Path, sections: list[Section], storage_url: str,
                 compute: Comparison | None = None) -> Path:
    """Record this build's ``sections`` in ``out`` and write ``out/index.html`` from them and
    from every earlier build's sections that this one did not rebuild; return its path.

    ``compute`` (the grid against the open search) replaces the recorded one; without it the
    index keeps showing the one an earlier build recorded, if any."""
    from filelock import FileLock

    built = time.strftime("%Y-%m-%d %H:%M:%S")
    for section in sections:
        section.storage = section.storage or storage_url
        section.built = section.built or built
    with FileLock(str(out / LOCK), timeout=LOCK_TIMEOUT_S):
        merged = merge_sections(out, sections)
        (out / RECORD).write_text(json.dumps([dataclasses.asdict(s) for s in merged], indent=1),
                                  encoding="utf-8")
        if compute is not None:
            compute.storage = compute.storage or storage_url
            (out / COMPUTE_RECORD).write_text(json.dumps(dataclasses.asdict(compute), indent=1),
                                              encoding="utf-8")
        else:
            compute = read_compute(out)
        exercise = [entry for section in merged for entry in section.exercise]
        return write_index(out, merged, exercise, storage_url, compute)


def read_compute(out: Path) -> Comparison | None:
    """The comparison recorded in ``out``; None when absent or unreadable."""
    try:
        return Comparison.from_json(json.loads((out / COMPUTE_RECORD).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def merge_sections(out: Path, sections: list[Section]) -> list[Section]:
    """``sections`` plus the earlier ones recorded in ``out`` for other studies (those whose
    figure folder is gone dropped, their deleted files left out) plus a section for each
    figure folder without a record; sorted by study name."""
    folders = {s.folder or study_folder(s.study) for s in sections}
    merged = list(sections)
    for section in read_record(out):
        folder = section.folder or study_folder(section.study)
        if folder in folders:
            continue
        had_files = bool(section.search or any(e.files for e in section.exercise))
        section.search = [w for w in section.search if (out / w.html).is_file()]
        for entry in section.exercise:
            entry.files = [w for w in entry.files if (out / w.html).is_file()]
        if had_files and not (out / folder).is_dir():
            continue  # its folder was deleted since
        folders.add(folder)
        merged.append(section)
    for path in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in folders):
        pages = sorted(path.glob("*.html"))
        if pages:
            merged.append(Section(path.name, notes=[
                "built earlier by a report that kept no record of it: its files only"],
                search=[_written(out, page) for page in pages], folder=path.name))
    return sorted(merged, key=lambda s: (s.study.lower(), s.study))


def read_record(out: Path) -> list[Section]:
    """The sections recorded in ``out``; none when the record is absent or unreadable (its
    folders are then listed by their files)."""
    try:
        raw = json.loads((out / RECORD).read_text(encoding="utf-8"))
        return [_section_from(item) for item in raw]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _section_from(raw: dict[str, Any]) -> Section:
    entries = [ExerciseEntry(int(e["number"]), str(e["caption"]), str(e["study"]),
                             [_written_from(w) for w in e["files"]], str(e["missing"]))
               for e in raw["exercise"]]
    counts = raw["counts"]
    return Section(str(raw["study"]), str(raw["description"]),
                   None if counts is None else {k: int(v) for k, v in counts.items()},
                   [str(n) for n in raw["notes"]], entries,
                   [_written_from(w) for w in raw["search"]],
                   {str(k): str(v) for k, v in raw["skipped"].items()}, str(raw["folder"]),
                   str(raw.get("storage", "")), str(raw.get("built", "")))


def _written_from(raw: dict[str, Any]) -> Written:
    width, height = raw["size"]
    return Written(str(raw["title"]), str(raw["html"]),
                   None if raw["png"] is None else str(raw["png"]), (int(width), int(height)))


def _written(out: Path, page: Path) -> Written:
    """A figure file found on disk (with its PNG when there is one)."""
    png = page.with_suffix(".png")
    return Written(page.stem, page.relative_to(out).as_posix(),
                   png.relative_to(out).as_posix() if png.is_file() else None, (0, 0))


def write_index(out: Path, sections: list[Section], exercise: list[ExerciseEntry],
                storage_url: str, compute: Comparison | None = None) -> Path:
    """Write ``out/index.html`` (with the compute table when ``compute`` is given) and return
    its path."""
    anchors = {s.study: s.folder or study_folder(s.study) for s in sections}
    storages = sorted({s.storage for s in sections if s.storage} - {storage_url})
    also = (f" (and, for studies built earlier, from {', '.join(_tag(u) for u in storages)})"
            if storages else "")
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             "<title>Hyperparameter search report</title>",
             f"<style>{STYLE}</style></head><body>",
             "<h1>Hyperparameter search report</h1>",
             f"<p>Built from <code>{_e(storage_url)}</code>{also}. Every figure is an "
             "interactive HTML file (click a picture) and a PNG for the write-up.</p>",
             "<h2>The exercise's figures</h2><table class='toc'>"]
    for entry in sorted(exercise, key=lambda e: e.number):
        links = ", ".join(_link(w.html, w.title) for w in entry.files)
        status = links or f"<span class='note'>{_e(entry.missing)}</span>"
        parts.append(f"<tr><td>{entry.number}</td><td>{_e(entry.caption)}</td>"
                     f"<td><a href='#{_e(anchors.get(entry.study, study_folder(entry.study)))}'>"
                     f"{_e(entry.study)}</a></td>"
                     f"<td>{status}</td></tr>")
    parts.append("</table>")
    if compute is not None:
        parts.append(compute_table(compute, anchors, storage_url))
    mixed = len({(s.storage, s.built) for s in sections}) > 1
    for section in sections:
        parts.append(_section(section, mixed))
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _section(section: Section, mixed: bool = False) -> str:
    anchor = section.folder or study_folder(section.study)
    parts = [f"<h2 id='{_e(anchor)}'>{_e(section.study)}</h2>"]
    if mixed and section.built:  # the index holds several builds: say which this one is
        parts.append(f"<p class='counts'>built {_e(section.built)} from "
                     f"{_tag(section.storage)}</p>")
    if section.description:
        parts.append(f"<p>{_e(section.description)}</p>")
    if section.counts is not None:
        counts = section.counts
        parts.append(f"<p class='counts'>{sum(counts.values())} trials: "
                     f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
                     f"{counts['FAIL']} failed"
                     + (f", {counts['RUNNING']} running" if counts.get("RUNNING") else "")
                     + "</p>")
    parts += [f"<p class='note'>{_code(note)}</p>" for note in section.notes]
    for entry in section.exercise:
        if entry.files:
            parts.append(f"<h3>Figure {entry.number}: {_e(entry.caption)}</h3>")
            parts.append(_cards(entry.files))
        elif entry.missing and section.counts is not None:
            parts.append(f"<p class='note'>Figure {entry.number}: {_code(entry.missing)}</p>")
    if section.search:
        parts.append("<h3>Search figures</h3>")
        parts.append(_cards(section.search))
    for name, reason in section.skipped.items():
        parts.append(f"<p class='counts'>{_e(name)}: not drawn, {_e(reason)}</p>")
    return "\n".join(parts)


def compute_table(compute: Comparison, anchors: dict[str, str], storage_url: str) -> str:
    """The grid against the open search: compute to the grid's best, and what the search had
    by then. Each number cell carries its exact value in ``data-value``."""
    grid, search = compute.grid, compute.search
    parts = [f"<h2 id='compute'>Compute: the exercise's grid ({_e(grid)}) against the open "
             f"search ({_e(search)})</h2>"]
    if compute.storage and compute.storage != storage_url:
        parts.append(f"<p class='counts'>built {_e(compute.built)} from "
                     f"{_tag(compute.storage)}</p>")
    if compute.missing:
        parts.append(f"<p class='note'>{_code(compute.missing)}</p>")
        return "\n".join(parts)
    metric = compute.metric

    def cells(values: dict[str, float | None]) -> str:
        return "".join(_number(values.get(unit), fmt_compute(values.get(unit), unit))
                       for unit in UNITS)

    def ratio(unit: str) -> str:
        value = compute.ratio(unit)
        if value is None:
            return _number(None, "not reached")
        change = f"{(1 - value) * 100:.0f}% less" if value <= 1 else f"{value:.2g}x as much"
        return _number(value, f"{value:.3g}x the grid's ({change})")

    def best(unit: str) -> str:
        value = compute.search_best_at_grid_total.get(unit)
        trial = compute.search_best_at_grid_total_trial.get(unit)
        if value is None:
            text = ("no complete trial within it" if compute.grid_total.get(unit) is not None
                    else "-")
            return _number(None, text)
        return _number(value, f"{metric} {value:.4g} (trial #{trial})")

    reach = compute.search_reach_trial
    reached = (f"first reached at trial #{reach}" if reach is not None else
               f"not reached in its {compute.search_trials} trials")
    rows = [
        (f"{_link_to(grid, anchors)}: compute to reach its best ({metric} "
         f"{compute.grid_best:.4g}, trial #{compute.grid_best_trial} of "
         f"{compute.grid_trials})", cells(compute.grid_to_best)),
        (f"{_link_to(grid, anchors)}: total compute ({compute.grid_trials} trials)",
         cells(compute.grid_total)),
        (f"{_link_to(search, anchors)}: compute to first reach the grid's best ({reached})",
         cells(compute.search_to_reach) if reach is not None
         else _number(None, "not reached") * len(UNITS)),
        ("saving: the search's compute to the grid's best over the grid's to its best",
         "".join(ratio(unit) for unit in UNITS)),
        (f"{_link_to(search, anchors)}: its best within the grid's total compute",
         "".join(best(unit) for unit in UNITS)),
        (f"{_link_to(search, anchors)}: total compute ({compute.search_trials} trials; best "
         f"{metric} {compute.search_best:.4g}, trial #{compute.search_best_trial})",
         cells(compute.search_total)),
    ]
    head = "".join(f"<th>{_e(UNIT_NAMES[unit])}</th>" for unit in UNITS)
    parts.append(f"<table class='compute'><tr><th></th>{head}</tr>")
    parts += [f"<tr><td>{label}</td>{row}</tr>" for label, row in rows]
    parts.append("</table>")
    parts.append("<p class='counts'>Trials in number order (about the order they started in); "
                 "pruned and failed trials add their compute, complete ones their value. "
                 "FLOPs are estimated (training 3x the forward pass, evaluation 1x); seconds "
                 "are training time.</p>")
    parts += [f"<p class='note'>{_code(note)}</p>" for note in compute.notes]
    return "\n".join(parts)


def _number(value: float | None, text: str) -> str:
    exact = "" if value is None else f" data-value='{value!r}'"
    return f"<td class='num'{exact}>{_e(text)}</td>"


def _link_to(study: str, anchors: dict[str, str]) -> str:
    anchor = anchors.get(study)
    return f"<a href='#{_e(anchor)}'>{_e(study)}</a>" if anchor else _e(study)


def _cards(files: list[Written]) -> str:
    cards = []
    for w in files:
        picture = (f"<a href='{_e(w.html)}'><img src='{_e(w.png)}' alt='{_e(w.title)}' "
                   "loading='lazy'></a>") if w.png else ""
        png = f" · {_link(w.png, 'PNG')}" if w.png else ""
        cards.append(f"<div class='card'>{picture}<p>{_e(w.title)}<br>"
                     f"{_link(w.html, 'HTML')}{png}</p></div>")
    return "<div class='grid'>" + "".join(cards) + "</div>"


def _tag(text: str) -> str:
    return f"<code>{_e(text)}</code>"


def _link(href: str, text: str) -> str:
    return f"<a href='{_e(href)}'>{_e(text)}</a>"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _code(text: str) -> str:
    """Escape, then show `backticked` spans as code."""
    pieces = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
