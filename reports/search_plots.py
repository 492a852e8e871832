"""The search's own figures for any study: Optuna's plots, learning curves and a top-trials table.

``search_figures(study, info)`` returns the figures that the study's trials allow and, for the
others, a one-line reason (for example, parameter importances need two complete trials and
two searched parameters).

In a study over seeds (``seeds: N``) a trial's value is its aggregate over the seeds (the mean,
or with ``aggregate: lcb`` the pessimistic confidence bound on it), and Optuna's plots draw that
value; the learning curves draw the per-epoch mean the trial reported; the top-trials table
shows each metric as mean ± standard deviation over the seeds.
"""

from __future__ import annotations

import math

import optuna
import plotly.graph_objects as go
from optuna.visualization import (
    plot_optimization_history,
    plot_parallel_coordinate,
    plot_param_importances,
    plot_slice,
)

from reports.data import STATES, StudyInfo, TrialInfo
from reports.figure import ReportFigure, line_mode, metric_label, styled, table_size
from search.driver.seeds import CONFIDENCE

TOP_TRIALS = 15
STATE_STYLE = {"COMPLETE": ("#1f77b4", "solid"), "PRUNED": ("#d62728", "dash"),
               "FAIL": ("#7f7f7f", "dot")}


def search_figures(study: optuna.Study, info: StudyInfo
                   ) -> tuple[list[ReportFigure], dict[str, str]]:
    """(figures, skipped) for one study; ``skipped`` maps a figure name to why it is absent."""
    figures: list[ReportFigure] = []
    skipped: dict[str, str] = {}
    complete = info.complete()
    metric = value_label(info)
    if not complete:
        skipped["optuna plots"] = "no complete trial yet"
    else:
        figures.append(_optuna(plot_optimization_history(study, target_name=metric),
                               "search_history", f"{info.name}: optimisation history",
                               "trial number", metric))
        figures.append(_optuna(plot_parallel_coordinate(study, target_name=metric),
                               "search_parallel", f"{info.name}: parallel coordinates", None,
                               None))
        figures.append(_optuna(plot_slice(study, target_name=metric), "search_slice",
                               f"{info.name}: slice plot (each parameter against {info.metric})",
                               None, metric, width=max(1000, 330 * len(_params(info)))))
        reason = _importance_blocker(info)
        if reason:
            skipped["parameter importances"] = reason
        else:
            figures.append(_optuna(plot_param_importances(study, target_name=metric),
                                   "search_importances",
                                   f"{info.name}: parameter importances ({_evaluator()})",
                                   f"importance for {info.metric} (normalised to sum 1)",
                                   "parameter"))
    if any(t.intermediate for t in info.trials):
        figures.append(learning_curves(info))
    else:
        skipped["learning curves"] = "no trial reported intermediate values"
    if info.trials:
        figures.append(top_trials_table(info))
    return figures, skipped


def value_label(info: StudyInfo) -> str:
    """What a trial's value is: the metric, or over seeds the metric's aggregate over them."""
    label = metric_label(info.metric)
    if info.seeds <= 1:
        return label
    if info.aggregate == "lcb":
        side = "lower" if info.direction == "maximize" else "upper"
        return (f"{label}: {CONFIDENCE:.0%} {side} confidence bound on the mean of "
                f"{info.seeds} seeds")
    return f"{label}: mean of {info.seeds} seeds"


def _params(info: StudyInfo) -> list[str]:
    return sorted({name for t in info.complete() for name in t.params})


def _importance_blocker(info: StudyInfo) -> str:
    complete = info.complete()
    varied = [name for name in _params(info)
              if len({repr(t.params.get(name)) for t in complete}) > 1]
    if len(complete) < 2:
        return f"needs at least 2 complete trials, has {len(complete)}"
    if len(varied) < 2:
        return (f"needs at least 2 varied parameters, has {len(varied)} "
                f"({', '.join(varied) or 'none'}); a grid of points is one parameter")
    return ""


def _evaluator() -> str:
    """Optuna's default importance evaluator (PED-ANOVA since Optuna 5)."""
    return "Optuna's default evaluator, PED-ANOVA" if int(optuna.__version__.split(".")[0]) >= 5 \
        else "Optuna's default evaluator, fANOVA"


def _optuna(figure: go.Figure, stem: str, title: str, x_title: str | None,
            y_title: str | None, width: int = 1000) -> ReportFigure:
    figure.update_layout(title={"text": title, "x": 0.01}, template="plotly_white")
    if x_title:
        figure.update_xaxes(title_text=x_title)
    if y_title and stem != "search_slice":
        figure.update_yaxes(title_text=y_title)
    return ReportFigure(stem, title, figure, width=width)


