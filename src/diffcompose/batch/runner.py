"""Run a manifest: every item through the same validation and engines as the CLI, resumably.

One process (or each process under ``accelerate launch``) loads an engine once, through the
process's :class:`~diffcompose.EngineManager`, and keeps it for every item that names it.
An item that fails records its one-line error and the run goes on; only a cancel (or
Ctrl-C) stops it, and every item finished before stays recorded. A rerun into the same
folder skips the items recorded ``ok`` whose manifest line did not change and whose
outputs are still there; failed items run again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diffcompose.batch.manifest import (
    BATCH_INFO, LOCK, OUTPUTS, RESULTS, VALUE_INPUTS, Item, read_jsonl, read_manifest, read_results,
)
from diffcompose.batch.shard import Shard, current
from diffcompose.errors import Cancelled, DiffComposeError, InputError, OutputExistsError
from diffcompose.inputs.images import DEFAULT_MAX_PIXELS
from diffcompose.methods.options import check_seed
from diffcompose.progress import CancelToken, Progress, ProgressCallback

log = logging.getLogger(__name__)

#: Keywords of :func:`diffcompose.api.run` that a line's ``options`` may not set (the line or the batch sets them).
RESERVED = ("engine", "device", "dtype", "model", "seed", "on_progress", "cancel", "masks", "max_pixels")


@dataclass
class BatchSummary:
    """What a run did: ``ok`` and ``failed`` count the items run now (all processes), ``skipped`` those
    finished before; ``total`` is the manifest's item count."""

    out_dir: Path
    total: int
    ok: int
    failed: int
    skipped: int
    seconds: float
    rank: int = 0
    world: int = 1

    @property
    def results(self) -> Path:
        return self.out_dir / RESULTS

    def line(self) -> str:
        return f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped; results in {self.results}"


