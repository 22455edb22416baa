"""The DbkitError hierarchy.

Every error dbkit raises on purpose is a :class:`DbkitError`: it carries a
one-line message for users (what was wrong, and how to fix it) and the exit
code the CLI returns.  The CLI catches them once, at its boundary.

Exit codes (documented in the README):

====  ==========================================================
0     success
1     the operation failed (:class:`OperationFailed`, unexpected errors)
2     configuration or usage error (:class:`ConfigError`, :class:`UsageError`)
3     database unreachable (:class:`DatabaseUnavailable`)
4     a required tool or extension is missing (:class:`MissingDependency`)
5     refused for safety (:class:`Refused`)
====  ==========================================================

``dbkit check`` has its own documented codes (0 healthy, 1 degraded, 2 unhealthy).

These classes are the only place an exit code is set: every error of a feature (``MigrationFailed``,
``BackupFailed``, ``StorageError``, …) derives from the one whose code it means, and sets none itself
(``tests/test_errors.py`` pins it).
"""

from __future__ import annotations

__all__ = ["DbkitError", "OperationFailed", "ConfigError", "UsageError", "DatabaseUnavailable", "MissingDependency",
           "Refused", "DevClusterError"]


class DbkitError(Exception):
    """Base class: a message for users and an exit code for the CLI."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class OperationFailed(DbkitError):
    """The operation ran and failed (a revision, a backup, a restore, a seeder); exit code 1."""

    exit_code = 1


class ConfigError(DbkitError):
    """A setting is missing or malformed.

    ``variable`` names the setting as users write it (``DATABASE_URL``).
    """

    exit_code = 2

    def __init__(self, variable: str, problem: str, *, purpose: str | None = None, example: str | None = None) -> None:
        parts = [f"{variable} {problem}"]
        if purpose:
            parts.append(f"it {purpose}")
        if example:
            parts.append(f"example: {example}")
        super().__init__("; ".join(parts))
        self.variable = variable
        self.problem = problem
        self.example = example


class UsageError(DbkitError):
    """A command was given something it cannot use (an unknown revision, an empty name)."""

    exit_code = 2


class DatabaseUnavailable(DbkitError):
    """The database could not be reached (connection refused, bad auth, ...)."""

    exit_code = 3


class MissingDependency(DbkitError):
    """A program, package or PostgreSQL extension dbkit needs is not installed."""

    exit_code = 4


class DevClusterError(DbkitError):
    """The embedded development cluster could not be started or stopped."""

    exit_code = 1


class Refused(DbkitError):
    """A command was refused for safety (prod environment, missing confirmation)."""

    exit_code = 5
