"""The few exceptions triage raises. Each carries enough context to be shown in one line."""

from __future__ import annotations

from pathlib import Path


class TriageError(Exception):
    """Base class: a problem the user can fix (bad config, missing file, bad rule)."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        return where + self.message


class ConfigError(TriageError):
    """The configuration file or a setting in it is wrong."""


class InputError(TriageError):
    """An input (log file, mail folder) cannot be read at all."""


class RuleError(TriageError):
    """A rule, a rule file or a map line is not acceptable (bad key, bad syntax, duplicate)."""


class InstallError(TriageError):
    """Postfix refused the maps (postmap or reload failed); the previous maps are kept."""
