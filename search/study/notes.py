"""The notes shown on optuna-dashboard's study and trial pages, as Markdown.

The study note (``write_study_note``: the study file's description, its settings, the data
fingerprint and the commands that made it) is written when the runner creates or resumes a
study and again when a run that added trials ends; an unchanged note is not written again, so
resuming a study does not pile up note versions. The trial note (``write_trial_note``, at the
end of each trial) puts the trial's config and final metrics in two short tables and shows
its PNG previews, so the trial page reads without the one-line JSON of its attributes.
Notes are stored by ``optuna_dashboard.save_note`` as study system attributes; they stay at a
few hundred bytes to a few KB.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from objectives.errors import DivergedError
from search.records.provenance import COMMANDS_ATTR

if TYPE_CHECKING:
    import optuna

    from search.study.spec import StudySpec

NOTE_RUNS = 20  # the most recent runs listed in a study note
VALUE_CHARS = 60  # longer config values are cut in the trial note's table
ERROR_CHARS = 300
# Previews in this order first, then any other PNG by name; seed copies (``seed43_*``) of a
# trial over seeds are left out (the plain names are the median seed's).
PREVIEW_ORDER = ("loss_curves.png", "accuracy_curves.png", "batch_losses.png",
                 "decision_boundary.png", "test_errors.png")
SEED_COPY = re.compile(r"^seed\d+_")


def study_note(spec: StudySpec, runs: Sequence[Mapping[str, Any]], fingerprint: str) -> str:
    """The Markdown note for a study made from ``spec`` by ``runs`` (its ``commands``)."""
    fixed = yaml.safe_dump(dict(spec.fixed), default_flow_style=True, sort_keys=False,
                           width=1000).strip()
    lines = [
        f"## {spec.name}",
        "",
        spec.description or "(no description in the study file)",
        "",
        f"- **objective**: `{spec.objective}`, {spec.direction} `{spec.metric}`",
        f"- **searched**: {', '.join(f'`{k}`' for k in spec.searched_keys()) or 'nothing'}",
        f"- **fixed**: `{fixed}`",
        f"- **sampler / pruner**: `{spec.sampler.name}` / `{spec.pruner.name}`",
        f"- **study file**: `{spec.path or spec.name}`",
        f"- **data fingerprint**: `{fingerprint}`",
        "",
        *commands_lines(runs),
    ]
    return "\n".join(lines) + "\n"


def commands_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines listing the runs that made a study, oldest first (the latest
    ``NOTE_RUNS``)."""
    if not runs:
        return ["No run has added trials yet."]
    lines = ["Made with (each run that added trials, oldest first):", ""]
    if len(runs) > NOTE_RUNS:
        lines.append(f"- ... {len(runs) - NOTE_RUNS} earlier run(s), listed in the study's "
                     f"`{COMMANDS_ATTR}` attribute")
    lines += [f"- {run_summary(run)}" for run in runs[-NOTE_RUNS:]]
    return lines


def run_summary(run: Mapping[str, Any]) -> str:
    """```python -m search.run ...`: 4 trials from #0 (local)``: one run, in Markdown."""
    text = f"`{run.get('command') or '(command not recorded)'}`"
    count, first = run.get("trials"), run.get("first_trial")
    details = []
    if count is not None:
        details.append(f"{count} trial{'s' if count != 1 else ''} from #{first}")
    if run.get("backend"):
        details.append(str(run["backend"]))
    return f"{text}: {', '.join(details)}" if details else text


