"""The one reader of JSON-lines files, and of training manifests, for every trainer and for ``batch``.

:func:`read_json_lines` says only how a file splits into JSON values; what a value means (a
training record, a batch job, a result row) and what a bad line costs (a one-line error,
a bad batch item, a skipped torn line) stays with each caller. So the rules below hold for
every JSON-lines file diffcompose reads:

* UTF-8 text; a leading byte-order mark is dropped (editors on Windows write one).
* Lines end at ``\\n``, ``\\r\\n`` or ``\\r``, the only line breaks JSON itself allows
  between values; a JSON string may hold U+2028 or a form feed without cutting its line.
* Blank lines and lines starting with ``#`` (after spaces) are skipped, but counted: line
  numbers are the file's own, so errors point at the right line and batch ids that
  default to the line number stay put when a comment is added above them.
* Standard JSON only: ``NaN``, ``Infinity`` and numbers too large for a float (``1e999``)
  are errors, not values a later range check could miss.
* A line is a bad line, not a crash, when its value nests deeper than :data:`MAX_DEPTH`
  (Python's parser would hit its recursion limit, and so would every later ``json.dumps``)
  or any of its strings, keys included, holds a lone surrogate (``"\\udcff"`` is valid JSON,
  but such text can be neither written to a UTF-8 file nor used in a file name).

:func:`read_training_manifest` picks a trainer's COCO (``.json``) or JSON-lines reader for a
manifest and turns any malformed entry into one line. No torch here: ``batch`` imports it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from diffcompose.errors import InputError

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: How deep a JSON value may nest (a manifest line needs about four levels).
MAX_DEPTH = 64


@dataclass(frozen=True)
class JsonLine:
    """One non-blank, non-comment line of a JSON-lines file."""

    number: int  # 1-based, blank and comment lines counted
    value: Any  # the parsed JSON value; None when ``error`` is set
    error: str | None  # why the line is not JSON, one line; None when it is


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def parse_json_line(line: str) -> Any:
    """The JSON value of ``line``; :class:`ValueError` when it is not standard JSON (``NaN``, ``1e999`` included),
    nests deeper than :data:`MAX_DEPTH`, or holds a lone surrogate (see the module docstring)."""
    try:
        value = json.loads(line, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    _check_value(value)
    return value


def _check_value(value: Any) -> None:
    """Refuse a parsed value nested deeper than :data:`MAX_DEPTH` or holding a lone surrogate (walked
    without recursion, so the check itself cannot overflow)."""
    pending = [(value, 1)]
    while pending:
        v, depth = pending.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff): not encodable text")
        elif isinstance(v, (list, dict)):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            children = [*v.keys(), *v.values()] if isinstance(v, dict) else v
            pending.extend((c, depth + 1) for c in children)


def read_json_lines(path: Path, *, errors: str = "strict") -> list[JsonLine]:
    """The lines of JSON-lines file ``path``, each parsed or with its error (see the module docstring).

    ``errors`` is the text decoding's (``"replace"`` for files that may be torn mid-character,
    such as results appended by a killed run). Reading errors (:class:`OSError`,
    :class:`UnicodeDecodeError`) are the caller's: each names its own file kind.
    """
    text = path.read_text(encoding="utf-8", errors=errors).removeprefix("\ufeff")
    lines = []
    for number, line in enumerate(_LINE_BREAK.split(text), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            lines.append(JsonLine(number, parse_json_line(line), None))
        except ValueError as exc:  # json.JSONDecodeError is one
            lines.append(JsonLine(number, None, f"not valid JSON ({exc})"))
    return lines


#: A trainer's reader of one manifest kind: ``(path, image_root, min_area, max_area) -> records``.
Reader = Callable[[Path, Path, float, float], list]


def read_training_manifest(manifest: Path, image_root: Path | None, readers: tuple[Reader, Reader],
                           min_area: float, max_area: float) -> list:
    """Run the COCO (``.json``) or JSON-lines reader of ``readers`` on ``manifest``: any malformed entry is one line.

    Every trainer's data reader goes through here; a reader may raise its own
    :class:`InputError` with the entry's place, and anything else a malformed file raises
    (a missing key, a wrong type, text that is not UTF-8) becomes one line naming the file.
    """
    if not manifest.is_file():
        raise InputError(f"training manifest not found: {manifest}")
    is_coco = manifest.suffix == ".json"
    read = readers[0] if is_coco else readers[1]
    try:
        return read(manifest, image_root or manifest.parent, min_area, max_area)
    except InputError:
        raise
    except UnicodeDecodeError:
        raise InputError(f"{manifest} is not UTF-8 text") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        kind = "COCO instances .json" if is_coco else ".jsonl"
        raise InputError(f"{manifest}: not a valid {kind} manifest ({type(exc).__name__}: {exc})") from None


def json_objects(path: Path) -> Iterator[tuple[str, dict]]:
    """``(place, object)`` of each line of a trainer's JSON-lines manifest, where ``place`` is
    ``path:line`` for the reader's own messages; a line that is not JSON, or not a JSON object,
    is one :class:`InputError` naming its place and why."""
    for line in read_json_lines(path):
        where = f"{path}:{line.number}"
        if line.error is not None:
            raise InputError(f"{where}: {line.error}")
        if not isinstance(line.value, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(line.value).__name__}")
        yield where, line.value
