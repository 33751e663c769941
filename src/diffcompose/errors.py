"""User-facing errors.

Every problem a user can fix (bad path, bad mask, missing weights, out-of-range option)
raises a :class:`DiffComposeError` whose message is one self-contained line. The CLI prints
exactly that line to stderr and exits non-zero, with no traceback. A message that quotes what
the user gave quotes it bounded (:func:`shown`, :func:`cut`): a line, whatever was given.

One message, several surfaces: the CLI says ``--mask``, the HTTP API and its page say
``mask`` (the request field or upload). A message names an input or option with
:func:`named`, which keeps both spellings; ``str(error)`` is the CLI's line, and
:func:`http_message` the HTTP one (the one place where either is chosen). Each error also
carries ``field``: the HTTP name of what caused it (given, or else the first name the
message mentions), so that a page can show the message next to that control.
"""

from __future__ import annotations

import math
import re
import reprlib
from typing import Any

# A name in a message, kept in both spellings: \x1f CLI \x1d HTTP-text \x1d field \x1f (control
# characters never left unescaped by shown(), so a user's value cannot fake one).
_NAMED = re.compile("\x1f([^\x1d\x1f]*)\x1d([^\x1d\x1f]*)\x1d([^\x1d\x1f]*)\x1f")


def named(cli: str, field: str, http: str | None = None) -> str:
    """A name for a message: ``cli`` on the command line (``--mask``, ``IMAGE``, ``--model DIR``),
    ``http`` over HTTP (default: ``field``, the request field or upload name, such as ``mask``)."""
    return f"\x1f{cli}\x1d{field if http is None else http}\x1d{field}\x1f"


def render(message: str, surface: str = "cli") -> str:
    """``message`` with each :func:`named` name spelt for ``surface`` (``"cli"`` or ``"http"``)."""
    group = 1 if surface == "cli" else 2
    return _NAMED.sub(lambda m: m.group(group), message)


def first_field(message: str) -> str | None:
    """The field of the first :func:`named` name in ``message`` (``None``: it names none)."""
    m = _NAMED.search(message)
    return m.group(3) if m else None


def engine_named(engine: str) -> str:
    """Choosing engine ``engine``, as a message says it: ``--engine NAME`` / ``engine NAME``."""
    return named(f"--engine {engine}", "engine", f"engine {engine}")


#: Giving a model, as a message says it: ``pass --model DIR`` on the CLI, ``choose a model`` over HTTP.
PASS_MODEL = named("pass --model DIR", "model", "choose a model")


class DiffComposeError(Exception):
    """Base class: an error whose message is meant for the user, on one line.

    ``field``: the HTTP request field or upload that caused it (default: the first
    :func:`named` name in the message; ``None`` when none did).
    """

    exit_code = 2

    def __init__(self, message: Any = "", *args: Any, field: str | None = None) -> None:
        self.template = str(message)
        super().__init__(render(self.template), *args)
        self.field = field if field is not None else first_field(self.template)


def http_message(exc: BaseException) -> str:
    """The error's line as the HTTP API says it (request field names, not CLI flags)."""
    if isinstance(exc, DiffComposeError):
        return render(getattr(exc, "template", str(exc)), "http")
    return str(exc)


def http_field(exc: BaseException) -> str | None:
    """The request field or upload that caused ``exc`` (``None``: none in particular)."""
    return getattr(exc, "field", None)


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


# --------------------------------------------------------------------------- quoting a user's value

#: The longest text a message quotes from a user's value (a longer one is cut in the middle).
SHOWN_CHARS = 80


def short_number(n: int) -> str:
    """An integer for a message: as is up to 15 digits, else in short form (``1e308``, ``-1.23e21``).

    Never the digits themselves: a 309-digit number would fill a terminal, and one over
    Python's 4300-digit limit cannot even be turned into text.
    """
    if abs(n) < 10**15:
        return str(n)
    size = abs(n)
    exp = int(math.log10(size))
    mantissa = size / 10**exp  # exact big-integer division, rounded once
    if mantissa >= 10:
        exp, mantissa = exp + 1, mantissa / 10
    elif mantissa < 1:
        exp, mantissa = exp - 1, mantissa * 10
    return f"{'-' if n < 0 else ''}{mantissa:.3g}e{exp}"


class _Shown(reprlib.Repr):
    """``repr`` within bounds: text cut, containers cut in depth and breadth, integers in short form.

    A YAML alias bomb or a megabyte prompt must not become a message of that size (or take
    minutes to print): every message that quotes a user's value goes through :func:`shown`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = SHOWN_CHARS
        self.maxlevel = 2
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = self.maxdeque = 4

    def repr_int(self, x: int, level: int) -> str:
        return short_number(x)

    def repr_instance(self, x: Any, level: int) -> str:
        if isinstance(x, (bytes, bytearray)):  # repr would first copy the whole of it
            return reprlib.Repr.repr_instance(self, x[:SHOWN_CHARS + 1], level)
        return reprlib.Repr.repr_instance(self, x, level)


_SHOWN = _Shown()


def shown(value: Any) -> str:
    """``value`` as a message quotes it: its ``repr``, bounded (see :class:`_Shown`), at most 200 characters."""
    return cut(_SHOWN.repr(value))


def cut(text: Any, limit: int = 200) -> str:
    """``text`` (a path, a line) as a message quotes it: as is up to ``limit`` characters, else its
    start and end with ``...`` between."""
    text = str(text)
    if len(text) <= limit:
        return text
    tail = (limit - 3) // 3
    return f"{text[:limit - 3 - tail]}...{text[-tail:]}"
