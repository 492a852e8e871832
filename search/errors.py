"""The project's user-facing errors (defined beside the objectives, which raise them too)."""

from objectives.errors import ConfigError, DataError, HPSearchError

__all__ = ["ConfigError", "DataError", "HPSearchError"]