def learning_curves(info: StudyInfo) -> ReportFigure:
    """The study metric per step for every trial; pruned trials red and dashed, with an x
    where they stopped; failed ones grey and dotted. Curves of one or two steps get markers
    (a one-epoch study's would otherwise draw nothing)."""
    figure = go.Figure()
    shown: set[str] = set()
    for trial in info.trials:
        if not trial.intermediate:
            continue
        color, dash = STATE_STYLE.get(trial.state, ("#bcbd22", "solid"))
        steps = [step + 1 for step in trial.intermediate]
        values = list(trial.intermediate.values())
        figure.add_trace(go.Scatter(
            x=steps, y=values, mode=line_mode(len(steps)), marker={"size": 6},
            line={"color": color, "dash": dash, "width": 1.2}, opacity=0.8,
            name=trial.state.lower(), legendgroup=trial.state,
            showlegend=trial.state not in shown, hovertext=_hover(trial), hoverinfo="text+y"))
        shown.add(trial.state)
        if trial.state == "PRUNED":
            figure.add_trace(go.Scatter(
                x=steps[-1:], y=values[-1:], mode="markers", showlegend=False,
                legendgroup=trial.state, marker={"symbol": "x", "size": 9, "color": color},
                hovertext=_hover(trial), hoverinfo="text"))
    single = all(len(t.intermediate) <= 1 for t in info.trials)
    notes = ["one epoch per trial: a dot each"] if single else []
    if info.seeds > 1:  # the pruner saw the same per-epoch mean
        notes.append(f"each curve: the mean of the trial's {info.seeds} seeds per epoch")
    styled(figure, f"{info.name}: learning curves ({info.metric} per epoch; pruned trials "
           "dashed red, x where stopped)" + (f"<br><sup>{'; '.join(notes)}</sup>"
                                             if notes else ""),
           "epoch", metric_label(info.metric) + (f" (mean of {info.seeds} seeds)"
                                                 if info.seeds > 1 else ""), "trial state")
    return ReportFigure("search_learning_curves", f"{info.name}: learning curves", figure)


def _hover(trial: TrialInfo) -> str:
    text = f"{trial.label()} {trial.state.lower()}"
    return text + (f"<br>{trial.note[:120]}" if trial.note else "")


def top_trials_table(info: StudyInfo, limit: int = TOP_TRIALS) -> ReportFigure:
    """The best complete trials (then the others) with params, value and test metrics."""
    ranked = info.ranked()
    rest = [t for t in info.trials if t.state != "COMPLETE"]
    rows = (ranked + rest)[:limit]  # the others are counted in the title ("N more")
    params = sorted({name for t in rows for name in t.params})
    extra = [m for m in ("test_accuracy", "test_loss") if any(m in t.metrics for t in rows)
             and m != info.metric]
    seeded = info.seeds > 1 or any(t.over_seeds for t in rows)
    if seeded:  # mean ± sd over the seeds; the lcb, when it ranks, in a column of its own
        ranked_by = ([f"value ({CONFIDENCE:.0%} bound)"] if info.aggregate == "lcb" else [])
        header = ["rank", "trial", "state", *ranked_by, f"{info.metric} (mean ± sd)", *params,
                  *[f"{m} (mean ± sd)" for m in extra], "seeds", "seconds (run time)"]
        value_columns = [[_fmt(t.value) for t in rows]] if ranked_by else []
        value_columns.append([_seed_fmt(t, info.metric, t.value) for t in rows])
    else:
        header = ["rank", "trial", "state", info.metric, *params, *extra, "seconds (run time)"]
        value_columns = [[_fmt(t.value) for t in rows]]
    columns: list[list[str]] = [
        [str(i + 1) if t.state == "COMPLETE" else "-" for i, t in enumerate(rows)],
        [f"#{t.number}" for t in rows],
        [t.state.lower() for t in rows],
        *value_columns,
        *[[_fmt(t.params.get(p)) for t in rows] for p in params],
        *[[_seed_fmt(t, m, t.metrics.get(m)) if seeded else _fmt(t.metrics.get(m))
           for t in rows] for m in extra],
        *([[", ".join(map(str, t.seeds)) or "-" for t in rows]] if seeded else []),
        [_fmt(t.duration_s) for t in rows],
    ]
    fill = ["#e8f4e8" if i == 0 and t.state == "COMPLETE" else
            "#fbe3e3" if t.state in ("PRUNED", "FAIL") else "white"
            for i, t in enumerate(rows)]
    header = [f"<b>{h}</b>" for h in header]
    margin = {"t": 80, "b": 20, "l": 10, "r": 10}
    size = table_size(header, columns, cell_height=24, header_height=28, margin=margin)
    figure = go.Figure(go.Table(
        columnwidth=size.columnwidth,
        header={"values": header, "fill_color": "#dde5f0", "align": "left", "height": 28},
        cells={"values": columns, "fill_color": [fill] * len(header), "align": "left",
               "height": 24}))
    title = (f"{info.name}: top {min(limit, len(ranked))} of {len(ranked)} complete trials by "
             f"{value_label(info) if seeded else info.metric} ({info.direction})")
    hidden = (ranked + rest)[limit:]
    if hidden:
        states = ", ".join(f"{sum(t.state == s for t in hidden)} {s.lower()}"
                           for s in STATES if any(t.state == s for t in hidden))
        title += (f"<br><sup>{len(hidden)} more trial(s) not shown ({states}); "
                  "optuna-dashboard lists them all</sup>")
    figure.update_layout(title={"text": title, "x": 0.01}, margin=margin)
    return ReportFigure("search_top_trials", f"{info.name}: top trials", figure,
                        width=size.width, height=size.height)


def _seed_fmt(trial: TrialInfo, metric: str, fallback: object) -> str:
    """``0.9512 ± 0.0043``: the metric's mean and standard deviation over the trial's seeds
    (the plain value for a trial without several seeds)."""
    mean = trial.metrics.get(metric) if trial.over_seeds else None
    if mean is None:
        return _fmt(fallback)
    sd = trial.seed_sd(metric)
    if sd is None or not math.isfinite(sd):
        return _fmt(mean)
    # as many decimals as give the sd two significant digits, the mean to the same place
    places = 4 if sd == 0 else min(6, max(0, 1 - math.floor(math.log10(sd))))
    return f"{mean:.{places}f} ± {sd:.{places}f}"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
