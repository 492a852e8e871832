"""The compute ledger in the reports: best value against cumulative compute, grid against search.

Every MLP and face trial records ``compute`` (``objectives.compute``: training seconds and an
estimated FLOP count; a trial over seeds sums its seeds'). XGBoost and sklearn-probe trials
record none: their seconds are their run time (``duration_s``) and their FLOPs stay unknown.

``ledger(info)`` walks a study's finished trials in number order (about the order they
started in) and sums their compute; ``best`` is the best value so far, over complete trials
only, as Optuna picks it. Pruned and failed trials add their compute but no value: that is
what they cost the search. ``compare`` sets the exercise's grid (``mlp_grid``) against the
open search (``mlp_width_depth``): the grid's compute to reach its best, the search's compute
to first reach the grid's best, and the search's best within the grid's total compute.
``ledger_figure`` and ``comparison_figure`` draw them; ``reports.index`` shows the table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.data import StudyInfo
from reports.figure import ReportFigure, metric_label

GRID_STUDY = "mlp_grid"  # the exercise's width x depth grid
SEARCH_STUDY = "mlp_width_depth"  # the open search over the same nets
UNITS = ("flops", "seconds")
UNIT_AXES = {"flops": "cumulative FLOPs (estimated)", "seconds": "cumulative training seconds"}
UNIT_NAMES = {"flops": "FLOPs", "seconds": "training seconds"}
COUNTED = ("COMPLETE", "PRUNED", "FAIL")  # finished: running trials have no ledger yet


@dataclass(frozen=True)
class LedgerRow:
    """One finished trial and the study's totals up to and including it."""

    number: int
    state: str
    value: float | None  # complete trials only
    seconds: float
    flops: float | None  # None: not recorded (XGBoost, sklearn, failed before the ledger)
    timed_by: str  # "ledger" (compute.train_seconds), "duration" (duration_s) or "none"
    cum_seconds: float
    cum_flops: float  # trials without a FLOP count add 0
    best: float | None  # the best complete value so far

    def cumulative(self, unit: str) -> float:
        return self.cum_flops if unit == "flops" else self.cum_seconds


