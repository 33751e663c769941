"""The batch manifest and the batch output folder: the contract between ``batch`` and ``evaluate``.

Manifest: JSON lines, one job per line; paths are relative to the manifest's folder
(absolute paths are kept)::

    # blank lines and lines starting with '#' are skipped
    {"id": "case-001", "task": "remove", "engine": "classical",
     "inputs": {"image": "photos/a.jpg", "mask": "masks/a.png"},
     "options": {"method": "patchmatch"}, "seed": 0, "ground_truth": "truth/a.png", "model": null}

- ``task`` (required): one of the API's tasks (``remove``, ``paste``, ``harmonize``,
  ``segment``, ``compose``, ``paint``, ``inpaint``, ``insert``).
- ``inputs``: the task's keyword names as in the Python API and its spec
  (:data:`~diffcompose.methods.tasks.TASK_SPECS`: ``image``, ``mask``, ``reference``,
  ``obj``, ``box`` as ``[x0, y0, x1, y1]`` or ``"x0,y0,x1,y1"``, ``prompt``...). Image and
  mask inputs are paths; the others (:data:`VALUE_INPUTS`: ``box``, ``points``, ``prompt``,
  ``negative_prompt``, ``condition_type``) are taken as they are.
- ``id`` (optional): letters, digits, ``.``, ``_``, ``-`` (at most 100, not starting with
  ``.``); default: the 1-based line number in the file, as ``"000001"`` (blank and comment
  lines count). Ids name the outputs, so an unusable id, an id repeated (ignoring case), or
  an id ``<other id>_<k>`` (the name of that item's k-th image) stops the whole batch before
  any work (exit 2).
- ``engine`` (default ``"auto"``), ``options`` (the engine's options, checked by its own
  dataclass as on the CLI), ``seed`` (default: the batch's ``--seed``), ``ground_truth``
  (a path: the image the output should be, for pixel metrics), ``model`` (default ``null``).

A line that is not valid JSON (``NaN`` and ``Infinity`` are not), nests deeper than the
reader allows, holds a lone surrogate in any string, names an unknown task or input, misses a
required input, or has a field of the wrong type (a boolean or text where a number goes) is
a *bad item*: its error is recorded in the results and the run goes on. Lines are split and parsed by the JSON-lines
reader every trainer uses too (:mod:`diffcompose.training.manifest`: a byte-order mark is
dropped; only ``\n``, ``\r\n`` and ``\r`` end a line).

Output folder ``OUT_DIR``:

- ``results.jsonl``: one line per finished item (appended line by line while the run goes;
  compacted at the end to one line per id in manifest order). Each line::

      {"id", "task", "engine" (the engine that actually ran), "status": "ok" | "error",
       "outputs": ["outputs/<id>.png", ...] (relative to OUT_DIR), "seed", "seconds",
       "error": one line or null, "inputs": {name: absolute path or value},
       "ground_truth": absolute path or null, "options": {...}, "rank": the process that ran it,
       "model", "fingerprint" (hash of the job: a changed line is rerun), "finished" (unix time)}

  Readers take the last line per id (:func:`read_results`); a line of the wrong shape is read
  as a failed row (:func:`result_row`), never a crash.
- ``outputs/<id>.png``, or ``outputs/<id>_<k>.png`` for several images; ``segment``
  writes its mask.
- ``results.rank<k>.jsonl``: under ``accelerate launch``, each process's own results of
  the last run (rank 0 merges them into ``results.jsonl``).
- ``batch.json``: ``{"manifest": absolute path, "created": ISO time, "version": ...}``;
  the marker file of :mod:`diffcompose.outdir`; ``.batch.lock``, locked while a run writes
  there (a second run into the folder meanwhile is refused).

No torch here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffcompose.errors import InputError
from diffcompose.training.manifest import read_json_lines


class _ValueInputs(Set):
    """Input names whose values are values, not paths: the box, points, text and choice inputs of every
    task. Read from the task specs on each use, so a task registered later counts."""

    def _names(self) -> frozenset[str]:
        from diffcompose.methods.tasks import TASK_SPECS

        return frozenset(p.keyword for s in TASK_SPECS.values() for p in s.params if not p.is_file)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(self._names())


#: Input names whose values are values, not paths.
VALUE_INPUTS: Set = _ValueInputs()
#: Keys a manifest line may have.
KEYS = frozenset({"id", "task", "engine", "inputs", "options", "seed", "ground_truth", "model"})
RESULTS = "results.jsonl"
BATCH_INFO = "batch.json"
LOCK = ".batch.lock"
OUTPUTS = "outputs"
_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


@dataclass
class Item:
    """One manifest line: resolved, or bad (``error`` says why, in one line)."""

    id: str
    line: int
    task: str | None = None
    engine: str = "auto"
    inputs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    seed: Any = 0
    ground_truth: str | None = None
    model: str | None = None
    error: str | None = None

    def fingerprint(self) -> str:
        """A hash of everything that decides the output: a changed manifest line is run again on resume."""
        blob = json.dumps([self.task, self.engine, self.inputs, self.options, self.seed, self.ground_truth,
                           self.model, self.error], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _task_inputs(task: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(all input names, required ones)`` of a task, from its spec."""
    from diffcompose.methods.tasks import TASK_SPECS

    spec = TASK_SPECS[task]
    return spec.inputs, tuple(p.keyword for p in spec.params if p.required)


