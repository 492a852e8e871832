"""``python -m reports.build``: the exercise's figures and every study's search figures.

Examples::

    python -m reports.build --all
    python -m reports.build --study mlp_lr --study mlp_grid --out reports/out
    python -m reports.build --all --storage sqlite:///runs/studies.db --no-png
    python -m reports.build --all --dashboard    # also attach them to the studies


Reads the storage and its artifacts only; it never trains. A study that is missing or
incomplete gets a line in the index naming the command that makes it, or continues it with the
settings it was made with (``reports.commands``), and a figure whose artifact file is
unreadable (truncated, corrupt) a line naming the trial and the file. Each study's figures go
to a folder inside ``--out`` named after it (``study_folder``: a name such as ``../x`` gets a
plain folder name with a hash); the index lists every study built into ``--out``, by this
build or an earlier one (``reports.index.update_index``). It is an error when the storage
holds none of the studies asked for (with ``--all``: no study at all).

Every study also gets its compute ledger (``reports.compute``: best value against cumulative
FLOPs and seconds), and the index a table setting the grid (``mlp_grid``) against the open
search (``mlp_width_depth``) whenever either is built. With ``--dashboard`` each study's
figures are also saved to the study in the storage (``reports.dashboard``), where
optuna-dashboard shows them on the study's page; a rebuild replaces them.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from optuna.exceptions import StorageInternalError

from objectives.errors import ConfigError, HPSearchError
from objectives.runtime import resolve_data_dir
from reports.commands import continue_command, run_command, study_recipe
from reports.compute import (
    COUNTED,
    GRID_STUDY,
    SEARCH_STUDY,
    compare,
    comparison_figure,
    ledger_figure,
)
from reports.dashboard import Attached, attach
from reports.data import StudyInfo, StudyStore, UnreadableArtifact
from reports.exercise import EXERCISE_FIGURES, Context, ExerciseFigure
from reports.export import DEFAULT_SCALE, Exporter, Written, study_folders
from reports.faces import FACES_FIGURES
from reports.figure import MissingData, ReportFigure
from reports.index import ExerciseEntry, Section, update_index
from reports.search_plots import search_figures
from search.records.storage import DEFAULT_STORAGE, require_existing_storage
from search.study.notes import made_with
from search.study.spec import list_studies, load_study_spec

ALL_FIGURES: tuple[ExerciseFigure, ...] = EXERCISE_FIGURES + FACES_FIGURES
DEFAULT_OUT = Path("reports/out")


@dataclass(frozen=True)
class BuildOptions:
    storage_url: str = DEFAULT_STORAGE
    out: Path = DEFAULT_OUT
    studies: tuple[str, ...] = ()  # empty: every known study (--all)
    artifact_dir: Path | None = None
    data_dir: Path = Path("data")
    png: bool = True
    scale: float = DEFAULT_SCALE
    dashboard: bool = False  # also attach each study's figures to it in the storage


@dataclass
class BuildResult:
    index: Path
    written: list[Written] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # one line per figure not drawn
    png_seconds: float = 0.0
    attached: list[Attached] = field(default_factory=list)  # with --dashboard, per study


def known_studies(stored: list[str]) -> list[str]:
    """Study files in spaces/, the studies the figures read, and whatever else is stored."""
    names = {p.stem for p in list_studies()} | set(stored)
    names |= {name for figure in ALL_FIGURES for name in figure.studies}
    return sorted(names)


def completeness(info: StudyInfo, storage_url: str = DEFAULT_STORAGE,
                 artifact_dir: Path | None = None) -> str:
    """A note when a grid study has points left (or its study file asks for more trials),
    naming the command that continues it with the settings it was made with."""
    recipe = study_recipe(info)
    if recipe is None:
        return ""
    spec = recipe.spec
    finished = info.finished()
    if spec.is_grid:
        done = {tuple(sorted((k, repr(v)) for k, v in t.params.items())) for t in finished}
        left = spec.grid_size() - len(done)
        if left > 0:
            command = continue_command(info, storage_url, artifact_dir,
                                       left if spec.trials < left else None)
            return (f"incomplete: {len(done)} of {spec.grid_size()} grid points done; "
                    f"`{command}` runs the rest")
    elif len(finished) < spec.trials:
        command = continue_command(info, storage_url, artifact_dir, spec.trials - len(finished))
        return (f"partial: {len(finished)} of the study file's {spec.trials} trials; "
                f"`{command}` runs the rest")
    return ""


def choose(asked: tuple[str, ...], stored: list[str], url: str) -> list[str]:
    """The studies to build: ``asked``, or every known one when it is empty (``--all``).

    A ``ConfigError`` when a name is unknown, when none of the asked-for studies is stored, or
    (``--all``) when the storage holds no study at all: such a report would hold no figure.
    """
    known = known_studies(stored)
    how = (f"run one with `python -m search.run --study NAME --storage {url}` "
           "(`python -m search.run --list` lists the study files)")
    if not asked:
        if not stored:
            raise ConfigError(f"the storage {url} holds no study; {how}")
        return known
    unknown = [name for name in asked if name not in known]
    if unknown:
        raise ConfigError(f"unknown study {unknown[0]!r}; known: {', '.join(known)}")
    if not set(asked) & set(stored):
        raise ConfigError(f"none of the studies asked for is in {url}: "
                          f"{', '.join(dict.fromkeys(asked))} (stored there: "
                          f"{', '.join(stored) or 'none'}); {how}")
    return list(dict.fromkeys(asked))


def build(options: BuildOptions) -> BuildResult:
    """Write every figure of the chosen studies and the index; see the module docstring."""
    require_existing_storage(options.storage_url)
    store = StudyStore(options.storage_url, options.artifact_dir)
    stored = store.names()
    chosen = choose(options.studies, stored, options.storage_url)
    needed = set(chosen) | {n for f in ALL_FIGURES if f.studies[0] in chosen for n in f.studies}
    compared = bool({GRID_STUDY, SEARCH_STUDY} & set(chosen))
    if compared:  # the index's compute table reads both
        needed |= {GRID_STUDY, SEARCH_STUDY}
    studies = {name: store.load(name) if name in stored else None for name in sorted(needed)}
    folders = study_folders(chosen)
    context = Context(store=store, studies=studies, data_dir=options.data_dir)
    exporter = Exporter(options.out, png=options.png, scale=options.scale)
    result = BuildResult(index=options.out / "index.html")
    drawn: dict[str, list[ReportFigure]] = {name: [] for name in chosen}  # for --dashboard

    sections = {name: _section(name, studies[name], folders[name], options)
                for name in chosen}
    for figure in ALL_FIGURES:
        home = figure.studies[0]
        if home not in chosen:
            continue
        entry = ExerciseEntry(figure.number, figure.caption, home)
        try:
            items = figure.build(context)
            entry.files = [exporter.add(folders[home], item) for item in items]
            drawn[home] += items
        except MissingData as exc:
            entry.missing = _missing_line(exc, studies, options)
        except UnreadableArtifact as exc:
            entry.missing = f"{exc}; not drawn"
        if entry.missing:
            result.missing.append(f"figure {figure.number}: {entry.missing}")
        sections[home].exercise.append(entry)
        result.written += entry.files
    for name in chosen:
        if studies[name] is None:
            continue
        figures, skipped = search_figures(store.study(name), studies[name])
        if any(trial.state in COUNTED for trial in studies[name].trials):  # compute to show
            figures.append(ledger_figure(studies[name]))
        if name == SEARCH_STUDY and studies.get(GRID_STUDY) is not None:
            figures.append(comparison_figure(studies[GRID_STUDY], studies[name]))
        sections[name].search = [exporter.add(folders[name], item) for item in figures]
        sections[name].skipped = skipped
        result.written += sections[name].search
        drawn[name] += figures
    result.png_seconds = exporter.write_pngs()
    comparison = None
    if compared:
        comparison = compare(studies.get(GRID_STUDY), studies.get(SEARCH_STUDY))
        absent = [n for n in (GRID_STUDY, SEARCH_STUDY) if studies.get(n) is None]
        if absent:
            comparison.missing += "; run " + " and ".join(
                f"`{run_command(n, options.storage_url, options.artifact_dir)}`" for n in absent)
    update_index(options.out, list(sections.values()), options.storage_url, comparison)
    if options.dashboard:
        try:
            result.attached = [attach(store.study(name), items) for name, items in drawn.items()
                               if studies[name] is not None]
        except (StorageInternalError, OSError) as exc:  # a read-only file, a lost connection
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"--dashboard could not save the figures to "
                              f"{options.storage_url} ({type(exc).__name__}: {first}); it "
                              "writes to the storage, so it needs write access there (the "
                              "report files are written)") from None
    return result


def _section(name: str, info: StudyInfo | None, folder: str, options: BuildOptions) -> Section:
    if info is None:
        try:
            description = load_study_spec(name).description.strip()
        except ConfigError:
            description = ""
        command = run_command(name, options.storage_url, options.artifact_dir)
        return Section(name, description, None, [f"not in storage: run `{command}`"],
                       folder=folder)
    notes = [note for note in (completeness(info, options.storage_url,
                                            options.artifact_dir),) if note]
    if info.commands:
        notes.append(made_with(info.commands))
    return Section(name, info.description, info.counts(), notes, folder=folder)


def _missing_line(exc: MissingData, studies: dict[str, StudyInfo | None],
                  options: BuildOptions) -> str:
    info = studies.get(exc.study)
    if info is None:
        return (f"needs {exc.study}, not in storage: run "
                f"`{run_command(exc.study, options.storage_url, options.artifact_dir)}`")
    command = continue_command(info, options.storage_url, options.artifact_dir)
    return f"needs {exc.study}: {exc.reason}; run `{command}`"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports.build",
        description="Write the exercise's figures and each study's search figures (HTML and "
                    "PNG) with an index.html, from the studies in an Optuna storage.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every known or stored study")
    which.add_argument("--study", action="append", metavar="NAME",
                       help="one study (repeatable)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    parser.add_argument("--artifact-dir", type=Path,
                        help="artifact folder (default: beside the storage file)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT}/)")
    parser.add_argument("--data-dir", help="folder holding faces/ for figure 12's images "
                        "(default: $HPSEARCH_DATA, else ./data)")
    parser.add_argument("--no-png", action="store_true", help="write HTML only (no Chromium)")
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                        help=f"PNG pixels per layout pixel (default {DEFAULT_SCALE})")
    parser.add_argument("--dashboard", action="store_true",
                        help="also save each study's figures to the study in the storage, "
                        "where optuna-dashboard shows them on its page (a rebuild replaces "
                        "them)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = BuildOptions(
        storage_url=args.storage, out=args.out, studies=tuple(args.study or ()),
        artifact_dir=args.artifact_dir, data_dir=resolve_data_dir(args.data_dir),
        png=not args.no_png, scale=args.scale, dashboard=args.dashboard)
    start = time.perf_counter()
    try:
        if options.scale <= 0:
            raise ConfigError(f"--scale must be positive, got {options.scale}")
        result = build(options)
    except HPSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pngs = sum(w.png is not None for w in result.written)
    print(f"wrote {len(result.written)} figures ({pngs} PNGs in {result.png_seconds:.1f}s) to "
          f"{options.out} in {time.perf_counter() - start:.1f}s")
    for line in itertools.islice(result.missing, 20):
        print(f"  not drawn: {line}")
    if options.dashboard:
        saved = sum(len(a.saved) for a in result.attached)
        print(f"attached {saved} figures to {len(result.attached)} studies in "
              f"{options.storage_url} (optuna-dashboard shows them on each study's page)")
        for attached in result.attached:
            for stem, reason in attached.skipped.items():
                print(f"  not attached: {attached.study} {stem}: {reason}")
    print(f"index: {result.index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