def made_with(runs: Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    """One line naming the runs that made a study (the latest ``limit``), for the report
    index: ``made with `python -m search.run ...`: 4 trials from #0, local; ...``."""
    shown = [run_summary(run) for run in runs[-limit:]]
    earlier = len(runs) - len(shown)
    return "made with " + "; ".join(
        ([f"{earlier} earlier run{'s' if earlier != 1 else ''}"] if earlier else []) + shown)


def write_study_note(study: optuna.Study, spec: StudySpec, fingerprint: str) -> None:
    """Store the study's note for the dashboard, unless it already says the same."""
    from optuna_dashboard import get_note, save_note

    runs = study.user_attrs.get(COMMANDS_ATTR)
    body = study_note(spec, runs if isinstance(runs, list) else [], fingerprint)
    if get_note(study) != body:
        save_note(study, body)


def trial_outcome(spec: StudySpec, metrics: Mapping[str, float] | None,
                  error: BaseException | None, stopped_early: bool, steps: int) -> str:
    """How a trial ended, in a few words: ``complete: val_accuracy 0.8123``, ``pruned after 7
    epoch(s)``, ``pruned: diverged: ...`` or ``failed: ValueError: ...``."""
    if isinstance(error, DivergedError):
        return _cut(f"pruned: diverged: {error}", ERROR_CHARS)
    if error is not None:
        return _cut(f"failed: {type(error).__name__}: {error}", ERROR_CHARS)
    value = (metrics or {}).get(spec.metric)
    if value is None or not math.isfinite(float(value)):
        return f"failed: metric {spec.metric!r} is {value!r}"
    name = spec.metric
    if spec.aggregate == "lcb" and f"{name}_lcb" in (metrics or {}):
        name = f"{name}_lcb"  # the trial's value: the bound over its seeds
        value = (metrics or {})[name]
    if stopped_early:
        return f"pruned after {steps} step(s), {name} {_number(value)}"
    return f"complete: {name} {_number(value)}"


def trial_note(number: int, outcome: str, config: Mapping[str, Any], searched: Collection[str],
               metrics: Mapping[str, float] | None, previews: Sequence[tuple[str, str]],
               made_by: Mapping[str, Any], previews_policy: str = "all") -> str:
    """The Markdown note of one trial: how it ended, its config (searched keys in bold) and
    final metrics as tables, its previews (``(name, url)`` pairs) as images, and what made
    it. A trial without previews because of the study's ``previews_policy`` says so."""
    lines = [f"### Trial {number}: {outcome}", "", "| setting | value |", "|---|---|"]
    # The searched keys first (what tells trials apart), then the fixed ones.
    for key in sorted(config, key=lambda k: k not in searched):
        name = f"**{key}**" if key in searched else key
        lines.append(f"| {name} | {_cell(config[key])} |")
    if metrics:
        lines += ["", "| final metric | value |", "|---|---|"]
        lines += [f"| {key} | {_number(value)} |" for key, value in metrics.items()]
    for name, url in previews:
        lines += ["", f"![{name}]({url})"]
    if not previews and previews_policy != "all":
        drawn_for = ("no trial" if previews_policy == "none"
                     else "finished trials only, not pruned ones")
        lines += ["", f"No PNG previews: this run drew them for {drawn_for} (`--previews "
                  "all` draws every trial's); the raw arrays are among the artifacts."]
    made = [f"`{made_by['command']}`" if made_by.get("command") else None,
            f"({made_by['backend']})" if made_by.get("backend") else None,
            f"on {made_by['device']}" if made_by.get("device") else None,
            f"at {made_by['host']}" if made_by.get("host") else None]
    if any(made):
        lines += ["", "Made by " + " ".join(part for part in made if part) + "."]
    return "\n".join(lines) + "\n"


def preview_names(artifacts: Mapping[str, str]) -> list[str]:
    """The trial's PNG artifacts to show, in ``PREVIEW_ORDER`` then by name."""
    pngs = [name for name in artifacts if name.endswith(".png") and not SEED_COPY.match(name)]
    return sorted(pngs, key=lambda n: (PREVIEW_ORDER.index(n) if n in PREVIEW_ORDER
                                       else len(PREVIEW_ORDER), n))


def write_trial_note(trial: optuna.Trial, spec: StudySpec, artifacts: Mapping[str, str],
                     outcome: str, metrics: Mapping[str, float] | None) -> None:
    """Store the trial's note for the dashboard; its images load from the dashboard's
    artifact route (``/artifacts/<study id>/<trial id>/<artifact id>``)."""
    from optuna_dashboard.artifact import get_artifact_path

    attrs = trial.user_attrs
    previews = [(name.removesuffix(".png").replace("_", " "),
                 get_artifact_path(trial, artifacts[name])) for name in preview_names(artifacts)]
    body = trial_note(trial.number, outcome, attrs.get("config") or {},
                      set(spec.searched_keys()), metrics, previews,
                      attrs.get("provenance") or {}, previews_policy=spec.previews)
    save_new_note(trial, body)


def save_new_note(trial: optuna.Trial, body: str) -> None:
    """``optuna_dashboard.save_note`` for a trial that has no note yet (each trial's note is
    written once, at its end): the same study system attributes, written without first
    reading every note of the study, as ``save_note`` does twice (measured: 0.3 s a trial in
    a SQLite study of 1,000 noted trials, against a few ms here)."""
    from optuna_dashboard._note import note_ver_key, split_body

    storage, study_id = trial.storage, trial.study._study_id
    for key, chunk in split_body(body, trial._trial_id).items():
        storage.set_study_system_attr(study_id, key, chunk)
    # The version last: the dashboard reads a note only once its version is there.
    storage.set_study_system_attr(study_id, note_ver_key(trial._trial_id), 1)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(value: Any) -> str:
    """A config value for a Markdown table cell: short, on one line, no bare ``|``."""
    text = _number(value) if isinstance(value, float) else (
        json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None
        else str(value))
    return _cut(text, VALUE_CHARS).replace("|", "\\|")


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
