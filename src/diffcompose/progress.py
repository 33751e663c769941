"""One progress-and-cancel contract for every loop (DDS iterations, sampler steps, training
steps, batch items).

Work begins with one start event, ``step=0`` (:meth:`RunContext.start`: the engine runner
sends it for every engine, once its model is loaded, so a listener knows the work is under
way even for a one-pass engine that reports nothing else). A loop then makes a
:class:`Progress` for its ``total`` steps and calls :meth:`Progress.step` after each one.
Each call first checks the run's :class:`CancelToken` (so a cancel from another thread
stops the loop within one step, raising :class:`Cancelled`), then hands the consumer a
:class:`ProgressEvent`. Consumers are plain callables: the CLI's progress bar
(:class:`TqdmBar`), a web server's event stream, a test's list. Library code never prints.

No torch here: the classical engines and ``--help`` import this module.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from diffcompose.errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    """One finished step of a loop.

    ``step`` counts finished steps (1..``total``); ``step=0`` is the start event (work has begun;
    its ``total`` is 0, unknown: a listener shows an indeterminate bar until a step arrives, and
    a one-pass engine sends no step at all); ``timestep`` is the diffusion timestep of
    the step where there is one; ``elapsed`` is seconds since the loop started. ``preview``
    is a lazy callable returning the current result as a uint8 ``(H, W, 3)`` array (only
    where one is cheap to make, ``None`` otherwise): call it only if you show it.
    """

    task: str
    step: int
    total: int
    timestep: int | None = None
    elapsed: float = 0.0
    preview: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)


ProgressCallback = Callable[[ProgressEvent], None]


class CancelToken:
    """Set from any thread to stop a run; the run raises :class:`Cancelled` within one step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._event.is_set():
            raise Cancelled("cancelled")


class Progress:
    """The per-loop side of the contract: ``check()`` before a step, ``step()`` after it."""

    def __init__(self, task: str, total: int, callback: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> None:
        self.task = task
        self.total = int(total)
        self.callback = callback
        self.cancel = cancel
        self.done = 0
        self.start = time.perf_counter()

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.check()

    def step(self, timestep: int | float | None = None, preview: Callable[[], np.ndarray] | None = None) -> None:
        """Report one finished step (then check for a cancel, so a cancelled run stops here)."""
        self.done += 1
        if self.callback is not None:
            t = None if timestep is None else int(timestep)
            self.callback(ProgressEvent(self.task, self.done, self.total, t, time.perf_counter() - self.start,
                                        preview))
        self.check()


@dataclass
class RunContext:
    """What one request brings besides inputs and options: its seed, its listener, its cancel switch."""

    seed: int = 0
    on_progress: ProgressCallback | None = None
    cancel: CancelToken | None = None

    def start(self, task: str) -> None:
        """Send the start event (``step=0``, ``total=0``): the work of ``task`` begins now.

        Sent once per run by the engine runner, after loading and before the engine's own
        work, so every engine has it (a one-pass engine's only event); a cancel already
        requested stops the run here instead.
        """
        self.check()
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(task, 0, 0))
            self.check()  # a cancel from the listener stops even a one-pass engine before its work

    def progress(self, task: str, total: int) -> Progress:
        """A tracker for a loop of ``total`` steps (checks for a cancel before the first step)."""
        self.check()
        return Progress(task, total, self.on_progress, self.cancel)

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.check()


class TqdmBar:
    """A progress consumer drawing one tqdm bar per loop on stderr (the CLI's; never used by library code)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._key: tuple[str, int] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled or event.step == 0:  # the start event: no bar until there are steps to count
            return
        from tqdm.auto import tqdm

        key = (event.task, event.total)
        if self._bar is None or key != self._key or event.step <= self._bar.n:
            self.close()
            self._bar = tqdm(total=event.total, desc=event.task, leave=False)
            self._key = key
        self._bar.update(event.step - self._bar.n)
        if event.step >= event.total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
