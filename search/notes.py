"""The study note shown on optuna-dashboard's study page: what the study is and how it was made.

``write_study_note`` is called when the runner creates or resumes a study. The note is Markdown
(the study file's description, the command, the data fingerprint, the fixed settings and what is
searched) and is stored with ``optuna_dashboard.save_note``; an unchanged note is not written
again, so resuming a study does not pile up note versions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    import optuna

    from search.spec import StudySpec


def study_note(spec: StudySpec, command: str, fingerprint: str) -> str:
    """The Markdown note for a study made from ``spec`` by ``command``."""
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
        "Made (or last resumed) with:",
        "",
        "```",
        command,
        "```",
    ]
    return "\n".join(lines) + "\n"


def write_study_note(study: optuna.Study, spec: StudySpec, command: str,
                     fingerprint: str) -> None:
    """Store the study's note for the dashboard, unless it already says the same."""
    from optuna_dashboard import get_note, save_note

    body = study_note(spec, command, fingerprint)
    if get_note(study) != body:
        save_note(study, body)
