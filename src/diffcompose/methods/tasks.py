"""The tasks: what each one takes, how its inputs are validated, what comes back.

A task's ``prepare`` turns what users hand us (paths, PIL images, numpy arrays, box
strings) into a :class:`Job`: the inputs in the internal form of :mod:`diffcompose.inputs`,
the region the window is planned around, how the runner crops each input, and the mask
outside which the original pixels come back (paste-back). Every engine of a task sees the
same validated inputs, so every engine fails the same way on the same bad input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
from PIL import Image

from diffcompose.errors import InputError
from diffcompose.inputs import (
    DEFAULT_MAX_PIXELS, Box, ImageLike, MaskLike, check_mask_coverage, load_image, load_mask, mask_to_box, parse_box,
)
from diffcompose.inputs.images import array_to_uint8, open_pil
from diffcompose.inputs.masks import load_soft_mask

#: How the runner cuts a full-size input to the window: uint8 image, bool mask, float map, box.
Kind = Literal["image", "mask", "soft", "box"]


@dataclass
class Job:
    """A validated request: full-size inputs, the region to work around, what to return."""

    task: str
    image: np.ndarray  # the image results are put back into (output size = its size)
    arrays: dict[str, Any]
    region: Box
    kinds: dict[str, Kind] = field(default_factory=dict)
    paste_mask: np.ndarray | None = None  # original pixels come back outside it (None: no paste-back)
    output: Literal["image", "images", "mask"] = "image"

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    inputs: tuple[str, ...]  # keyword names of the task's inputs (the rest of the keywords are options)
    prepare: Callable[..., Job]
    summary: str


def _image_and_mask(image: ImageLike, mask: MaskLike, max_pixels: int | None, operation: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    img = load_image(image, "image", max_pixels)
    m = load_mask(mask, (img.shape[1], img.shape[0]), max_pixels=max_pixels)
    check_mask_coverage(m, operation=operation)
    return img, m


def prepare_remove(image: ImageLike, mask: MaskLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    img, m = _image_and_mask(image, mask, max_pixels, "removal")
    return Job("remove", img, {"image": img, "mask": m}, mask_to_box(m), {"image": "image", "mask": "mask"}, m)


def _alpha_or_full(obj: ImageLike, size: tuple[int, int]) -> np.ndarray:
    """The object's own alpha as its mask when it has a varying one, else the whole object."""
    pil = open_pil(obj, "object") if isinstance(obj, (str, os.PathLike)) else obj
    has_alpha = (isinstance(pil, Image.Image) and ("A" in pil.mode or "transparency" in pil.info)) or (
        isinstance(pil, np.ndarray) and pil.ndim == 3 and pil.shape[2] in (2, 4))
    if has_alpha:
        # alpha in 0..255 read with the image rule (dtype of an array included), then as a 0..1 map
        alpha = np.asarray(pil.convert("RGBA"))[..., -1] if isinstance(pil, Image.Image) else \
            array_to_uint8(np.asarray(pil), "object")[..., -1]
        if not alpha.any():
            raise InputError("object is fully transparent: nothing to paste")
        m = load_mask(alpha.astype(np.float32) / 255.0, size, name="object alpha", allow_empty=True)
        if m.any() and not m.all():
            return m
    return np.ones((size[1], size[0]), dtype=bool)


def place_object(background: np.ndarray, obj: ImageLike, box: Box | str | tuple[int, int, int, int],
                 object_mask: MaskLike | None, max_pixels: int | None = DEFAULT_MAX_PIXELS
                 ) -> tuple[np.ndarray, np.ndarray, Box]:
    """Validate an object (and its mask or alpha) and a target box on ``background``."""
    target = parse_box(box, (background.shape[1], background.shape[0]))
    fg = load_image(obj, "object", max_pixels)
    fg_size = (fg.shape[1], fg.shape[0])
    if object_mask is not None:
        fg_mask = load_mask(object_mask, fg_size, name="object mask", max_pixels=max_pixels)
    else:
        fg_mask = _alpha_or_full(obj, fg_size)
    return fg, fg_mask, target


