"""The error family every user-facing failure belongs to.

The CLI turns any `EdgepruneError` into one line on stderr and exit code 2, so each error carries both
what is wrong and how to fix it; anything else escaping is a bug in edgeprune, not bad input.
"""

from __future__ import annotations


class EdgepruneError(Exception):
    """Bad input or an unmet precondition that the user can fix."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; fix: {fix}" if fix else problem)


class RecipeError(EdgepruneError):
    """A recipe field is unknown, mistyped, out of range or inconsistent."""


class DataError(EdgepruneError):
    """Training or evaluation data is missing, empty or malformed."""


class ModelError(EdgepruneError):
    """A model cannot be found or loaded."""


class CheckpointError(EdgepruneError):
    """A checkpoint folder is missing, incomplete or inconsistent."""


class OutputExistsError(EdgepruneError):
    """An output folder exists and would be overwritten."""


class TargetError(EdgepruneError):
    """A target profile is unknown or invalid, or the host cannot run it."""


class BundleError(EdgepruneError):
    """A bundle is missing, tampered with, truncated or unsafe."""


class VerificationError(EdgepruneError):
    """An exported model does not compute what its source computes."""


class ReportError(EdgepruneError):
    """A benchmark report is missing, malformed or for another bundle/target."""