def _resolve(base: Path, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a path (text), got {value!r}")
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _fill(item: Item, job: dict, base: Path) -> None:
    """Check and resolve a parsed line into ``item`` (raises ``ValueError`` with the reason)."""
    from diffcompose.methods.tasks import FILE_KINDS, TASK_SPECS

    unknown = sorted(set(job) - KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; keys: {', '.join(sorted(KEYS))}")
    task = job.get("task")
    if task not in TASK_SPECS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASK_SPECS)}")
    item.task = task
    engine = job.get("engine", "auto")
    if not isinstance(engine, str) or not engine:
        raise ValueError(f"engine must be a name, got {engine!r}")
    item.engine = engine
    inputs = job.get("inputs", {})
    options = job.get("options", {})
    if not isinstance(inputs, dict) or not isinstance(options, dict):
        raise ValueError("inputs and options must be JSON objects")
    names, required = _task_inputs(task)
    bad = sorted(set(inputs) - set(names))
    if bad:
        raise ValueError(f"{task} takes no input {', '.join(bad)}; its inputs: {', '.join(names)}")
    missing = [n for n in required if inputs.get(n) is None]
    if missing:
        raise ValueError(f"{task} needs input(s) {', '.join(missing)}")
    spec = TASK_SPECS[task]
    item.inputs = {}
    for k, v in inputs.items():
        kind = spec.param(k).kind
        if v is not None and kind in FILE_KINDS:
            v = _resolve(base, v, f"input {k}")
        elif kind == "box" and isinstance(v, list):
            v = tuple(v)  # the API's box form (JSON has no tuples)
        item.inputs[k] = v
    item.options = dict(options)
    if "seed" in job:
        item.seed = job["seed"]
    gt = job.get("ground_truth")
    item.ground_truth = None if gt is None else _resolve(base, gt, "ground_truth")
    model = job.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise ValueError(f"model must be a hub id or a path, got {model!r}")
    if model is not None and not Path(model).is_absolute() and (base / model).exists():
        model = str((base / model).resolve())  # a local model folder beside the manifest
    item.model = model