@dataclass(frozen=True)
class Ledger:
    """A study's finished trials in number order with their cumulative compute."""

    study: str
    metric: str
    direction: str
    rows: tuple[LedgerRow, ...]

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is at least as good as ``b``."""
        return a >= b if self.direction == "maximize" else a <= b

    def total(self, unit: str) -> float:
        return self.rows[-1].cumulative(unit) if self.rows else 0.0

    def has_flops(self) -> bool:
        return any(row.flops is not None for row in self.rows)

    def without_flops(self) -> int:
        return sum(row.flops is None for row in self.rows)

    def timed_by_duration(self) -> int:
        return sum(row.timed_by != "ledger" for row in self.rows)

    def best_row(self) -> LedgerRow | None:
        """The complete trial with the best value (the first of equals)."""
        best = None
        for row in self.rows:
            if row.value is not None and (best is None or not self.better(best.value, row.value)):
                best = row
        return best

    def reach(self, target: float) -> LedgerRow | None:
        """The first trial whose value reaches ``target`` (None: none does)."""
        return next((row for row in self.rows
                     if row.value is not None and self.better(row.value, target)), None)

    def best_within(self, budget: float, unit: str) -> LedgerRow | None:
        """The last trial that ends within ``budget`` of cumulative ``unit`` (its ``best``
        is the study's best by then); None when even the first trial costs more."""
        within = [row for row in self.rows if row.cumulative(unit) <= budget]
        return within[-1] if within else None

    def notes(self) -> list[str]:
        """What the sums stand on, where it is not the plain ledger."""
        notes = []
        if self.timed_by_duration():
            notes.append(f"{self.timed_by_duration()} of {len(self.rows)} trials have no "
                         "compute ledger: their run time (duration_s) counts as seconds")
        if self.has_flops() and self.without_flops():
            notes.append(f"{self.without_flops()} trials have no FLOP count (failed or "
                         "diverged before it was recorded): they add 0 FLOPs")
        return notes


def ledger(info: StudyInfo) -> Ledger:
    """``info``'s finished trials in number order with cumulative compute and best so far."""
    rows: list[LedgerRow] = []
    cum_seconds = cum_flops = 0.0
    best: float | None = None
    maximize = info.direction == "maximize"
    for trial in sorted(info.trials, key=lambda t: t.number):
        if trial.state not in COUNTED:
            continue
        compute = trial.user_attrs.get("compute")
        flops: float | None = None
        if isinstance(compute, dict) and "train_seconds" in compute:
            seconds, timed_by = float(compute["train_seconds"]), "ledger"
            flops = float(compute["flops"]) if compute.get("flops") is not None else None
        elif trial.duration_s is not None:
            seconds, timed_by = float(trial.duration_s), "duration"
        else:
            seconds, timed_by = 0.0, "none"
        cum_seconds += seconds
        cum_flops += flops or 0.0
        value = trial.value if trial.state == "COMPLETE" else None
        if value is not None and (best is None or (value > best if maximize else value < best)):
            best = value
        rows.append(LedgerRow(trial.number, trial.state, value, seconds, flops, timed_by,
                              cum_seconds, cum_flops, best))
    return Ledger(info.name, info.metric, info.direction, tuple(rows))


@dataclass
class Comparison:
    """The grid against the open search, in both units; what ``reports.index`` shows.

    ``missing`` (when set) says why there are no numbers; values per unit are None where a
    study recorded no FLOPs. Plain values only: it is stored as JSON beside the index.
    """

    grid: str = GRID_STUDY
    search: str = SEARCH_STUDY
    metric: str = ""
    direction: str = "maximize"
    missing: str = ""
    grid_trials: int = 0
    grid_best: float | None = None
    grid_best_trial: int | None = None
    grid_to_best: dict[str, float | None] = field(default_factory=dict)
    grid_total: dict[str, float | None] = field(default_factory=dict)
    search_trials: int = 0
    search_best: float | None = None
    search_best_trial: int | None = None
    search_total: dict[str, float | None] = field(default_factory=dict)
    search_reach_trial: int | None = None  # the first search trial at the grid's best
    search_to_reach: dict[str, float | None] = field(default_factory=dict)
    search_best_at_grid_total: dict[str, float | None] = field(default_factory=dict)
    search_best_at_grid_total_trial: dict[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    storage: str = ""
    built: str = ""

    def ratio(self, unit: str) -> float | None:
        """The search's compute to the grid's best over the grid's (None: not reached)."""
        ours, theirs = self.search_to_reach.get(unit), self.grid_to_best.get(unit)
        if ours is None or not theirs:
            return None
        return ours / theirs

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Comparison:
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in raw.items() if key in known})


