"""The job manager: a bounded queue, one worker per engine, progress, cancel, results with expiry.

A validated :class:`Submission` becomes a :class:`JobRecord` in a FIFO of at most
``queue_size`` waiting jobs (beyond it :class:`QueueFull`, HTTP 429 with a retry hint).
``workers`` threads take the oldest waiting job whose engine is idle, so one engine runs
one job at a time (its modules are not shared between requests; the
:class:`~diffcompose.methods.manager.EngineManager` also holds the engine's own lock) while
different engines run side by side. Engines load on first use through the manager, within
its memory budget.

The worker is the only owner of a running job: a client that disconnects (an SSE stream,
a sync request) loses nothing; the result is written as PNG into a private folder (mode
0700, made with :func:`tempfile.mkdtemp`) and kept until the job expires (``result_ttl``
seconds after it ended), or until ``max_finished`` later jobs have ended (at most that many
finished jobs are kept, the oldest ended going first; a synchronous run's job, discarded as
soon as it is answered, is not counted), which bounds the folder's size whatever the request rate. Progress
events come from the run's :class:`~diffcompose.progress.RunContext`; previews are rendered at most every
``preview_interval`` seconds (a VAE decode is not free). Cancel sets the run's
:class:`~diffcompose.progress.CancelToken`: the engine raises ``Cancelled`` within one step.

Memory admission: a small upload can decode to a large array (a flat 40 MP PNG is a few
hundred kB), and every queued job holds its decoded inputs until it ends. So each job is
costed before it is queued (:func:`job_memory`: the arrays it holds, plus an estimate of
the engine's working copies) and the jobs admitted together must fit ``memory_budget``
bytes; a job that does not fit now gets :class:`OverBudget` (HTTP 429 with a retry hint),
one that could never fit gets :class:`TooBig` (HTTP 503).

A job's ``status`` says honestly where it is: ``queued`` (with its 1-based ``position`` among
the waiting jobs, renumbered as jobs ahead leave), ``loading`` (its engine's model is being
loaded; ``model`` names it), ``running`` (from the engine's start event on: ``step``/``total``,
``total`` 0 while unknown or for a one-pass engine), ``finishing`` (after the last step:
decoding, paste-back, writing the PNG), then ``done``, ``error`` or ``cancelled``. Every
change of status (or of a queued job's position) is one ``state`` event (:meth:`JobRecord.state`),
so a progress stream shows each of them, none skipped.

Clients that wait for a job (the event stream, the synchronous endpoint) do not poll: they
register an :class:`asyncio.Event` with the job (:meth:`JobRecord.watch`) that every event
sets from the worker thread, so a thousand idle streams cost nothing between events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import functools
import io
import logging
import math
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from diffcompose import __version__
from diffcompose.errors import Cancelled, DiffComposeError, WeightsMissingError, http_field, http_message
from diffcompose.inputs import to_pil
from diffcompose.methods.manager import EngineManager
from diffcompose.methods.registry import NO_DEFAULT_MODEL, get_engine_info
from diffcompose.methods.tasks import Job
from diffcompose.models.hub import TINY, in_hub_cache
from diffcompose.progress import CancelToken, ProgressEvent, RunContext

log = logging.getLogger(__name__)

FINISHED = ("done", "error", "cancelled")
#: Every status a job goes through, in order (a job may skip some: ``loading`` when its engine is
#: loaded already; a cancelled queued job goes from ``queued`` to ``cancelled``).
STATUSES = ("queued", "loading", "running", "finishing", *FINISHED)


class QueueFull(Exception):
    """No room in the queue; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, retry_after: int, size: int) -> None:
        super().__init__(f"the job queue is full ({size} waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class OverBudget(QueueFull):
    """The job fits the memory budget, but not next to the jobs already admitted: retry later (429)."""

    def __init__(self, retry_after: int, need: int, used: int, budget: int) -> None:
        Exception.__init__(self, f"the server's memory budget is in use: this job needs {_gb(need)}, "
                                 f"{_gb(used)} of {_gb(budget)} are held by queued and running jobs "
                                 f"(--memory-budget); retry in {retry_after} s")
        self.retry_after = retry_after


class TooBig(Exception):
    """The job alone needs more than the whole memory budget: it can never run here (503)."""

    def __init__(self, need: int, budget: int) -> None:
        super().__init__(f"this job needs about {_gb(need)} of memory, more than the server's budget of "
                         f"{_gb(budget)} (--memory-budget); send smaller images or raise the budget")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.1f} MB"