def read_manifest(path: str | Path, *, seed: int = 0) -> list[Item]:
    """The items of a manifest, in file order (bad lines included, with their error).

    Raises :class:`InputError` (nothing run) when the file cannot be read, or when an id is
    unusable as a file name, repeated (ignoring case), or ``<other id>_<k>``, the name of
    another item's k-th image (outputs are named by id).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    try:
        lines = read_json_lines(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    base = path.resolve().parent
    items: list[Item] = []
    seen: dict[str, int] = {}
    for line in lines:
        n, job = line.number, line.value
        item = Item(id=f"{n:06d}", line=n, seed=seed)
        if line.error is not None:
            item.error = f"line {n}: {line.error}"
        elif not isinstance(job, dict):
            item.error = f"line {n}: a job must be a JSON object"
        else:
            if job.get("id") is not None:
                ident = job["id"]
                if isinstance(ident, bool) or not isinstance(ident, (str, int)) or not _ID.fullmatch(str(ident)):
                    raise InputError(f"manifest {path} line {n}: id {ident!r} cannot name a file (letters, digits, "
                                     "'.', '_', '-'; at most 100; not starting with '.')")
                item.id = str(ident)
            try:
                _fill(item, job, base)
            except ValueError as exc:
                item.error = f"line {n}: {exc}"
        key = item.id.casefold()  # one file on a case-insensitive file system (macOS, Windows)
        if key in seen:
            raise InputError(f"manifest {path}: id {item.id!r} on line {n} is already used on line {seen[key]}")
        seen[key] = n
        items.append(item)
    for item in items:  # an item with several images writes <id>_<k>.png: no other id may be one of those
        stem, _, k = item.id.rpartition("_")
        if k.isdigit() and stem.casefold() in seen:
            raise InputError(f"manifest {path}: id {item.id!r} on line {item.line} would share its output with "
                             f"image {k} of id {stem!r} on line {seen[stem.casefold()]} ({stem}_{k}.png); rename one")
    return items


#: The type each field of a results row must have when present (``None`` allowed for all but ``id``).
_ROW_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,), "engine": (str,), "status": (str,), "error": (str,), "seconds": (int, float),
    "inputs": (dict,), "options": (dict,), "ground_truth": (str,), "model": (str,), "fingerprint": (str,),
    "rank": (int,), "finished": (int, float),
}


def result_row(value: Any) -> dict | None:
    """A results line as readers may use it: ``None`` when it has no usable ``id`` (a torn or foreign
    line, skipped); a row whose other fields have the wrong shape (hand-edited, another tool's)
    comes back as a failed row naming the field, so a resume runs that item again and
    ``evaluate`` reports it instead of crashing on it."""
    if not isinstance(value, dict):
        return None
    ident = value.get("id")
    if isinstance(ident, bool) or not isinstance(ident, (str, int)) or not 0 < len(str(ident)) <= 1000:
        return None
    bad = [k for k, types in _ROW_TYPES.items()
           if value.get(k) is not None and (isinstance(value[k], bool) or not isinstance(value[k], types))]
    outputs = value.get("outputs")
    if outputs is not None and not (isinstance(outputs, list) and all(isinstance(o, str) and o for o in outputs)):
        bad.append("outputs")
    if not bad:
        return {**value, "id": str(ident)}
    return {"id": str(ident), "status": "error", "outputs": [],
            "error": f"results line of the wrong shape ({', '.join(bad)})", "finished": 0}


def read_jsonl(path: Path) -> list[dict]:
    """The result rows of a results file in file order (:func:`result_row`: a torn, foreign or
    undecodable line is skipped, one of the wrong shape is a failed row)."""
    if not path.is_file():
        return []
    try:
        lines = read_json_lines(path, errors="replace")
    except OSError as exc:  # unreadable (permissions): one line, not a traceback
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = (result_row(line.value) for line in lines)
    return [row for row in rows if row is not None]


def read_results_file(path: Path) -> list[dict]:
    """The rows of results file ``path``: one dict per id (the last line per id wins), in file order."""
    rows: dict[str, dict] = {}
    for row in read_jsonl(path):
        rows.pop(str(row["id"]), None)
        rows[str(row["id"])] = row
    return list(rows.values())


def read_results(out_dir: str | Path) -> list[dict]:
    """The results of a batch folder (:func:`read_results_file` of its ``results.jsonl``)."""
    return read_results_file(Path(out_dir) / RESULTS)
