"""The functional API: :func:`run` for any task, and one function per task, mirroring the CLI.

Each function validates its inputs and the engine's options, picks the engine (``auto``
included), gets it loaded from the process's :class:`~diffcompose.EngineManager` (so
repeated calls reuse loaded weights) and runs it through the windowed runner. For more
control (several models, explicit lifetime), use engine objects: :func:`get_engine`.

Common keywords: ``engine``; ``device``, ``dtype``, ``model`` (the engine's construction
arguments); ``seed``; ``on_progress`` (called with each
:class:`~diffcompose.ProgressEvent`); ``cancel`` (a :class:`~diffcompose.CancelToken`);
``paste_back`` and ``margin``; ``max_pixels``. Any other keyword is an engine option, a value
of that option's type (for :func:`run`: any other keyword that is not one of the task's inputs,
as its spec names them).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from PIL import Image

from diffcompose.errors import InputError, shown
from diffcompose.inputs import DEFAULT_MAX_PIXELS, Box, ImageLike, MaskLike
from diffcompose.methods.engine import Engine, check_margin, finish
from diffcompose.methods.manager import default_manager
from diffcompose.methods.options import build_options, check_seed
from diffcompose.methods.registry import options_for, resolve_engine
from diffcompose.methods.tasks import get_task, prepare, split_inputs
from diffcompose.progress import CancelToken, ProgressCallback, RunContext

log = logging.getLogger(__name__)

BoxLike = Box | str | tuple[int, int, int, int]


def get_engine(name: str, *, device: str | None = None, dtype: str | None = None,
               model: str | None = None) -> Engine:
    """A loaded engine object from the process's manager (loaded once, shared by later calls)."""
    return default_manager().get(name, device=device, dtype=dtype, model=model)


def run(task: str, inputs: dict[str, Any] | None = None, *, engine: str = "auto", device: str | None = None,
        dtype: str | None = None, model: str | None = None, seed: int = 0,
        on_progress: ProgressCallback | None = None, cancel: CancelToken | None = None, paste_back: bool = True,
        margin: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, masks: list | None = None,
        **kwargs: Any) -> Image.Image | list[Image.Image]:
    """Validate, pick the engine, run it: what every task function below does, for any registered task.

    The task's inputs (its spec's keywords) come in ``inputs``, or as keywords
    (``run("remove", image=..., mask=..., method="patchmatch")``); the other keywords are the
    engine's options, each of its option's type (``radius=5``; ``radius="5"`` is refused:
    only the command line hands over text to parse, see :func:`run_from_text`). ``masks``: a
    list that receives the full-size object masks of an engine with a mask head.
    """
    return _run(task, inputs, kwargs, from_text=False, engine=engine, device=device, dtype=dtype, model=model,
                seed=seed, on_progress=on_progress, cancel=cancel, paste_back=paste_back, margin=margin,
                max_pixels=max_pixels, masks=masks)


def run_from_text(task: str, inputs: dict[str, Any], options: dict[str, Any], **run_args: Any
                  ) -> Image.Image | list[Image.Image]:
    """:func:`run` for the command line: ``options`` are the engine options as typed there (text, read
    by each option's type: ``"5"`` for an int option), where a Python caller's values must already
    be of the option's type. ``run_args``: :func:`run`'s own keywords (engine, seed, ...).
    """
    return _run(task, inputs, options, from_text=True, **{**_RUN_DEFAULTS, **run_args})


def _run(task: str, inputs: dict[str, Any] | None, values: dict[str, Any], *, from_text: bool, engine: str,
         device: str | None, dtype: str | None, model: str | None, seed: int,
         on_progress: ProgressCallback | None, cancel: CancelToken | None, paste_back: bool, margin: int | None,
         max_pixels: int | None, masks: list | None) -> Image.Image | list[Image.Image]:
    given, options = split_inputs(task, values)
    twice = sorted(set(given) & set(inputs or {}))
    if twice:
        raise InputError(f"input {', '.join(twice)} given both in inputs and as a keyword")
    job = prepare(task, {**(inputs or {}), **given}, max_pixels)
    check_margin(margin, paste_back)
    seed = check_seed(seed)
    name, why = resolve_engine(engine, task, get_task(task).given_opt_in(job.arrays))
    opts = build_options(options_for(name, task), options, engine=name, task=task, from_text=from_text)
    model = _model_name(model)
    # Say which engine "auto" picked (after validation, so bad input still ends in one line).
    log.log(logging.INFO if engine == "auto" else logging.DEBUG, "engine: %s (%s)", name, why)
    loaded = get_engine(name, device=device, dtype=dtype, model=model)
    result = loaded.execute(job, opts, RunContext(seed, on_progress, cancel), paste_back=paste_back,
                            margin=margin, masks=masks)
    return finish(result)


def _model_name(model: Any) -> str | None:
    """``model`` as a hub id or folder name (a path object becomes its text), or one line saying what it is not.

    A folder's name may hold any bytes the file system allows (a shell hands them over as
    surrogates), so unlike prompts it is not held to valid UTF-8: only its type is checked.
    """
    if model is None or isinstance(model, str):
        return model
    if isinstance(model, os.PathLike) and isinstance(os.fspath(model), str):
        return os.fspath(model)
    raise InputError(f"--model must be a hub id, a folder or 'tiny' (text), got {shown(model)}")


#: :func:`run`'s own keywords and their defaults (written once, in its signature).
_RUN_DEFAULTS = {name: p.default for name, p in inspect.signature(run).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY}


