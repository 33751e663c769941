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


#: Most clicks one ``segment`` request takes (SAM's prompt encoder handles any number; a bound keeps requests small).
MAX_POINTS = 64


@dataclass(frozen=True)
class Points:
    """Click prompts: ``xyl`` float ``(N, 3)`` rows ``[x, y, label]`` (label 1 object, 0 background) in image
    pixels, and ``frame``, the prompts' bounding box; the job also carries ``frame`` as a box the runner cuts
    to the window (``points_frame``), so an engine can map the points into its window."""

    xyl: np.ndarray
    frame: Box


def parse_points(points: Any, size: tuple[int, int]) -> np.ndarray:
    """``"x,y,1;x,y,0"`` or ``[[x, y, label], ...]`` -> float ``(N, 3)``; each point inside the image."""
    example = "give points as x,y,label;x,y,label (label 1: object, 0: background)"
    if isinstance(points, str):
        try:
            rows = [[float(v) for v in part.split(",")] for part in points.replace(" ", "").split(";") if part]
        except ValueError:
            raise InputError(f"bad points {points!r}: {example}") from None
    else:
        try:
            rows = [list(p) for p in points]
        except TypeError:
            raise InputError(f"bad points {points!r}: {example}") from None
    if not rows or len(rows) > MAX_POINTS:
        raise InputError(f"segment takes 1 to {MAX_POINTS} points, got {len(rows)}")
    out = np.zeros((len(rows), 3))
    for i, row in enumerate(rows):
        if len(row) != 3 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number))
                                for v in row):
            raise InputError(f"bad point {row!r}: {example}")
        x, y, label = (float(v) for v in row)
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(f"point coordinates must be finite numbers, got ({row[0]}, {row[1]})")
        if not (0 <= x < size[0] and 0 <= y < size[1]):
            raise InputError(f"point ({row[0]}, {row[1]}) is outside the {size[0]}x{size[1]} image")
        if label not in (0.0, 1.0):
            raise InputError(f"point label must be 1 (object) or 0 (background), got {row[2]!r}")
        out[i] = (x, y, label)
    return out


