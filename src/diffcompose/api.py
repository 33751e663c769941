"""The Python API: one function per task, mirroring the CLI.

Each function validates its inputs once (see :mod:`diffcompose.inputs`), picks the engine,
runs it and pastes the original pixels back outside the edited region (unless
``paste_back=False``). Engine-specific options are keyword arguments, checked against the
engine's options dataclass (``diffcompose.methods``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from PIL import Image

from diffcompose import regions
from diffcompose.errors import InputError
from diffcompose.inputs.images import open_pil
from diffcompose.inputs import (
    DEFAULT_MAX_PIXELS, Box, ImageLike, MaskLike, check_mask_coverage, load_image, load_mask, parse_box, to_pil,
)
from diffcompose.methods import build_options, get_task, resolve_engine
from diffcompose.methods.registry import Runtime

log = logging.getLogger(__name__)


def run_engine(task: str, engine: str, inputs: dict[str, Any], options: dict[str, Any], runtime: Runtime) -> Any:
    """Resolve the engine (``auto`` included), validate options, call it."""
    name, why = resolve_engine(engine, task)
    log.info("engine: %s (%s)", name, why)
    impl = get_task(name, task)
    opts = build_options(impl, options)
    return impl.load()(**inputs, options=opts, runtime=runtime)


def _finish(original: np.ndarray, edited: np.ndarray, mask: np.ndarray, paste_back: bool, margin: int | None) -> Image.Image:
    if edited.shape != original.shape:
        raise RuntimeError(f"engine returned {edited.shape}, expected {original.shape}")
    return to_pil(regions.paste_back(original, edited, mask, margin) if paste_back else edited)


def remove(
    image: ImageLike, mask: MaskLike, *, engine: str = "auto", seed: int = 0, paste_back: bool = True,
    margin: int | None = None, device: str | None = None, dtype: str | None = None, model: str | None = None,
    progress: bool = False, callback: Any = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, **options: Any,
) -> Image.Image:
    """Remove the object under ``mask`` (white) and fill the hole from its surroundings."""
    img = load_image(image, "image", max_pixels)
    m = load_mask(mask, (img.shape[1], img.shape[0]), max_pixels=max_pixels)
    check_mask_coverage(m, operation="removal")
    rt = Runtime(seed, device, dtype, model, progress, callback)
    out = run_engine("remove", engine, {"image": img, "mask": m}, options, rt)
    return _finish(img, out, m, paste_back, margin)


def place_object(
    background: np.ndarray, obj: ImageLike, box: Box | str | tuple[int, int, int, int], object_mask: MaskLike | None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray, Box]:
    """Validate an object (and its mask or alpha) and a target box on ``background``."""
    size = (background.shape[1], background.shape[0])
    target = parse_box(box, size)
    fg = load_image(obj, "object", max_pixels)
    fg_size = (fg.shape[1], fg.shape[0])
    if object_mask is not None:
        fg_mask = load_mask(object_mask, fg_size, name="object mask", max_pixels=max_pixels)
    else:
        fg_mask = _alpha_or_full(obj, fg_size)
    return fg, fg_mask, target


def _alpha_or_full(obj: ImageLike, size: tuple[int, int]) -> np.ndarray:
    """The object's own alpha as its mask when it has a varying one, else the whole object."""
    pil = open_pil(obj, "object") if isinstance(obj, (str, os.PathLike)) else obj
    has_alpha = (isinstance(pil, Image.Image) and ("A" in pil.mode or "transparency" in pil.info)) or (
        isinstance(pil, np.ndarray) and pil.ndim == 3 and pil.shape[2] in (2, 4))
    if has_alpha:
        m = load_mask(pil, size, name="object alpha", allow_empty=True)
        if m.any() and not m.all():
            return m
    return np.ones((size[1], size[0]), dtype=bool)


def paste(
    background: ImageLike, obj: ImageLike, box: Box | str | tuple[int, int, int, int], *,
    object_mask: MaskLike | None = None, engine: str = "classical", seed: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS, **options: Any,
) -> Image.Image:
    """Place ``obj`` (cut out by ``object_mask`` or its alpha) into ``box``, keeping its aspect ratio."""
    bg = load_image(background, "background", max_pixels)
    fg, fg_mask, target = place_object(bg, obj, box, object_mask, max_pixels)
    out = run_engine("paste", engine, {"background": bg, "object": fg, "object_mask": fg_mask, "box": target},
                     options, Runtime(seed))
    return to_pil(out)


def harmonize(
    image: ImageLike, mask: MaskLike | None = None, *, obj: ImageLike | None = None,
    box: Box | str | tuple[int, int, int, int] | None = None, object_mask: MaskLike | None = None,
    engine: str = "auto", seed: int = 0, paste_back: bool = True, margin: int | None = None,
    device: str | None = None, dtype: str | None = None, model: str | None = None, progress: bool = False,
    callback: Any = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, **options: Any,
) -> Image.Image:
    """Make a pasted object match its surroundings.

    Either ``image`` is a composite and ``mask`` marks the pasted object, or ``image`` is a
    clean background and ``obj`` + ``box`` (+ ``object_mask``) say what to paste first.
    """
    img = load_image(image, "image", max_pixels)
    background = None
    if obj is not None:
        if box is None:
            raise InputError("harmonize with an object needs --box x0,y0,x1,y1 (where to paste it)")
        fg, fg_mask, target = place_object(img, obj, box, object_mask, max_pixels)
        from diffcompose.methods.classical.paste import place

        background = img
        img, m = place(img, fg, fg_mask, target)
        if not m.any():
            raise InputError(f"the object placed at {target} covers no pixels")
    else:
        if mask is None:
            raise InputError("harmonize needs --mask (the pasted object in IMAGE) or --object and --box")
        m = load_mask(mask, (img.shape[1], img.shape[0]), max_pixels=max_pixels)
    check_mask_coverage(m, operation="harmonization")
    rt = Runtime(seed, device, dtype, model, progress, callback)
    out = run_engine("harmonize", engine, {"image": img, "mask": m, "background": background}, options, rt)
    return _finish(img, out, m, paste_back, margin)


def segment(
    image: ImageLike, box: Box | str | tuple[int, int, int, int], *, engine: str = "classical", seed: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS, **options: Any,
) -> Image.Image:
    """An object mask (mode ``L``, white = object) from a box around it."""
    img = load_image(image, "image", max_pixels)
    target = parse_box(box, (img.shape[1], img.shape[0]))
    mask = run_engine("segment", engine, {"image": img, "box": target}, options, Runtime(seed))
    return to_pil(np.asarray(mask, dtype=bool))