def remove(image: ImageLike, mask: MaskLike, **kw: Any) -> Image.Image:
    """Remove the object under ``mask`` (white) and fill the hole from its surroundings."""
    return run("remove", {"image": image, "mask": mask}, **kw)  # type: ignore[return-value]


def paste(background: ImageLike, obj: ImageLike, box: BoxLike, *, object_mask: MaskLike | None = None,
          **kw: Any) -> Image.Image:
    """Place ``obj`` (cut out by ``object_mask`` or its alpha) into ``box``, keeping its aspect ratio."""
    inputs = {"background": background, "obj": obj, "box": box, "object_mask": object_mask}
    return run("paste", inputs, **kw)  # type: ignore[return-value]


def harmonize(image: ImageLike, mask: MaskLike | None = None, *, obj: ImageLike | None = None,
              box: BoxLike | None = None, object_mask: MaskLike | None = None, **kw: Any) -> Image.Image:
    """Make a pasted object match its surroundings.

    Either ``image`` is a composite and ``mask`` marks the pasted object, or ``image`` is a
    clean background and ``obj`` + ``box`` (+ ``object_mask``) say what to paste first.
    """
    inputs = {"image": image, "mask": mask, "obj": obj, "box": box, "object_mask": object_mask}
    return run("harmonize", inputs, **kw)  # type: ignore[return-value]


def segment(image: ImageLike, box: BoxLike | None = None, *, points: Any = None, **kw: Any) -> Image.Image:
    """An object mask (mode ``L``, white = object) from a box around it and/or clicks.

    ``points``: ``[[x, y, label], ...]`` (label 1 on the object, 0 on the background; an
    engine that takes no clicks needs the box and ignores them).
    """
    return run("segment", {"image": image, "box": box, "points": points}, **kw)  # type: ignore[return-value]


def paint(image: ImageLike, mask: MaskLike, reference: ImageLike, *, reference_mask: MaskLike | None = None,
          **kw: Any) -> Image.Image | list[Image.Image]:
    """Fill ``mask`` (white) with an object that looks like ``reference``, harmonised with the scene.

    ``reference_mask`` (white = the object in the reference) turns the reference's background
    white. ``sketch=`` (white strokes on black, the image's size; only engines that take one,
    e.g. ``engine="pbsketch"``, which ``auto`` then picks) gives the lines the fill follows.
    Returns one image, or a list when ``num_images`` > 1.
    """
    inputs = {"image": image, "mask": mask, "reference": reference, "reference_mask": reference_mask}
    return run("paint", inputs, **kw)


def compose(image: ImageLike, edited_condition: ImageLike, *, condition: ImageLike | None = None,
            condition_type: str = "canny", mask: MaskLike | None = None, prompt: str = "",
            **kw: Any) -> Image.Image:
    """Re-shape the object in ``image`` (pasted there already) to follow ``edited_condition``.

    ``condition`` is the condition map of ``image`` itself (canny edges are computed when it
    is omitted); ``mask`` limits the change to a region (default: the whole image).
    """
    inputs = {"image": image, "edited_condition": edited_condition, "condition": condition,
              "condition_type": condition_type, "mask": mask, "prompt": prompt}
    return run("compose", inputs, **kw)  # type: ignore[return-value]


def inpaint(image: ImageLike, mask: MaskLike | None = None, *, box: BoxLike | None = None, prompt: str,
            negative_prompt: str = "", return_masks: bool = False, **kw: Any) -> Any:
    """Fill ``mask`` (white; or ``box``, a rough region) with what ``prompt`` describes, keeping the rest.

    Returns one image, or a list when ``num_images`` > 1. With ``return_masks`` (engines
    with a mask head, ``predicts_mask`` in their registration), returns ``(images, masks)``: the object mask each
    image's content was predicted to occupy (mode ``L``), which is also where its pixels
    were pasted back.
    """
    inputs = {"image": image, "mask": mask, "box": box, "prompt": prompt, "negative_prompt": negative_prompt}
    if not return_masks:
        return run("inpaint", inputs, **kw)
    masks: list = []
    images = run("inpaint", inputs, masks=masks, **kw)
    return images, finish(masks)


def insert(image: ImageLike, mask: MaskLike | None = None, reference: ImageLike | None = None, *,
           box: BoxLike | None = None, reference_mask: MaskLike | None = None, shape_mask: MaskLike | None = None,
           **kw: Any) -> Image.Image | list[Image.Image]:
    """Insert the object of ``reference`` into the target region of ``image``: ``mask`` (white) or ``box``.

    ``reference_mask`` (white = the object in the reference; default its alpha) cuts the
    object out (some engines need it). ``shape_mask`` (scene-sized, inside the region's box)
    is the shape the object should take; ``sketch=`` (as :func:`paint`'s) its lines. Returns one
    image, or a list when ``num_images`` > 1.
    """
    inputs = {"image": image, "mask": mask, "box": box, "reference": reference, "reference_mask": reference_mask,
              "shape_mask": shape_mask}
    return run("insert", inputs, **kw)


def outpaint(image: ImageLike, *, extend: Any = None, aspect: Any = None, **kw: Any) -> Image.Image:
    """Grow the canvas of ``image`` by ``extend`` (``"L,T,R,B"`` pixels, or four numbers) or to
    ``aspect`` (``"W:H"``) and fill the new area so that it continues the picture.

    Unlike the other tasks the result is larger than ``image``: the grown canvas, with the original
    pixels at ``(left, top)``, unchanged beyond the seam (``margin=0`` keeps every one).
    """
    return run("outpaint", {"image": image, "extend": extend, "aspect": aspect}, **kw)  # type: ignore[return-value]