def lock_folder(folder: Path) -> int:
    """An open descriptor holding an exclusive lock on ``folder``'s lock file (close it to release).

    A second run into a folder a run is writing is refused instead of interleaving its lines
    and outputs with the first's (``flock``: released by the system if the process dies).
    """
    import fcntl

    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:  # unwritable, or a link put in its place
        raise InputError(f"cannot open {folder / LOCK}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InputError(f"another batch is running into {folder}; wait for it (or cancel it), then rerun") from None
    return fd


def rank_file(out_dir: Path, rank: int) -> Path:
    return out_dir / f"results.rank{rank}.jsonl"


def _write_info(folder: Path, manifest: Path) -> None:
    from diffcompose import __version__
    from diffcompose.outdir import BATCH, mark

    mark(folder, "batch", BATCH, files=[BATCH_INFO, RESULTS, LOCK])  # outputs are recorded as written
    info = {"manifest": str(manifest), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "version": __version__}
    _write_atomic(folder / BATCH_INFO, json.dumps(info, indent=1) + "\n")
    (folder / OUTPUTS).mkdir(exist_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    from diffcompose.outdir import current_umask

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # what a plain new file gets (mkstemp makes it 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def batch_of(folder: Path) -> str | None:
    """The manifest a batch folder was made for (``None``: not a batch folder)."""
    try:
        info = json.loads((folder / BATCH_INFO).read_text(encoding="utf-8"))
        return str(info["manifest"]) if isinstance(info, dict) else None
    except (OSError, ValueError, KeyError):
        return None


def prepare_folder(out_dir: Path, manifest: Path, items: list[Item], force: bool) -> Path:
    """The output folder, ready: new, resumed (a batch folder of the same manifest), or replaced (``force``).

    Refused: anything :func:`diffcompose.outdir.check_out_dir` refuses (a folder we did not
    write, one holding an input, the working directory); without ``force``, a folder we
    wrote for something else (another manifest, a model).
    """
    from diffcompose.outdir import BATCH, building, check_out_dir

    inputs = [manifest] + [Path(v) for it in items for k, v in it.inputs.items()
                           if k not in VALUE_INPUTS and isinstance(v, str)]
    inputs += [Path(it.ground_truth) for it in items if it.ground_truth]
    target = check_out_dir(out_dir, inputs, force=force, reuse=True, kind=BATCH)
    if target.is_dir() and any(target.iterdir()):  # marked as ours, or check_out_dir refused it
        if not force:
            made_for = batch_of(target)
            if made_for != str(manifest):
                what = f"a batch of {made_for}" if made_for else "not a batch output"
                raise OutputExistsError(f"output directory {out_dir} is {what}; pass --force to replace it, "
                                        "or name a new folder")
            _check_resumable(target)
            (target / OUTPUTS).mkdir(exist_ok=True)
            return target
        with building(target) as new:  # _write_info marks it
            _write_info(new, manifest)
        return target
    target.mkdir(exist_ok=True)
    _write_info(target, manifest)
    return target


def _check_resumable(folder: Path) -> None:
    """Refuse, in one line before any item runs, a batch folder whose results or outputs cannot be written."""
    outputs, results = folder / OUTPUTS, folder / RESULTS
    if outputs.exists() and not outputs.is_dir():
        raise InputError(f"{outputs} is not a folder; remove it, or name a new output folder")
    if results.exists() and not results.is_file():
        raise InputError(f"{results} is not a file; remove it, or name a new output folder")
    for path in (outputs, results):
        if path.exists() and not os.access(path, os.W_OK):
            raise InputError(f"cannot write {path} (permission denied)")


def _finished_at(row: dict) -> float:
    """A row's ``finished`` time (0 for a hand-edited line without a usable one: any real row is newer)."""
    try:
        return float(row.get("finished") or 0)
    except (TypeError, ValueError):
        return 0.0


def merge_results(out_dir: Path, items: list[Item], *, keep_rank_files: bool) -> None:
    """Fold ``results.jsonl`` and every ``results.rank<k>.jsonl`` into one ``results.jsonl``: the newest line
    per id, in manifest order (ids no longer in the manifest after them), written atomically."""
    shards = sorted(out_dir.glob("results.rank*.jsonl"))
    rows = read_jsonl(out_dir / RESULTS) + [r for s in shards for r in read_jsonl(s)]
    newest: dict[str, dict] = {}
    for row in rows:
        key = str(row["id"])
        old = newest.get(key)
        if old is None or _finished_at(row) >= _finished_at(old):
            newest[key] = row
    order = [it.id for it in items if it.id in newest]
    order += [k for k in newest if k not in set(order)]
    if newest or (out_dir / RESULTS).exists():
        _write_atomic(out_dir / RESULTS, "".join(json.dumps(newest[k]) + "\n" for k in order))
    if not keep_rank_files:
        for s in shards:
            s.unlink()


def _append(path: Path, row: dict) -> None:
    """One line, one ``write`` on an ``O_APPEND`` descriptor: lines of a killed run are never torn into others."""
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _finished(row: dict | None, item: Item, out_dir: Path) -> bool:
    return (row is not None and row.get("status") == "ok" and row.get("fingerprint") == item.fingerprint()
            and all((out_dir / o).is_file() for o in row.get("outputs") or []))


def run_item(item: Item, out_dir: Path, *, device: str | None, dtype: str | None, max_pixels: int | None,
             cancel: CancelToken | None, rank: int = 0, previous: dict | None = None) -> dict:
    """Run one item and write its outputs; the results line (errors caught; a cancel propagates)."""
    from diffcompose.inputs.images import save_image
    from diffcompose.outdir import record

    start = time.perf_counter()
    engine = item.engine
    outputs: list[str] = []
    error = None
    for old in (previous or {}).get("outputs") or []:  # a rerun's outputs replace the failed or stale ones
        stale = out_dir / old
        if stale.parent == out_dir / OUTPUTS and stale.is_file():
            stale.unlink()
    try:
        if item.error:
            raise InputError(item.error)
        taken = sorted(set(item.options) & set(RESERVED))
        if taken:
            raise InputError(f"options may not set {', '.join(taken)} (use the line's own engine/model/seed keys, "
                             "or the batch's --device, --dtype, --max-pixels)")
        from diffcompose.api import run
        from diffcompose.methods.registry import resolve_engine

        from diffcompose.methods.tasks import get_task

        given = get_task(item.task).given_opt_in(item.inputs) if item.task else ()
        engine, _ = resolve_engine(item.engine, item.task or "", given)
        result = run(item.task or "", dict(item.inputs), engine=engine, device=device, dtype=dtype,
                     model=item.model, seed=item.seed, cancel=cancel, max_pixels=max_pixels, **item.options)
        images = result if isinstance(result, list) else [result]
        names = [f"{item.id}.png"] if len(images) == 1 else [f"{item.id}_{k}.png" for k in range(len(images))]
        for image, name in zip(images, names):
            save_image(image, out_dir / OUTPUTS / name, force=True)
            record(out_dir, f"{OUTPUTS}/{name}")  # the tool's file: --force may replace it, never a user's
            outputs.append(f"{OUTPUTS}/{name}")
    except Cancelled:
        raise
    except DiffComposeError as exc:
        error = " ".join(str(exc).split())
    except Exception as exc:  # a bug on one item must not cost the others
        log.debug("item %s", item.id, exc_info=True)
        error = " ".join(f"internal error: {type(exc).__name__}: {exc}".split())
    if error is not None:
        log.warning("item %s failed: %s", item.id, error)
    return {"id": item.id, "task": item.task, "engine": engine, "status": "ok" if error is None else "error",
            "outputs": outputs if error is None else [], "seed": item.seed,
            "seconds": round(time.perf_counter() - start, 4), "error": error, "inputs": item.inputs,
            "ground_truth": item.ground_truth, "options": item.options, "rank": rank, "model": item.model,
            "fingerprint": item.fingerprint(), "finished": time.time()}


def _agree(shard: Shard, work: Any) -> Any:
    """Run ``work()`` on rank 0 only; every rank gets its result, or raises its error (no rank is left waiting)."""
    outcome: tuple[Any, BaseException | None] = (None, None)
    if shard.main:
        try:
            outcome = (work(), None)
        except Exception as exc:
            if not shard.distributed:
                raise
            outcome = (None, exc if isinstance(exc, DiffComposeError) else InputError(f"{type(exc).__name__}: {exc}"))
    value, error = shard.broadcast(outcome)
    if error is not None:
        raise error
    return value


def check_run(*, seed: Any, device: Any, dtype: Any, max_pixels: Any) -> int:
    """The batch-wide settings checked before the manifest is read or a folder made (else every item
    would fail, or run, with a setting the CLI refuses); returns the seed as an ``int``."""
    from diffcompose.methods.tasks import check_max_pixels
    from diffcompose.models.device import check_device

    seed = check_seed(seed)
    if dtype is not None and dtype not in ("float32", "float16", "bfloat16"):
        raise InputError(f"--dtype must be float32, float16 or bfloat16, got {dtype!r}")
    check_max_pixels(max_pixels)
    check_device(device)
    return seed


def run_batch(manifest: str | Path, out_dir: str | Path, *, seed: int = 0, device: str | None = None,
              dtype: str | None = None, force: bool = False, on_progress: ProgressCallback | None = None,
              cancel: CancelToken | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> BatchSummary:
    """Run every item of ``manifest`` not yet finished in ``out_dir``; see :mod:`diffcompose.batch.manifest`.

    ``seed``: the seed of lines without one. ``device``/``dtype``: for diffusion engines
    (under ``accelerate launch`` each process takes its own device). ``force``: replace an
    existing output folder this tool wrote and start over. ``on_progress`` gets one
    :class:`~diffcompose.ProgressEvent` (task ``"batch"``) per item run by this process;
    ``cancel`` stops the run within one item's step (:class:`~diffcompose.Cancelled`),
    keeping what finished.
    """
    seed = check_run(seed=seed, device=device, dtype=dtype, max_pixels=max_pixels)
    items = read_manifest(manifest, seed=seed)
    manifest = Path(manifest).expanduser().resolve()
    start = time.perf_counter()
    shard = current()

    held: list[int] = []

    def setup() -> Path:
        target = Path(out_dir).expanduser().resolve()
        fd = lock_folder(target) if (target / LOCK).is_file() else None  # not while another run writes there
        try:
            folder = prepare_folder(Path(out_dir).expanduser(), manifest, items, force)
            if fd is None or force:  # a new or replaced folder: hold its own lock
                new = lock_folder(folder)
                if fd is not None:
                    os.close(fd)
                fd = new
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        held.append(fd)
        merge_results(folder, items, keep_rank_files=False)  # what an interrupted run left in rank files
        return folder

    try:
        target: Path = _agree(shard, setup)
        done = {str(r["id"]): r for r in read_results(target)}
        pending = [it for it in items if not _finished(done.get(it.id), it, target)]
        skipped = len(items) - len(pending)
        mine = shard.take(pending)
        log.debug("rank %d of %d: %d of %d items", shard.rank, shard.world, len(mine), len(pending))
        results = rank_file(target, shard.rank) if shard.distributed else target / RESULTS
        if shard.distributed:
            from diffcompose.outdir import record

            record(target, results.name)
        dev = shard.device(device)
        progress = Progress("batch", len(mine), on_progress, cancel)
        counts = {"ok": 0, "error": 0}
        try:
            for item in mine:
                progress.check()
                row = run_item(item, target, device=dev, dtype=dtype, max_pixels=max_pixels, cancel=cancel,
                               rank=shard.rank, previous=done.get(item.id))
                _append(results, row)
                counts[row["status"]] += 1
                progress.step()
        finally:
            if not shard.distributed:
                merge_results(target, items, keep_rank_files=False)
        if shard.distributed:
            shard.barrier()
            if shard.main:
                merge_results(target, items, keep_rank_files=True)
            shard.barrier()
            final = {str(r["id"]): r for r in read_results(target)}
            counts = {"ok": 0, "error": 0}
            for it in pending:
                counts["ok" if final.get(it.id, {}).get("status") == "ok" else "error"] += 1
    finally:
        for fd in held:
            os.close(fd)
    return BatchSummary(target, len(items), counts["ok"], counts["error"], skipped,
                        round(time.perf_counter() - start, 3), shard.rank, shard.world)
