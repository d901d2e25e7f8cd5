"""Errors raised by appt.

Every error a user can trigger with bad input, bad config or a mismatched checkpoint is one of
these, raised where the input enters, with a one-line message that names the file (or key) and
the problem. They subclass ``ValueError`` so generic callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations


class APPTError(ValueError):
    """Base class of every error appt raises on purpose."""


class DataError(APPTError):
    """A data file or dataset layout is missing, corrupt, or holds invalid values."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(APPTError):
    """A config key or value is unknown or invalid."""


class CheckpointError(APPTError):
    """A checkpoint is unreadable or belongs to another model/backbone."""
