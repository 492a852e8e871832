"""Exceptions shared by the whole project.

``HPSearchError`` is the one project error: a problem with the user's input (a file, a
setting, a path) that the CLIs print as one line, without a traceback. It subclasses
``ValueError`` so library callers can catch it with the built-in type.
"""

from __future__ import annotations


class HPSearchError(ValueError):
    """Bad input from the user; the message names the problem and the fix."""


class DataError(HPSearchError):
    """A data file or folder is missing or malformed."""


class ConfigError(HPSearchError):
    """A config key, value or study file is invalid."""


class DivergedError(RuntimeError):
    """Training diverged (NaN or infinite loss); the trial ends as pruned with this reason."""