def prepare_segment(image: ImageLike, box: Box | str | tuple[int, int, int, int] | None = None, *,
                    points: Any = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """An object mask from a box around it and/or clicks (``points``; engines without point
    support, such as GrabCut, need the box). The mask is False outside the box when one is given."""
    img = load_image(image, "image", max_pixels)
    size = (img.shape[1], img.shape[0])
    target = None if box is None else parse_box(box, size)
    xyl = None if points is None else parse_points(points, size)
    if target is None and (xyl is None or not (xyl[:, 2] == 1).any()):
        raise InputError("segment needs --box x0,y0,x1,y1 or at least one object point (--points x,y,1)")
    arrays: dict[str, Any] = {"image": img, "box": target}
    kinds: dict[str, Kind] = {"image": "image", "box": "box"}
    region = target
    if xyl is not None:
        xs, ys = xyl[:, 0].astype(int), xyl[:, 1].astype(int)
        region = Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        if target is not None:
            region = Box(min(region.x0, target.x0), min(region.y0, target.y0), max(region.x1, target.x1),
                         max(region.y1, target.y1))
        arrays.update(points=Points(xyl, region), points_frame=region)
        kinds["points_frame"] = "box"
    return Job("segment", img, arrays, region, kinds, output="mask")


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


def _mask_or_box(mask: MaskLike | None, box: Box | str | tuple[int, int, int, int] | None, size: tuple[int, int],
                 max_pixels: int | None, neither_or_both: str) -> np.ndarray:
    """The region as a bool mask, from exactly one of ``mask`` or ``box`` (a box is its filled rectangle)."""
    if (mask is None) == (box is None):
        raise InputError(neither_or_both)
    if mask is not None:
        return load_mask(mask, size, max_pixels=max_pixels)
    m = np.zeros((size[1], size[0]), dtype=bool)
    m[parse_box(box, size).slices] = True  # type: ignore[arg-type]
    return m


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
    m = _mask_or_box(mask, box, size, max_pixels,
                     "inpaint needs exactly one of --mask (the region's shape) or --box (a rough region)")
    check_mask_coverage(m, operation="inpainting")
    arrays = {"image": img, "mask": m, "prompt": prompt, "negative_prompt": negative_prompt}
    return Job("inpaint", img, arrays, mask_to_box(m), {"image": "image", "mask": "mask"}, m, output="images")


def _reference_object(reference: ImageLike, ref: np.ndarray, reference_mask: MaskLike | None,
                      max_pixels: int | None) -> np.ndarray | None:
    """The reference object's mask: the given one, else the reference's own varying alpha, else ``None``
    (no cut-out known; ``load_image`` already put a transparent background on white)."""
    size = (ref.shape[1], ref.shape[0])
    if reference_mask is not None:
        return load_mask(reference_mask, size, name="reference mask", max_pixels=max_pixels)
    own = _alpha_or_full(reference, size)
    return None if own.all() else own


def prepare_insert(image: ImageLike, mask: MaskLike | None = None, *, reference: ImageLike | None,
                   box: Box | str | tuple[int, int, int, int] | None = None, reference_mask: MaskLike | None = None,
                   shape_mask: MaskLike | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Insert the object of ``reference`` into the target region of the scene ``image``.

    The region is ``mask`` (white) or ``box`` (exactly one). ``reference_mask`` cuts the object
    out of the reference (default: the reference's own alpha, else nothing; AnyDoor refuses
    to run without one). ``shape_mask`` (optional, scene-sized) is the object's wanted shape
    (shape control); it must lie inside the region's bounding box. The original pixels come
    back outside ``mask | shape_mask`` (and the engine's band and seam).
    """
    if reference is None:
        raise InputError("insert needs --reference: a photo of the object to insert")
    img = load_image(image, "image", max_pixels)
    size = (img.shape[1], img.shape[0])
    m = _mask_or_box(mask, box, size, max_pixels,
                     "insert needs exactly one of --mask (the target region) or --box x0,y0,x1,y1")
    check_mask_coverage(m, operation="insertion")
    shape = None
    if shape_mask is not None:
        shape = load_mask(shape_mask, size, name="shape mask", max_pixels=max_pixels)
        target = mask_to_box(m)
        outside = shape.copy()
        outside[target.slices] = False
        if outside.any():
            raise InputError(f"the shape mask reaches outside the target region's box {target}; "
                             "draw it inside the region")
    ref = load_image(reference, "reference", max_pixels)
    ref_mask = _reference_object(reference, ref, reference_mask, max_pixels)
    paste = m if shape is None else m | shape
    arrays = {"image": img, "mask": m, "reference": ref, "reference_mask": ref_mask, "shape_mask": shape}
    kinds: dict[str, Kind] = {"image": "image", "mask": "mask", "shape_mask": "mask"}
    return Job("insert", img, arrays, mask_to_box(paste), kinds, paste, output="images")


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
    TaskSpec("segment", ("image", "box", "points"), prepare_segment,
             "an object mask from a box around it and/or clicks on it"),
    TaskSpec("compose", ("image", "edited_condition", "condition", "condition_type", "mask", "prompt"),
             prepare_compose, "re-shape a pasted object to follow an edited condition map"),
    TaskSpec("paint", ("image", "mask", "reference", "reference_mask"), prepare_paint,
             "fill a region with an object like a reference photo"),
    TaskSpec("inpaint", ("image", "mask", "box", "prompt", "negative_prompt"), prepare_inpaint,
             "fill a region with what a text prompt describes"),
    TaskSpec("insert", ("image", "mask", "box", "reference", "reference_mask", "shape_mask"), prepare_insert,
             "insert the object of a reference photo into a target region"),
)}


#: Largest ``max_pixels`` accepted (a terapixel: far beyond memory, but a finite limit).
MAX_PIXELS_LIMIT = 10**12


def prepare(task: str, inputs: dict[str, Any], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Validate ``inputs`` (keyword names of :data:`TASK_SPECS`) of ``task`` into a :class:`Job`."""
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
                                   or not 1 <= max_pixels <= MAX_PIXELS_LIMIT):
        raise InputError(f"--max-pixels must be a whole number from 1 to {MAX_PIXELS_LIMIT}, got {max_pixels!r}")
    return TASK_SPECS[task].prepare(**inputs, max_pixels=max_pixels)