#: Bytes per input pixel the engine is assumed to hold while it runs, on top of the job's own
#: arrays: two float32 RGB working copies (what the classical engines and the crop/resize/paste-back
#: steps of the others make at full size). An estimate, deliberately on the high side.
WORK_BYTES_PER_PIXEL = 2 * 3 * 4


def job_memory(job: Job) -> int:
    """Bytes a queued/running ``job`` is charged: the decoded arrays it holds plus the working estimate."""
    held = [job.image, job.paste_mask, *job.arrays.values(), *job.readings.values()]
    total = sum(a.nbytes for a in held if isinstance(a, np.ndarray))
    height, width = job.image.shape[:2]
    return total + height * width * WORK_BYTES_PER_PIXEL


class Unavailable(Exception):
    """The job manager is stopped (the server is shutting down): HTTP 503."""


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return f"no job {self.args[0]!r} (unknown, or expired and removed)"


@dataclass
class Submission:
    """A request validated up to the run: inputs, the resolved engine, its options."""

    task: str
    engine: str
    job: Job
    options: Any
    seed: int = 0
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    paste_back: bool = True
    margin: int | None = None


@dataclass
class JobRecord:
    id: str
    sub: Submission | None
    created: float
    expires: float
    status: str = "queued"
    step: int = 0
    total: int = 0
    error: str | None = None
    error_field: str | None = None  # the request field or upload that caused the error, if one did
    position: int | None = None  # 1-based place among the waiting jobs while queued
    model: str | None = None  # what ``loading`` says it loads
    error_type: type[Exception] | None = None  # what ended the job in error (the sync endpoint's status)
    results: list[Path] = field(default_factory=list)
    cancel: CancelToken = field(default_factory=CancelToken)
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1024))
    seq: int = 0
    last_progress: dict | None = None
    preview_png: bytes | None = None
    preview_step: int = 0
    preview_time: float = -math.inf
    started: float | None = None
    ended: float | None = None
    task: str = ""
    engine: str = ""
    seed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    held: bool = False  # a synchronous request is waiting to read it: never swept, it discards the job itself
    memory: int = 0  # bytes charged against the memory budget until the job ends
    watchers: set = field(default_factory=set)  # (loop, asyncio.Event) of clients waiting for events

    def emit(self, name: str, data: dict) -> None:
        with self.lock:
            self.seq += 1
            self.events.append((self.seq, name, data))
            watchers = list(self.watchers)
        for loop, event in watchers:  # emitted from worker threads: wake each waiter on its own loop
            with contextlib.suppress(RuntimeError):  # that loop is closed: its client is gone
                loop.call_soon_threadsafe(event.set)

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[asyncio.Event]:
        """An event set whenever this job emits (clear it before reading ``events_after``, then wait)."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self.lock:
            self.watchers.add(entry)
        try:
            yield event
        finally:
            with self.lock:
                self.watchers.discard(entry)

    def events_after(self, seq: int) -> list[tuple[int, str, dict]]:
        with self.lock:
            return [e for e in self.events if e[0] > seq]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "engine": self.engine, "seed": self.seed,
                "status": self.status, "position": self.position, "model": self.model, "step": self.step,
                "total": self.total, "error": self.error, "field": self.error_field, "results": len(self.results),
                "created": self.created, "expires": self.expires}

    def state(self) -> dict[str, Any]:
        """The ``state`` event's data: the status and what belongs to it (a queued job's position, the
        model being loaded, the step count of a running or finishing job)."""
        data: dict[str, Any] = {"status": self.status}
        if self.status == "queued":
            data["position"] = self.position
        elif self.status == "loading":
            data["model"] = self.model
        elif self.status in ("running", "finishing"):
            data.update(step=self.step, total=self.total)
        return data

    def set_status(self, status: str) -> None:
        """Move to ``status`` and tell the clients (one ``state`` event); no event when nothing changed."""
        if status == self.status and status != "queued":
            return
        self.status = status
        if status != "queued":
            self.position = None
        self.emit("state", self.state())

    def terminal_event(self) -> tuple[str, dict] | None:
        if self.status == "done":
            return "done", {"results": len(self.results)}
        if self.status == "error":
            return "error", {"error": self.error, "field": self.error_field}
        if self.status == "cancelled":
            return "cancelled", {}
        return None


class JobManager:
    """Jobs of one server. ``clock`` (seconds) is injectable so expiry is testable without sleeping."""

    def __init__(self, engines: EngineManager, *, workers: int = 1, queue_size: int = 16,
                 result_ttl: float = 3600.0, max_finished: int = 256, preview_interval: float = 1.0,
                 memory_budget: int | None = None, allow_downloads: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.engines = engines
        self.allow_downloads = allow_downloads
        self.memory_budget = memory_budget  # bytes the admitted jobs may hold together (None: no limit)
        self._admitted = 0
        self.queue_size = queue_size
        self.result_ttl = result_ttl
        self.max_finished = max_finished
        self.preview_interval = preview_interval
        self.clock = clock
        self.workers = workers
        self._jobs: dict[str, JobRecord] = {}
        self._pending: collections.deque[JobRecord] = collections.deque()
        self._busy: set[tuple] = set()
        self._cond = threading.Condition()
        self._stopping = True
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._threads: list[threading.Thread] = []
        self.start()

    def start(self) -> None:
        """Make the private results folder and start the workers (again after :meth:`shutdown`)."""
        with self._cond:
            if not self._stopping:
                return
            self.root = Path(tempfile.mkdtemp(prefix="diffcompose-serve-"))  # 0700: only this user reads results
            self._stopping = False
            self._admitted = sum(r.memory for r in self._jobs.values())
            self._stop = threading.Event()
            self._threads = [threading.Thread(target=self._work, name=f"diffcompose-worker-{i}", daemon=True)
                             for i in range(self.workers)]
            self._threads.append(threading.Thread(target=self._janitor, name="diffcompose-janitor", daemon=True))
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ client side

    def submit(self, sub: Submission, *, held: bool = False) -> JobRecord:
        """Queue ``sub``; ``held``: the caller reads the result, then forgets the job (:meth:`discard`)."""
        self.sweep()
        now = self.clock()
        need = job_memory(sub.job)
        with self._cond:
            if self._stopping:
                raise Unavailable("the server is shutting down; no new jobs")
            if len(self._pending) >= self.queue_size:
                raise QueueFull(self._retry_after(), len(self._pending))
            self._admit(need)
            rec = JobRecord(secrets.token_urlsafe(12), sub, now, now + self.result_ttl, task=sub.task,
                            engine=sub.engine, seed=sub.seed, held=held, memory=need)
            self._admitted += need
            self._jobs[rec.id] = rec
            self._pending.append(rec)
            rec.position = len(self._pending)
            rec.set_status("queued")  # before a worker can move it on
            self._cond.notify_all()
        return rec

    def _admit(self, need: int) -> None:
        """(Under ``_cond``.) Refuse a job of ``need`` bytes that does not fit the memory budget."""
        budget = self.memory_budget
        if budget is None:
            return
        if need > budget:
            raise TooBig(need, budget)
        if self._admitted + need > budget:
            raise OverBudget(self._retry_after(), need, self._admitted, budget)

    def get(self, job_id: str) -> JobRecord:
        self.sweep()
        with self._cond:
            rec = self._jobs.get(job_id)
        if rec is None:
            raise JobNotFound(job_id)
        return rec

    def cancel(self, job_id: str) -> JobRecord:
        rec = self.get(job_id)
        rec.cancel.cancel()
        with self._cond:
            if rec.status == "queued" and rec in self._pending:
                self._pending.remove(rec)
                self._finish(rec, "cancelled")
                self._renumber()
        return rec

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job ends (the synchronous endpoint)."""
        rec = self.get(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while rec.status not in FINISHED:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left if left is not None else 1.0)
        return rec

    async def wait_async(self, rec: JobRecord) -> JobRecord:
        """Wait for ``rec`` to end without holding a thread (a waiting ``/api/run`` must not starve
        the thread pool that the other endpoints run on)."""
        async with rec.watch() as changed:
            while rec.status not in FINISHED:
                changed.clear()
                if rec.status in FINISHED:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), 5.0)  # a missed wake-up costs 5 s, not a hang
        return rec

    def discard(self, job_id: str) -> None:
        """Forget a finished job now and delete its files (after a synchronous run answered)."""
        with self._cond:
            rec = self._jobs.pop(job_id, None)
        if rec is not None:
            self._delete_files(rec)

    def sweep(self) -> int:
        """Remove finished jobs past their expiry, and the oldest ended beyond ``max_finished`` (their
        files too); returns how many."""
        now = self.clock()
        with self._cond:
            finished = sorted((r for r in self._jobs.values() if r.status in FINISHED and not r.held),
                              key=lambda r: r.ended)
            extra = len(finished) - self.max_finished
            old = [r for k, r in enumerate(finished) if k < extra or r.expires <= now]
            for r in old:
                del self._jobs[r.id]
        for r in old:
            self._delete_files(r)
        return len(old)

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"queued": len(self._pending), "running": len(self._busy), "jobs": len(self._jobs),
                    "memory_admitted": self._admitted}

    def shutdown(self) -> None:
        """Stop the workers (running jobs are cancelled, queued ones end cancelled: nobody waits
        for them forever) and delete the results folder."""
        with self._cond:
            self._stopping = True
            self._stop.set()
            for rec in self._jobs.values():
                rec.cancel.cancel()
            while self._pending:
                self._finish(self._pending.popleft(), "cancelled")
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=10)
        with self._cond:
            self._jobs.clear()  # their files go with the folder
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ worker side

    def _janitor(self) -> None:
        """Sweep expired jobs even when no client calls (results must not outlive their expiry)."""
        interval = min(60.0, max(0.05, self.result_ttl / 4))
        stop = self._stop
        while not stop.wait(interval):
            self.sweep()

    def _retry_after(self) -> int:
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        workers = max(1, self.workers)
        return int(min(3600, max(1, math.ceil(mean * (len(self._pending) + 1) / workers))))

    @staticmethod
    def _key(rec: JobRecord) -> tuple:
        sub = rec.sub
        return (sub.engine, sub.model, sub.device, sub.dtype) if sub else ()

    def _next(self) -> JobRecord | None:
        with self._cond:
            while not self._stopping:
                for rec in self._pending:
                    if self._key(rec) not in self._busy:
                        self._pending.remove(rec)
                        self._busy.add(self._key(rec))
                        rec.started = time.monotonic()
                        self._renumber()
                        return rec
                self._cond.wait(1.0)
        return None

    def _renumber(self) -> None:
        """(Under ``_cond``.) Each waiting job's position after one left the queue (a ``state`` event
        for each that moved up)."""
        for place, rec in enumerate(self._pending, 1):
            if rec.position != place:
                rec.position = place
                rec.set_status("queued")

    def _work(self) -> None:
        while True:
            rec = self._next()
            if rec is None:
                return
            key = self._key(rec)
            try:
                self._run(rec)
            finally:
                with self._cond:
                    self._busy.discard(key)
                    self._cond.notify_all()

    def _run(self, rec: JobRecord) -> None:
        sub = rec.sub
        assert sub is not None
        ctx = RunContext(sub.seed, lambda ev: self._on_progress(rec, ev), rec.cancel)
        try:
            ctx.check()
            if not self.allow_downloads:
                check_cached(sub)
            if self.engines.is_loaded(sub.engine, device=sub.device, dtype=sub.dtype, model=sub.model):
                rec.set_status("running")  # the engine's start event follows at once
            else:
                rec.model = shown_model(sub.engine, sub.model)
                rec.set_status("loading")
            engine = self.engines.get(sub.engine, device=sub.device, dtype=sub.dtype, model=sub.model)
            result = engine.execute(sub.job, sub.options, ctx, paste_back=sub.paste_back, margin=sub.margin)
            rec.set_status("finishing")  # a one-pass engine, or paste-back after the last step: now the PNG
            outs = result if isinstance(result, list) else [result]
            paths = [self._write(rec, i, out) for i, out in enumerate(outs)]
        except Cancelled:
            self._done(rec, "cancelled")
        except DiffComposeError as exc:
            rec.error_type = type(exc)
            # a model that could not be found is the model field's fault unless the error says otherwise
            rec.error_field = http_field(exc) or ("model" if isinstance(exc, WeightsMissingError) else None)
            self._done(rec, "error", http_message(exc))
        except Exception as exc:  # a bug: the job says so in one line, the log has the traceback
            log.exception("job %s failed", rec.id)
            rec.error_type = type(exc)
            self._done(rec, "error", f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])
        else:
            rec.results = paths
            self._done(rec, "done")

    def _done(self, rec: JobRecord, status: str, error: str | None = None) -> None:
        key = self._key(rec)  # before _finish drops the submission it is made of
        with self._cond:  # _retry_after iterates _durations under the same lock
            if rec.started is not None:
                self._durations.append(time.monotonic() - rec.started)
            rec.error = error
            self._finish(rec, status)
            idle = not self._pending and self._busy <= {key}  # this was the last job
        self.sweep()  # past max_finished, the oldest ended job goes now, not at the janitor's next round
        if idle:
            release_freed_memory()

    def _finish(self, rec: JobRecord, status: str) -> None:
        """(Under ``_cond``.) Mark ``rec`` ended, drop its inputs, start its expiry clock, tell waiters
        (a ``state`` event, then the end's own: ``done``, ``error`` or ``cancelled``)."""
        rec.set_status(status)
        rec.sub = None  # the decoded inputs are no longer needed
        self._admitted -= rec.memory
        rec.memory = 0
        rec.ended = self.clock()
        rec.expires = rec.ended + self.result_ttl
        name, data = rec.terminal_event()  # type: ignore[misc]
        rec.emit(name, data)
        self._cond.notify_all()

    def _on_progress(self, rec: JobRecord, ev: ProgressEvent) -> None:
        """A progress event of the run: the start event (``step=0``) makes the job ``running`` (no
        ``progress`` event: the ``state`` event says it); the last step of a loop makes it
        ``finishing``, and a later loop's step ``running`` again."""
        rec.step, rec.total = ev.step, ev.total
        if ev.step == 0:
            rec.set_status("running")
            return
        rec.set_status("finishing" if ev.step >= ev.total > 0 else "running")
        now = time.monotonic()
        has_preview = False
        if ev.preview is not None and now - rec.preview_time >= self.preview_interval:
            try:
                rec.preview_png = encode_png(to_pil(np.asarray(ev.preview())))
                rec.preview_step, rec.preview_time, has_preview = ev.step, now, True
            except Exception:  # a preview is a nicety; never fail the run for it
                log.debug("preview of job %s failed", rec.id, exc_info=True)
        data = {"step": ev.step, "total": ev.total, "task": ev.task, "timestep": ev.timestep,
                "elapsed": round(ev.elapsed, 4), "preview": has_preview}
        rec.last_progress = data
        rec.emit("progress", data)
        if has_preview:
            rec.emit("preview", {"step": ev.step, "url": f"/api/jobs/{rec.id}/preview"})

    def _write(self, rec: JobRecord, index: int, out: np.ndarray) -> Path:
        """One result as PNG (seed, engine, task in its text chunks), written atomically in the private folder."""
        sub = rec.sub
        info = PngInfo()
        for key, value in result_metadata(rec.task, rec.engine, rec.seed, sub.model if sub else None).items():
            info.add_text(key, value)
        path = self.root / f"{rec.id}-{index}.png"
        fd, tmp = tempfile.mkstemp(prefix=".result-", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                # zlib level 1: 3x faster than PNG's default 6 (85 -> 27 ms at 512x512) for ~10% more bytes
                to_pil(out).save(fh, format="PNG", pnginfo=info, compress_level=1)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    def _delete_files(self, rec: JobRecord) -> None:
        for p in rec.results:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def check_cached(sub: Any) -> None:
    """Refuse a job whose model would have to come from the hub (the server was not started with
    ``--allow-downloads``): the worker calls it before loading anything, so the job ends in one
    line within milliseconds, not after a torch import and a network wait."""
    names = []
    default = get_engine_info(sub.engine).default_model
    if sub.model is None and default == NO_DEFAULT_MODEL:
        raise WeightsMissingError(f"engine '{sub.engine}' has no published model: choose one (tiny, a folder of "
                                  "the server's --model-dir, or a cached hub id)", field="model")
    model = sub.model if sub.model is not None else (None if default == NO_DEFAULT_MODEL else default)
    if model is not None:
        names.append(("model", "model", model))
    if dataclasses.is_dataclass(sub.options):
        for f in dataclasses.fields(sub.options):
            value = getattr(sub.options, f.name)
            if f.metadata.get("weights") and isinstance(value, str):
                names.append((f"option {f.name}", f.name, value))
    for what, field_name, name in names:
        if name == TINY or os.path.isabs(name) or in_hub_cache(name):
            continue
        raise WeightsMissingError(f"{what} '{name}' is not in the local cache and this server does not "
                                  "download models (start it with --allow-downloads, or put the model in "
                                  "--model-dir)", field=field_name)


def shown_model(engine: str, model: str | None) -> str | None:
    """The model a job loads, as its ``loading`` state names it: the name given or the engine's
    default; a folder of ``--model-dir`` by its name only (the server's paths are not shown)."""
    default = get_engine_info(engine).default_model
    name = model if model is not None else (None if default == NO_DEFAULT_MODEL else default)
    return Path(name).name if name is not None and os.path.isabs(name) else name


def release_freed_memory() -> None:
    """Hand memory freed by ended jobs back to the system (glibc only; elsewhere nothing to do).

    A job's arrays are tens to hundreds of MB; glibc serves such blocks from ``mmap`` at
    first, but raises its threshold once they are freed, so the next jobs' arrays land in the
    heap arenas of the worker and request threads, and those keep freed pages: after a burst
    the server's RSS would stay hundreds of MB above its baseline. ``malloc_trim(0)`` returns
    them; it is called when the last job ends, not per job.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> Any:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (musl has none)
    except (OSError, AttributeError):
        return None
    return libc


def result_metadata(task: str, engine: str, seed: int, model: str | None = None) -> dict[str, str]:
    """What a result says about itself (PNG text chunks ``diffcompose:*``; HTTP headers mirror them)."""
    meta = {"diffcompose:seed": str(seed), "diffcompose:engine": engine, "diffcompose:task": task,
            "diffcompose:version": __version__}
    if model is not None:
        meta["diffcompose:model"] = Path(model).name if os.path.isabs(model) else model
    return meta


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
