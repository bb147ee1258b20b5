"""Error types shared by every layer.

User errors (a bad spec, bad input data, a refused budget) are distinct from internal bugs, so an
orchestrator can tell "fix your input" from "report this to the maintainers". Messages name keys and
columns, never values or counts taken from the data.
"""

from __future__ import annotations


class DPReleaseError(Exception):
    """Base class of every error dprelease raises on purpose."""

    exit_code = 1


class SpecError(DPReleaseError, ValueError):
    """The release specification is invalid; the message names the offending key."""

    exit_code = 2


class NoiseRangeError(SpecError):
    """A noise scale the bounds and budget ask for lies beyond what the samplers draw in 64-bit
    integers; the plan re-raises it naming the table and the bounds to lower."""


class InputDataError(DPReleaseError, ValueError):
    """The input microdata does not match the specification (column, type, nulls, ...)."""

    exit_code = 3


class BudgetError(DPReleaseError, ValueError):
    """The requested privacy budget cannot be spent (would exceed a declared limit)."""

    exit_code = 4


class InternalError(DPReleaseError, RuntimeError):
    """A broken invariant inside dprelease: this is probably a bug, please report it."""

    exit_code = 5


class RerunError(DPReleaseError, RuntimeError):
    """A rare event of this run's secret randomness stopped it before anything was written (two
    cells sharing a cell identity under the run's salt); running it again draws new secrets."""

    exit_code = 5


SHOW_ERRORS_VARIABLE = "DPRELEASE_SHOW_ERRORS"
"""Set to 1 on a private console to see what may quote data: Spark's exception text, the
input's column names, and Spark's loggers at the level asked for."""


def show_errors() -> bool:
    """True when the operator asked to see text that may quote the input (see
    :data:`SHOW_ERRORS_VARIABLE`)."""
    import os

    return os.environ.get(SHOW_ERRORS_VARIABLE) == "1"
