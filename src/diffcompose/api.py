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
    impl = get_task(name, task)
    opts = build_options(impl, options)
    # Say which engine "auto" picked; an explicit choice needs no echo (keeps stderr quiet).
    log.log(logging.INFO if engine == "auto" else logging.DEBUG, "engine: %s (%s)", name, why)
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
        alpha = np.asarray(pil.convert("RGBA") if isinstance(pil, Image.Image) else pil)[..., -1]
        m = load_mask(alpha, size, name="object alpha", allow_empty=True)
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


def paint(
    image: ImageLike, mask: MaskLike, reference: ImageLike, *, reference_mask: MaskLike | None = None,
    engine: str = "auto", seed: int = 0, paste_back: bool = True, margin: int | None = None,
    device: str | None = None, dtype: str | None = None, model: str | None = None, progress: bool = False,
    callback: Any = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, **options: Any,
) -> Image.Image | list[Image.Image]:
    """Fill ``mask`` (white) with an object that looks like ``reference``, harmonised with the scene.

    ``reference_mask`` (white = the object in the reference) turns the reference's background
    white. Returns one image, or a list when ``num_images`` > 1.
    """
    img = load_image(image, "image", max_pixels)
    m = load_mask(mask, (img.shape[1], img.shape[0]), max_pixels=max_pixels)
    check_mask_coverage(m, operation="painting")
    ref = load_image(reference, "reference", max_pixels)
    ref_mask = None
    if reference_mask is not None:
        ref_mask = load_mask(reference_mask, (ref.shape[1], ref.shape[0]), name="reference mask",
                             max_pixels=max_pixels)
    rt = Runtime(seed, device, dtype, model, progress, callback)
    outs = run_engine("paint", engine, {"image": img, "mask": m, "reference": ref, "reference_mask": ref_mask},
                      options, rt)
    results = [_finish(img, o, m, paste_back, margin) for o in outs]
    return results if len(results) > 1 else results[0]


def _load_condition(source: ImageLike, size: tuple[int, int], name: str, max_pixels: int | None) -> np.ndarray:
    """A condition map (edges or sketch, white on black) as float32 (H, W) in 0..1 of the image's size."""
    from diffcompose.inputs.masks import load_soft_mask

    cond = load_soft_mask(source, name, max_pixels)
    if cond.shape != (size[1], size[0]):
        raise InputError(f"{name} is {cond.shape[1]}x{cond.shape[0]} but the image is {size[0]}x{size[1]}; "
                         "they must be the same size")
    if cond.max() <= 0.0:
        raise InputError(f"{name} is empty (all black): it should show edges or strokes in white")
    return cond


def compose(
    image: ImageLike, edited_condition: ImageLike, *, condition: ImageLike | None = None,
    condition_type: str = "canny", mask: MaskLike | None = None, prompt: str = "", engine: str = "auto",
    seed: int = 0, paste_back: bool = True, margin: int | None = None, device: str | None = None,
    dtype: str | None = None, model: str | None = None, progress: bool = False, callback: Any = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS, **options: Any,
) -> Image.Image:
    """Re-shape the object in ``image`` (pasted there already) to follow ``edited_condition``.

    ``condition`` is the condition map of ``image`` itself (canny edges are computed when it
    is omitted); ``mask`` limits the change to a region (default: the whole image).
    """
    if condition_type not in ("canny", "sketch"):
        raise InputError(f"--condition-type must be canny or sketch, got {condition_type!r}")
    img = load_image(image, "image", max_pixels)
    size = (img.shape[1], img.shape[0])
    edit = _load_condition(edited_condition, size, "edited condition", max_pixels)
    cond = None if condition is None else _load_condition(condition, size, "condition", max_pixels)
    m = None if mask is None else load_mask(mask, size, max_pixels=max_pixels)
    rt = Runtime(seed, device, dtype, model, progress, callback)
    inputs = {"image": img, "edited_condition": edit, "condition": cond, "condition_type": condition_type,
              "mask": m, "prompt": prompt}
    out = run_engine("compose", engine, inputs, options, rt)
    if m is None:
        if out.shape != img.shape:
            raise RuntimeError(f"engine returned {out.shape}, expected {img.shape}")
        return to_pil(out)
    return _finish(img, out, m, paste_back, margin)
