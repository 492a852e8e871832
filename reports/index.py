"""``index.html``: every written figure, grouped by study, with what is missing and why."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from reports.export import Written, study_folder


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


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
.note { color: #a33; } .counts { color: #555; } code { background: #f3f3f3; padding: 0 .2em; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.card { width: 360px; border: 1px solid #ddd; padding: .5em; border-radius: 4px; }
.card img { width: 100%; } .card p { margin: .3em 0; font-size: 90%; }
table.toc td { padding: .1em .6em; vertical-align: top; }
"""


def write_index(out: Path, sections: list[Section], exercise: list[ExerciseEntry],
                storage_url: str) -> Path:
    """Write ``out/index.html`` and return its path."""
    anchors = {s.study: s.folder or study_folder(s.study) for s in sections}
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             "<title>Hyperparameter search report</title>",
             f"<style>{STYLE}</style></head><body>",
             "<h1>Hyperparameter search report</h1>",
             f"<p>Built from <code>{_e(storage_url)}</code>. Every figure is an interactive "
             "HTML file (click a picture) and a PNG for the write-up.</p>",
             "<h2>The exercise's figures</h2><table class='toc'>"]
    for entry in sorted(exercise, key=lambda e: e.number):
        links = ", ".join(_link(w.html, w.title) for w in entry.files)
        status = links or f"<span class='note'>{_e(entry.missing)}</span>"
        parts.append(f"<tr><td>{entry.number}</td><td>{_e(entry.caption)}</td>"
                     f"<td><a href='#{_e(anchors.get(entry.study, study_folder(entry.study)))}'>"
                     f"{_e(entry.study)}</a></td>"
                     f"<td>{status}</td></tr>")
    parts.append("</table>")
    for section in sections:
        parts.append(_section(section))
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _section(section: Section) -> str:
    anchor = section.folder or study_folder(section.study)
    parts = [f"<h2 id='{_e(anchor)}'>{_e(section.study)}</h2>"]
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


def _cards(files: list[Written]) -> str:
    cards = []
    for w in files:
        picture = (f"<a href='{_e(w.html)}'><img src='{_e(w.png)}' alt='{_e(w.title)}' "
                   "loading='lazy'></a>") if w.png else ""
        png = f" · {_link(w.png, 'PNG')}" if w.png else ""
        cards.append(f"<div class='card'>{picture}<p>{_e(w.title)}<br>"
                     f"{_link(w.html, 'HTML')}{png}</p></div>")
    return "<div class='grid'>" + "".join(cards) + "</div>"


def _link(href: str, text: str) -> str:
    return f"<a href='{_e(href)}'>{_e(text)}</a>"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _code(text: str) -> str:
    """Escape, then show `backticked` spans as code."""
    pieces = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
