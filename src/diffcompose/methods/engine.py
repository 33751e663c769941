"""The engine object: one lifetime (``load`` once, serve many requests, ``unload``), one lock,
and the one windowed runner every engine's work goes through.

A subclass implements, per task it serves, ``_<task>(**inputs, options, ctx)``: it gets the
task's inputs already cut to its window and resized to its working size (see
:class:`~diffcompose.regions.crop.WindowPolicy`, which it declares in
:meth:`Engine.window_policy`), its validated options dataclass and the request's
:class:`~diffcompose.progress.RunContext`, and returns an ``(h, w, 3)`` uint8 array of the
working size (a list of them for ``paint`` and ``inpaint``; a bool mask for ``segment``). Planning the
window, cropping (with the mirrored margin that keeps its aspect ratio: cut off again from results and
previews), putting the result back at full size and restoring the original pixels
outside the region (the engine's :meth:`Engine.paste_region`: by default the region grown by
its :meth:`Engine.paste_band`, then a feathered seam of ``margin`` pixels) all happen here, the
same way for every engine.

No torch at import: engines that need no torch subclass this directly.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from diffcompose.errors import PASS_MODEL, InputError, named
from diffcompose.inputs import DEFAULT_MAX_PIXELS, dilate_mask, to_pil
from diffcompose.methods.options import build_options, check_seed
from diffcompose.methods.registry import (
    NO_DEFAULT_MODEL, EngineInfo, all_engines, check_takes, get_engine_info, load_target, options_for,
)
from diffcompose.methods.tasks import Job, get_task, prepare, split_inputs
from diffcompose.progress import CancelToken, ProgressCallback, ProgressEvent, RunContext
from diffcompose.regions import Window, WindowPolicy, paste_back as restore_outside

log = logging.getLogger(__name__)


class Engine:
    """Base class of every engine. Constructing one loads nothing; :meth:`load` does, once."""

    #: The registered name (set by subclasses); the registry's :class:`EngineInfo` has the rest.
    name: str = ""

    def __init__(self, *, device: str | None = None, dtype: str | None = None, model: str | None = None) -> None:
        self.device_name = device
        self.dtype_name = dtype
        self.model = model
        self.lock = threading.RLock()  # one request at a time on this engine's modules
        self._loaded = False

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"<{type(self).__name__} {self.name!r} model={self.model!r} device={self.device_name!r} ({state})>"

    # ------------------------------------------------------------------ lifetime

    @property
    def info(self) -> EngineInfo:
        return get_engine_info(self.name)

    @property
    def predicts_mask(self) -> bool:
        """Whether ``_inpaint`` returns ``(images, masks)``: the object mask it predicts for each image
        (declared by the registration, where ``--mask-output``'s message finds it too)."""
        return self.info.predicts_mask

    def model_dir(self, locate: Callable[[str], Path], *, missing: str = "") -> Path:
        """The local folder of ``self.model``, read the same way by every engine.

        ``tiny``: the registration's tiny builder; nothing: the registration's
        ``default_model`` (one line, ``missing``, when it has none published); anything else:
        ``locate(name)``, the engine's own check of a hub id or folder (its required files
        and its hint).
        """
        from diffcompose.models.hub import resolve_name

        info = self.info
        name = self.model or info.default_model
        tiny = (lambda: load_target(info.tiny)()) if info.tiny else None
        return resolve_name(None if name == NO_DEFAULT_MODEL else name, locate=locate, tiny=tiny,
                            missing=missing or f"engine '{self.name}' has no default model; {PASS_MODEL}")

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> "Engine":
        """Load the engine's components (idempotent, thread-safe); returns the engine."""
        with self.lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def unload(self) -> None:
        """Free the components; a later request loads them again."""
        with self.lock:
            if self._loaded:
                self._unload()
                self._loaded = False

    def memory_bytes(self) -> int:
        """Bytes held by the loaded components (what the manager's budget counts)."""
        return 0

    def _load(self) -> None:
        """Subclasses: load components (device, dtype and model are the constructor's)."""

    def _unload(self) -> None:
        """Subclasses: drop references to the components."""

    # ------------------------------------------------------------------ work

    def window_policy(self, task: str, options: Any) -> WindowPolicy:
        """How this engine wants its window for ``task`` (called after :meth:`load`)."""
        return WindowPolicy()

    def read(self, job: Job) -> Job:
        """The job as this engine reads its inputs. Default: the project's reading rules, ``job`` as
        is. An engine whose method reads masks or transparency its own way builds its inputs (and
        its paste mask) from ``job.readings``, the inputs before those rules."""
        return job

    def paste_band(self, task: str, options: Any, mask: np.ndarray) -> int:
        """Pixels around the region that the task may change as freely as the region itself
        (shadows, reflections, blended edges); beyond them the seam (``margin``) and then the
        original pixels, bit for bit. Default 0: only the region and its seam."""
        return 0

    def paste_region(self, task: str, options: Any, mask: np.ndarray) -> tuple[np.ndarray, int | None]:
        """Where the result is kept when pasting back, and the seam's default width (``None``: the
        project's :func:`~diffcompose.regions.default_margin`; ``--margin`` overrides it).

        Default: the region grown by :meth:`paste_band`. An engine whose method defines its own
        paste-back rule (a fixed box, no seam) returns that instead.
        """
        return dilate_mask(mask, self.paste_band(task, options, mask)), None

    def options(self, task: str, values: dict[str, Any] | None = None) -> Any:
        """Validated options of ``task`` from keyword values (this engine's types, choices and checks)."""
        return build_options(options_for(self.name, task), values or {}, engine=self.name, task=task)

    def execute(self, job: Job, options: Any, ctx: RunContext, *, paste_back: bool = True,
                margin: int | None = None, masks: list[np.ndarray] | None = None) -> np.ndarray | list[np.ndarray]:
        """The windowed runner: plan -> crop -> engine -> uncrop -> paste-back, under this engine's lock.

        An engine may return ``(images, masks)``: the object mask it predicts per image (a
        mask head). Each image's paste-back region is then its predicted mask (within the
        user's), and the full-size masks are appended to ``masks`` when a list is given (an
        engine without a mask head refuses one: :class:`InputError`).
        """
        if masks is not None and not self.predicts_mask:
            heads = [info.name for info in all_engines() if info.predicts_mask]
            raise InputError(f"engine '{self.name}' predicts no object mask; --mask-output needs an engine with a "
                             f"mask head ({', '.join(heads) or 'none is registered'})")
        spec = get_task(job.task)
        check_takes(self.name, job.task, spec.given_opt_in(job.arrays))
        ignored = set(spec.opt_in) - set(self.info.takes.get(job.task, ()))  # not given (checked): not passed
        job = self.read(job)
        with self.lock:
            self.load()
            ctx.start(job.task)  # the one start event of every engine: loaded, work begins
            policy = self.window_policy(job.task, options)
            win = policy.plan(job.size, job.region)
            log.debug("%s %s: window %s at %dx%d (content %dx%d)", self.name, job.task, win.box, *win.work_size,
                      *win.content)
            args = {}
            for key, value in job.arrays.items():
                kind = job.kinds.get(key)
                if key in ignored:
                    continue
                if value is None or kind is None:
                    args[key] = value
                elif kind == "image":
                    args[key] = win.crop(value)
                elif kind == "box":
                    args[key] = win.crop_box(value)
                elif kind == "soft":  # condition maps: their 1-px lines must survive the shrink
                    args[key] = win.crop_lines(value)
                else:
                    args[key] = win.crop_mask(value)
            result = getattr(self, "_" + job.task)(**args, options=options, ctx=cut_previews(ctx, win))
        predicted = None
        if isinstance(result, tuple):
            result, predicted = result
            predicted = [win.uncrop_mask(m, job.size) for m in predicted]
            if job.paste_mask is not None:
                predicted = [p & job.paste_mask for p in predicted]
            if masks is not None:
                masks.extend(predicted)
        outs = result if isinstance(result, list) else [result]
        if job.output == "mask":
            return win.uncrop_mask(outs[0], job.size)
        want = (win.work_size[1], win.work_size[0], 3)
        full = []
        for i, out in enumerate(outs):
            if out.shape != want or out.dtype != np.uint8:
                raise RuntimeError(f"engine {self.name} returned {out.shape} {out.dtype}, expected {want} uint8")
            out = win.uncrop(out, job.image)
            region = predicted[i] if predicted is not None else job.paste_mask
            if paste_back and region is not None:
                keep, seam = self.paste_region(job.task, options, region)
                out = restore_outside(job.image, out, keep, seam if margin is None else margin)
            full.append(out)
        return full if job.output == "images" else full[0]

    def run(self, task: str, *, seed: int = 0, on_progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, paste_back: bool = True, margin: int | None = None,
            max_pixels: int | None = DEFAULT_MAX_PIXELS, masks: list | None = None,
            **kwargs: Any) -> Image.Image | list[Image.Image]:
        """Run ``task`` on user inputs (paths, PIL images or arrays) with options as keywords.

        The keywords that the task's spec names as inputs are inputs, the others options.
        Returns PIL images of the input's size: one, or a list for ``paint`` with
        ``num_images`` > 1. Bad inputs and options raise :class:`~diffcompose.InputError`;
        a cancel raises :class:`~diffcompose.Cancelled`. ``masks``: a list that receives the
        full-size object masks of an engine with a mask head (:meth:`execute`).
        """
        inputs, values = split_inputs(task, kwargs)
        options = self.options(task, values)
        job = prepare(task, inputs, max_pixels)
        check_margin(margin, paste_back)
        result = self.execute(job, options, RunContext(check_seed(seed), on_progress, cancel),
                              paste_back=paste_back, margin=margin, masks=masks)
        return finish(result)

    # One method per task, for readable calls: ``engine.remove(image, mask, seed=1)``.
    def remove(self, image: Any, mask: Any, **kw: Any) -> Image.Image:
        return self.run("remove", image=image, mask=mask, **kw)  # type: ignore[return-value]

    def harmonize(self, image: Any, mask: Any = None, **kw: Any) -> Image.Image:
        return self.run("harmonize", image=image, mask=mask, **kw)  # type: ignore[return-value]

    def paste(self, background: Any, obj: Any, box: Any, **kw: Any) -> Image.Image:
        return self.run("paste", background=background, obj=obj, box=box, **kw)  # type: ignore[return-value]

    def segment(self, image: Any, box: Any = None, *, points: Any = None, **kw: Any) -> Image.Image:
        return self.run("segment", image=image, box=box, points=points, **kw)  # type: ignore[return-value]

    def compose(self, image: Any, edited_condition: Any, **kw: Any) -> Image.Image:
        return self.run("compose", image=image, edited_condition=edited_condition, **kw)  # type: ignore[return-value]

    def paint(self, image: Any, mask: Any, reference: Any, **kw: Any) -> Image.Image | list[Image.Image]:
        return self.run("paint", image=image, mask=mask, reference=reference, **kw)

    def inpaint(self, image: Any, mask: Any = None, *, return_masks: bool = False, **kw: Any) -> Any:
        """As :func:`diffcompose.inpaint`: with ``return_masks``, ``(images, masks)``."""
        if not return_masks:
            return self.run("inpaint", image=image, mask=mask, **kw)
        masks: list = []
        images = self.run("inpaint", image=image, mask=mask, masks=masks, **kw)
        return images, finish(masks)

    def insert(self, image: Any, mask: Any = None, reference: Any = None, **kw: Any) -> Image.Image | list[Image.Image]:
        return self.run("insert", image=image, mask=mask, reference=reference, **kw)

    def outpaint(self, image: Any, *, extend: Any = None, aspect: Any = None, **kw: Any) -> Image.Image:
        """The grown canvas (larger than ``image``): see :func:`diffcompose.outpaint`."""
        return self.run("outpaint", image=image, extend=extend, aspect=aspect, **kw)  # type: ignore[return-value]


def cut_previews(ctx: RunContext, win: Window) -> RunContext:
    """The run's context with each progress preview cut to the window's content (no mirrored margin)."""
    listener = ctx.on_progress
    if listener is None or win.content == win.work_size:
        return ctx

    def listen(event: ProgressEvent) -> None:
        preview = event.preview
        if preview is not None:
            event = dataclasses.replace(event, preview=lambda: win.cut(preview()))
        listener(event)

    return dataclasses.replace(ctx, on_progress=listen)


#: Largest seam width accepted (pixels): wider than any image this tool opens.
MAX_MARGIN = 100_000


def check_margin(margin: int | None, paste_back: bool = True) -> None:
    """``margin`` (and ``paste_back``) as the CLI would accept them."""
    if not isinstance(paste_back, (bool, np.bool_)):
        raise InputError(f"paste_back must be True or False, got {paste_back!r}")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, np.integer))
                               or not 0 <= margin <= MAX_MARGIN):
        raise InputError(f"{named('--margin', 'margin')} must be a whole number of pixels from 0 to {MAX_MARGIN}, "
                         f"got {margin!r}")


def finish(result: np.ndarray | list[np.ndarray]) -> Image.Image | list[Image.Image]:
    """PIL images out: a list only when there are several."""
    if isinstance(result, list):
        images = [to_pil(r) for r in result]
        return images if len(images) > 1 else images[0]
    return to_pil(result)