def compare(grid: StudyInfo | None, search: StudyInfo | None) -> Comparison:
    """The grid study against the open search; ``missing`` says what is lacking, if any."""
    comparison = Comparison(built=time.strftime("%Y-%m-%d %H:%M:%S"))
    if grid is None or search is None:
        absent = [name for name, info in ((GRID_STUDY, grid), (SEARCH_STUDY, search))
                  if info is None]
        comparison.missing = f"needs {' and '.join(absent)}, not in storage"
        return comparison
    comparison.grid, comparison.search = grid.name, search.name
    comparison.metric, comparison.direction = grid.metric, grid.direction
    if (search.metric, search.direction) != (grid.metric, grid.direction):
        comparison.missing = (f"{grid.name} {grid.direction}s {grid.metric} but {search.name} "
                              f"{search.direction}s {search.metric}: nothing to compare")
        return comparison
    grid_ledger, search_ledger = ledger(grid), ledger(search)
    grid_best, search_best = grid_ledger.best_row(), search_ledger.best_row()
    for name, best in ((grid.name, grid_best), (search.name, search_best)):
        if best is None:
            comparison.missing = f"needs {name}: it has no complete trial yet"
            return comparison
    assert grid_best is not None and search_best is not None and grid_best.value is not None
    units = [unit for unit in UNITS
             if unit == "seconds" or (grid_ledger.has_flops() and search_ledger.has_flops())]
    comparison.grid_trials, comparison.search_trials = (len(grid_ledger.rows),
                                                        len(search_ledger.rows))
    comparison.grid_best, comparison.grid_best_trial = grid_best.value, grid_best.number
    comparison.search_best, comparison.search_best_trial = search_best.value, search_best.number
    reached = search_ledger.reach(grid_best.value)
    comparison.search_reach_trial = reached.number if reached else None
    for unit in UNITS:
        ok = unit in units
        comparison.grid_to_best[unit] = grid_best.cumulative(unit) if ok else None
        comparison.grid_total[unit] = grid_ledger.total(unit) if ok else None
        comparison.search_total[unit] = search_ledger.total(unit) if ok else None
        comparison.search_to_reach[unit] = reached.cumulative(unit) if ok and reached else None
        within = search_ledger.best_within(grid_ledger.total(unit), unit) if ok else None
        comparison.search_best_at_grid_total[unit] = within.best if within else None
        best_then = (search_ledger.reach(within.best) if within and within.best is not None
                     else None)
        comparison.search_best_at_grid_total_trial[unit] = best_then.number if best_then else None
    if "flops" not in units:
        comparison.notes.append("FLOPs: not recorded by both studies; seconds only")
    for study_ledger in (grid_ledger, search_ledger):
        comparison.notes += [f"{study_ledger.study}: {note}" for note in study_ledger.notes()]
    comparison.notes += setting_differences(grid, search)
    return comparison


def setting_differences(grid: StudyInfo, search: StudyInfo) -> list[str]:
    """Settings fixed in both studies (one value across each study's trials) that differ
    between them: the comparison is then not like for like, and says so."""
    def fixed(info: StudyInfo) -> dict[str, Any]:
        configs = [t.config for t in info.finished() if t.config]
        keys = set.intersection(*(set(c) for c in configs)) if configs else set()
        return {key: configs[0][key] for key in keys
                if all(repr(c[key]) == repr(configs[0][key]) for c in configs)}

    ours, theirs = fixed(grid), fixed(search)
    differ = sorted(key for key in set(ours) & set(theirs) if repr(ours[key]) != repr(theirs[key]))
    if not differ:
        return []
    pairs = ", ".join(f"{key} {ours[key]!r} vs {theirs[key]!r}" for key in differ)
    return [f"the studies were run with different settings ({grid.name} vs {search.name}: "
            f"{pairs}): the comparison is not like for like"]


def fmt_compute(value: float | None, unit: str) -> str:
    """``2.29e+09 FLOPs`` or ``12.3 s`` (``1,234 s`` from 100 on); ``-`` when unknown."""
    if value is None:
        return "-"
    if unit == "flops":
        return f"{value:.3g} FLOPs"
    return f"{value:.3g} s" if value < 100 else f"{value:,.0f} s"


def ledger_figure(info: StudyInfo) -> ReportFigure:
    """Best value so far against cumulative FLOPs (left) and training seconds (right), with
    each complete trial as a dot at the compute spent when it ended."""
    study_ledger = ledger(info)
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                           subplot_titles=[f"by {UNIT_NAMES[u]}" for u in UNITS])
    for col, unit in enumerate(UNITS, start=1):
        if unit == "flops" and not study_ledger.has_flops():
            figure.add_annotation(text="no FLOP count recorded<br>(XGBoost and sklearn trials "
                                  "record seconds only)", showarrow=False, row=1, col=col,
                                  x=0.5, y=0.5, xref="x domain", yref="y domain")
            continue
        _add_curve(figure, study_ledger, unit, col, name=f"best {info.metric} so far",
                   color="#1f77b4", dots=True, showlegend=col == 2)
        figure.update_xaxes(title_text=UNIT_AXES[unit], row=1, col=col)
    figure.update_yaxes(title_text=metric_label(info.metric), row=1, col=1)
    notes = study_ledger.notes()
    subtitle = "; ".join([f"{len(study_ledger.rows)} finished trials in number order; pruned "
                          "and failed ones add their compute", *notes])
    figure.update_layout(template="plotly_white", legend={"orientation": "h", "y": -0.22},
                         title={"text": f"{info.name}: best {info.metric} against cumulative "
                                f"compute<br><sup>{subtitle}</sup>", "x": 0.01},
                         margin={"t": 90, "r": 20})
    return ReportFigure("compute_ledger", f"{info.name}: best value against compute", figure)


