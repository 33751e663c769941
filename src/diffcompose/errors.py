"""User-facing errors.

Every problem a user can fix (bad path, bad mask, missing weights, out-of-range option)
raises a :class:`DiffComposeError` whose message is one self-contained line. The CLI prints
exactly that line to stderr and exits non-zero, with no traceback.
"""

from __future__ import annotations


class DiffComposeError(Exception):
    """Base class: an error whose message is meant for the user, on one line."""

    exit_code = 2


class InputError(DiffComposeError, ValueError):
    """An image, mask, box or option the user gave is unusable."""


class WeightsMissingError(DiffComposeError, FileNotFoundError):
    """Model weights are neither local nor reachable (offline, no cache)."""

    exit_code = 3


class OutputExistsError(DiffComposeError, FileExistsError):
    """The output path exists and overwriting was not requested."""


class Cancelled(DiffComposeError):
    """A run was cancelled (:meth:`diffcompose.CancelToken.cancel`, or Ctrl-C in the CLI).

    Raised within one step of the cancel; nothing is written. The CLI exits with 130.
    """

    exit_code = 130


class MissingExtraError(DiffComposeError, ImportError):
    """An engine needs packages of an extra that is not installed (exit 2: the user can fix it)."""