def prepare_paste(background: ImageLike, obj: ImageLike, box: Box | str | tuple[int, int, int, int], *,
                  object_mask: MaskLike | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    bg = load_image(background, "background", max_pixels)
    fg, fg_mask, target = place_object(bg, obj, box, object_mask, max_pixels)
    arrays = {"background": bg, "object": fg, "object_mask": fg_mask, "box": target}
    return Job("paste", bg, arrays, target, {"background": "image", "box": "box"})


def prepare_harmonize(image: ImageLike, mask: MaskLike | None = None, *, obj: ImageLike | None = None,
                      box: Box | str | tuple[int, int, int, int] | None = None, object_mask: MaskLike | None = None,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Either ``image`` is a composite and ``mask`` marks the pasted object, or ``obj`` is pasted at ``box`` first."""
    if obj is not None and mask is not None:
        raise InputError("give either --mask (a composite) or --object with --box, not both")
    if obj is None and (box is not None or object_mask is not None):
        given = " and ".join(n for n, v in (("--box", box), ("--object-mask", object_mask)) if v is not None)
        verb = "need" if " and " in given else "needs"
        raise InputError(f"{given} {verb} --object (the object photo to paste into IMAGE)")
    img = load_image(image, "image", max_pixels)
    background = None
    if obj is not None:
        if box is None:
            raise InputError("harmonize with an object needs --box x0,y0,x1,y1 (where to paste it)")
        from diffcompose.regions.place import place

        fg, fg_mask, target = place_object(img, obj, box, object_mask, max_pixels)
        background = img
        img, m = place(img, fg, fg_mask, target)
        if not m.any():
            raise InputError(f"the object placed at {target} covers no pixels")
    else:
        if mask is None:
            raise InputError("harmonize needs --mask (the pasted object in IMAGE) or --object and --box")
        m = load_mask(mask, (img.shape[1], img.shape[0]), max_pixels=max_pixels)
    check_mask_coverage(m, operation="harmonization")
    kinds: dict[str, Kind] = {"image": "image", "mask": "mask", "background": "image"}
    return Job("harmonize", img, {"image": img, "mask": m, "background": background}, mask_to_box(m), kinds, m)


def prepare_segment(image: ImageLike, box: Box | str | tuple[int, int, int, int], *,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    img = load_image(image, "image", max_pixels)
    target = parse_box(box, (img.shape[1], img.shape[0]))
    return Job("segment", img, {"image": img, "box": target}, target, {"image": "image", "box": "box"},
               output="mask")


def prepare_paint(image: ImageLike, mask: MaskLike, reference: ImageLike, *, reference_mask: MaskLike | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    img, m = _image_and_mask(image, mask, max_pixels, "painting")
    ref = load_image(reference, "reference", max_pixels)
    ref_mask = None
    if reference_mask is not None:
        ref_mask = load_mask(reference_mask, (ref.shape[1], ref.shape[0]), name="reference mask",
                             max_pixels=max_pixels)
    arrays = {"image": img, "mask": m, "reference": ref, "reference_mask": ref_mask}
    return Job("paint", img, arrays, mask_to_box(m), {"image": "image", "mask": "mask"}, m, output="images")


def prepare_inpaint(image: ImageLike, mask: MaskLike | None = None, *,
                    box: Box | str | tuple[int, int, int, int] | None = None, prompt: str = "",
                    negative_prompt: str = "", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Text-guided inpainting of ``mask`` (or of ``box``, a rough region) with what ``prompt`` describes."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("inpaint needs --prompt: the text describing what to paint into the region")
    if not isinstance(negative_prompt, str):
        raise InputError(f"--negative-prompt must be text, got {negative_prompt!r}")
    img = load_image(image, "image", max_pixels)
    size = (img.shape[1], img.shape[0])
    if (mask is None) == (box is None):
        raise InputError("inpaint needs exactly one of --mask (the region's shape) or --box (a rough region)")
    if mask is not None:
        m = load_mask(mask, size, max_pixels=max_pixels)
    else:
        target = parse_box(box, size)  # type: ignore[arg-type]
        m = np.zeros((size[1], size[0]), dtype=bool)
        m[target.slices] = True
    check_mask_coverage(m, operation="inpainting")
    arrays = {"image": img, "mask": m, "prompt": prompt, "negative_prompt": negative_prompt}
    return Job("inpaint", img, arrays, mask_to_box(m), {"image": "image", "mask": "mask"}, m, output="images")


def _load_condition(source: ImageLike, size: tuple[int, int], name: str, max_pixels: int | None) -> np.ndarray:
    """A condition map (edges or sketch, white on black) as float32 (H, W) in 0..1 of the image's size."""
    cond = load_soft_mask(source, name, max_pixels)
    if cond.shape != (size[1], size[0]):
        raise InputError(f"{name} is {cond.shape[1]}x{cond.shape[0]} but the image is {size[0]}x{size[1]}; "
                         "they must be the same size")
    if cond.max() <= 0.0:
        raise InputError(f"{name} is empty (all black): it should show edges or strokes in white")
    return cond


def prepare_compose(image: ImageLike, edited_condition: ImageLike, *, condition: ImageLike | None = None,
                    condition_type: str = "canny", mask: MaskLike | None = None, prompt: str = "",
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """``condition``: IMAGE's own condition map (canny is computed when omitted); ``mask``: where change may happen."""
    if condition_type not in ("canny", "sketch"):
        raise InputError(f"--condition-type must be canny or sketch, got {condition_type!r}")
    if not isinstance(prompt, str):
        raise InputError(f"--prompt must be text, got {prompt!r}")
    img = load_image(image, "image", max_pixels)
    size = (img.shape[1], img.shape[0])
    edit = _load_condition(edited_condition, size, "edited condition", max_pixels)
    cond = None if condition is None else _load_condition(condition, size, "condition", max_pixels)
    m = None if mask is None else load_mask(mask, size, max_pixels=max_pixels)
    region = mask_to_box(m) if m is not None else Box(0, 0, *size)
    arrays = {"image": img, "edited_condition": edit, "condition": cond, "condition_type": condition_type,
              "mask": m, "prompt": prompt}
    kinds: dict[str, Kind] = {"image": "image", "edited_condition": "soft", "condition": "soft", "mask": "mask"}
    return Job("compose", img, arrays, region, kinds, m)


TASK_SPECS: dict[str, TaskSpec] = {s.name: s for s in (
    TaskSpec("remove", ("image", "mask"), prepare_remove, "remove an object and fill the hole"),
    TaskSpec("paste", ("background", "obj", "box", "object_mask"), prepare_paste,
             "place an object into a background at a box"),
    TaskSpec("harmonize", ("image", "mask", "obj", "box", "object_mask"), prepare_harmonize,
             "make a pasted object match its surroundings"),
    TaskSpec("segment", ("image", "box"), prepare_segment, "an object mask from a box around it"),
    TaskSpec("compose", ("image", "edited_condition", "condition", "condition_type", "mask", "prompt"),
             prepare_compose, "re-shape a pasted object to follow an edited condition map"),
    TaskSpec("paint", ("image", "mask", "reference", "reference_mask"), prepare_paint,
             "fill a region with an object like a reference photo"),
    TaskSpec("inpaint", ("image", "mask", "box", "prompt", "negative_prompt"), prepare_inpaint,
             "fill a region with what a text prompt describes"),
)}


#: Largest ``max_pixels`` accepted (a terapixel: far beyond memory, but a finite limit).
MAX_PIXELS_LIMIT = 10**12


def prepare(task: str, inputs: dict[str, Any], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Validate ``inputs`` (keyword names of :data:`TASK_SPECS`) of ``task`` into a :class:`Job`."""
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
                                   or not 1 <= max_pixels <= MAX_PIXELS_LIMIT):
        raise InputError(f"--max-pixels must be a whole number from 1 to {MAX_PIXELS_LIMIT}, got {max_pixels!r}")
    return TASK_SPECS[task].prepare(**inputs, max_pixels=max_pixels)