def comparison_figure(grid: StudyInfo, search: StudyInfo) -> ReportFigure:
    """The grid's and the search's best so far on one compute axis per unit, with the grid's
    best (horizontal) and the grid's total compute (vertical) marked."""
    ledgers = (ledger(grid), ledger(search))
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                           subplot_titles=[f"by {UNIT_NAMES[u]}" for u in UNITS])
    grid_best = ledgers[0].best_row()
    for col, unit in enumerate(UNITS, start=1):
        if unit == "flops" and not all(lg.has_flops() for lg in ledgers):
            figure.add_annotation(text="no FLOP count in both studies", showarrow=False,
                                  row=1, col=col, x=0.5, y=0.5, xref="x domain",
                                  yref="y domain")
            continue
        for lg, color in zip(ledgers, ("#ff7f0e", "#1f77b4"), strict=True):
            _add_curve(figure, lg, unit, col, name=f"{lg.study}", color=color, dots=False,
                       showlegend=col == 2)
        figure.add_vline(x=ledgers[0].total(unit), line={"dash": "dot", "color": "#ff7f0e"},
                         row=1, col=col)
        if grid_best is not None and grid_best.value is not None:
            figure.add_hline(y=grid_best.value, line={"dash": "dash", "color": "#999"},
                             row=1, col=col)
        figure.update_xaxes(title_text=UNIT_AXES[unit], row=1, col=col)
    figure.update_yaxes(title_text=f"best {metric_label(grid.metric)} so far", row=1, col=1)
    figure.update_layout(
        template="plotly_white", legend={"orientation": "h", "y": -0.22},
        margin={"t": 90, "r": 20},
        title={"text": f"{search.name} against {grid.name}: best {grid.metric} by cumulative "
               f"compute<br><sup>dashed: {grid.name}'s best; dotted: {grid.name}'s total "
               "compute</sup>", "x": 0.01})
    return ReportFigure("compute_vs_grid", f"{search.name} against {grid.name}: compute",
                        figure)


def _add_curve(figure: go.Figure, study_ledger: Ledger, unit: str, col: int, *, name: str,
               color: str, dots: bool, showlegend: bool) -> None:
    rows = [row for row in study_ledger.rows if row.best is not None]
    figure.add_trace(go.Scatter(
        x=[row.cumulative(unit) for row in rows], y=[row.best for row in rows],
        mode="lines+markers" if len(rows) < 3 else "lines", line={"shape": "hv", "color": color},
        name=name, legendgroup=name, showlegend=showlegend,
        hovertext=[f"after trial #{row.number}: {fmt_compute(row.cumulative(unit), unit)}"
                   for row in rows], hoverinfo="text+y"), row=1, col=col)
    if dots:
        done = [row for row in study_ledger.rows if row.value is not None]
        figure.add_trace(go.Scatter(
            x=[row.cumulative(unit) for row in done], y=[row.value for row in done],
            mode="markers", marker={"size": 6, "color": "#7f7f7f", "opacity": 0.6},
            name="a complete trial's value", legendgroup="trials", showlegend=showlegend,
            hovertext=[f"trial #{row.number}: {fmt_compute(row.cumulative(unit), unit)} so far"
                       for row in done], hoverinfo="text+y"), row=1, col=col)
