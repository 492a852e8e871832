"""Exceptions shared by the whole project.

``HPSearchError`` is the one project error: a problem with the user's input (a file, a
setting, a path) that the CLIs print as one line, without a traceback. It subclasses
``ValueError`` so library callers can catch it with the built-in type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class HPSearchError(ValueError):
    """Bad input from the user; the message names the problem and the fix."""


class DataError(HPSearchError):
    """A data file or folder is missing or malformed."""


@dataclass(frozen=True)
class Fix:
    """One way out of a ``ConfigError``: its text and the config keys it needs fixed.

    A study that searches one of ``keys`` cannot take this way (``--set`` of a searched key is
    refused, and a fixed ``weights`` file cannot serve several searched backbones).
    """

    text: str
    keys: tuple[str, ...] = ()


class ConfigError(HPSearchError):
    """A config key, value or study file is invalid.

    ``ConfigError(problem, fixes=[...])`` reads "problem; fix, or fix"; a study runner keeps
    only the fixes that work for its study (see ``search.study.preflight``).
    """

    def __init__(self, message: str, fixes: Sequence[Fix] = ()) -> None:
        self.problem, self.fixes = message, tuple(fixes)
        if fixes:
            message += "; " + ", or ".join(fix.text for fix in fixes)
        super().__init__(message)


class DivergedError(RuntimeError):
    """Training diverged (NaN or infinite loss); the trial ends as pruned with this reason."""
