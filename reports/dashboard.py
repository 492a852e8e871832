"""Attach a study's report figures to the study in the storage, for optuna-dashboard to show.

optuna-dashboard (0.21) shows every Plotly figure saved with
``optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=ID)`` on the
study's page, next to its history and importance plots, each in a 450-pixel-high box (the page
lays them out in any order). The figure is stored as JSON in the study's system attributes,
in chunks under ``dashboard:plot_data:ID:0``, ``:1``, ...; saving again under the same ID
overwrites it. So each report figure gets a fixed ID, ``hpsearch.<file stem>``, and a rebuild
replaces it instead of adding a copy. There is no call that deletes a figure: one that an
earlier build attached and this one does not draw is overwritten by a small figure saying so.

This writes to the storage, so only ``python -m reports.build --dashboard`` calls it; the
dashboard server (``search.dashboard``) stays read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import optuna
import plotly.graph_objects as go

from reports.figure import ReportFigure

PLOT_DATA = "dashboard:plot_data:"  # optuna_dashboard._custom_plot_data.SYSTEM_ATTR_PLOT_DATA
PREFIX = "hpsearch."  # the IDs of the figures reports.build attaches
# The study page fetches every figure whenever it refreshes the study: a figure of megabytes
# (a big decision-boundary map, embedded images) would slow every page down.
MAX_JSON_CHARS = 2_000_000
DASHBOARD_HEIGHT = 450  # optuna-dashboard's box for a user figure, in pixels


@dataclass
class Attached:
    """What one study got: figure IDs saved, figures left out (and why), stale ones blanked."""

    study: str
    saved: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)


def graph_id(stem: str) -> str:
    """``hpsearch.fig06_grid_best_worst_boundary``: the fixed ID of a report figure (letters,
    digits, ``-_:.`` only, as optuna-dashboard requires)."""
    return PREFIX + re.sub(r"[^A-Za-z0-9_:.-]", "_", stem)


def attached_ids(study: optuna.Study) -> list[str]:
    """The IDs of every figure saved to ``study`` for the dashboard (ours and others')."""
    ids = set()
    for key in study._storage.get_study_system_attrs(study._study_id):
        if key.startswith(PLOT_DATA):
            # "dashboard:plot_data:<id>:<chunk>"; an ID may itself hold colons
            ids.add(key[len(PLOT_DATA):].rsplit(":", 1)[0])
    return sorted(ids)


def for_dashboard(item: ReportFigure) -> go.Figure:
    """A copy of ``item``'s figure that fits the dashboard's box: no fixed width or height
    (the export sets the page size), so Plotly sizes it to the box."""
    figure = go.Figure(item.figure.to_dict())
    figure.update_layout(width=None, height=None, autosize=True)
    return figure


def attach(study: optuna.Study, items: list[ReportFigure]) -> Attached:
    """Save ``items`` to ``study`` under their fixed IDs, replacing earlier copies, and retire
    the figures an earlier build attached that ``items`` no longer hold."""
    from optuna_dashboard import save_plotly_graph_object

    result = Attached(study.study_name)
    for item in items:
        figure = for_dashboard(item)
        size = len(figure.to_json())
        if size > MAX_JSON_CHARS:
            result.skipped[item.stem] = (f"{size / 1e6:.1f} MB of figure data, over the "
                                         f"{MAX_JSON_CHARS / 1e6:.0f} MB the dashboard page is "
                                         "given; see the report's HTML file")
            continue
        result.saved.append(save_plotly_graph_object(study, figure,
                                                     graph_object_id=graph_id(item.stem)))
    for old in attached_ids(study):
        if old.startswith(PREFIX) and old not in result.saved:
            save_plotly_graph_object(study, retired_figure(old), graph_object_id=old)
            result.retired.append(old)
    return result


def retired_figure(old: str) -> go.Figure:
    """The small figure that overwrites one the latest build did not draw (or left out)."""
    figure = go.Figure()
    figure.add_annotation(text=f"{old[len(PREFIX):]}: not attached by the latest "
                          "python -m reports.build --dashboard", showarrow=False,
                          x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(template="plotly_white", xaxis={"visible": False},
                         yaxis={"visible": False})
    return figure
