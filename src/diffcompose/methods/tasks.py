"""The tasks: what each one takes, how its inputs are validated, what comes back.

Each task is one :class:`TaskSpec`: its inputs declared once, typed (:class:`InputSpec`:
keyword, kind, required, help, CLI and HTTP names; :class:`OneOf` groups such as
``mask | box``), a few task-level facts (what it returns, whether paste-back and the device
flags apply, its help), and its ``prepare`` function. The CLI commands, the HTTP schema and
its validation, the batch manifest and the Python API are all generated from these specs,
so adding a task is its spec and its ``prepare`` (:func:`register_task`).

A task's ``prepare`` is the one place its inputs are validated: it turns what users hand us
(paths, PIL images, numpy arrays, box strings) into a :class:`Job`: the inputs in the
internal form of :mod:`diffcompose.inputs`, the region the window is planned around, how
the runner crops each input, and the mask outside which the original pixels come back
(paste-back). Every engine of a task sees the same validated inputs, so every engine fails
the same way on the same bad input.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
from PIL import Image

from diffcompose.errors import InputError, named, shown
from diffcompose.inputs import (
    DEFAULT_MAX_PIXELS, Box, ImageLike, MaskLike, check_mask_coverage, load_image, load_mask, mask_to_box, parse_box,
)
from diffcompose.inputs.images import array_to_uint8, open_pil
from diffcompose.inputs.masks import load_soft_mask
from diffcompose.methods.options import check_text

#: How the runner cuts a full-size input to the window: uint8 image, bool mask, float map, box.
Kind = Literal["image", "mask", "soft", "box"]

#: What a task returns: one image, one image or several (``num_images``), or a mask.
Output = Literal["image", "images", "mask"]


@dataclass
class Job:
    """A validated request: full-size inputs, the region to work around, what to return."""

    task: str
    image: np.ndarray  # the image results are put back into (output size = its size)
    arrays: dict[str, Any]
    region: Box
    kinds: dict[str, Kind] = field(default_factory=dict)
    paste_mask: np.ndarray | None = None  # original pixels come back outside it (None: no paste-back)
    output: Output = "image"  # set from the task's spec by :func:`prepare`
    #: The inputs before the project's reading rules, for an engine that reads them its own way
    #: (:meth:`~diffcompose.methods.engine.Engine.read`): see :func:`insert_readings`.
    readings: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


# ---------------------------------------------------------------------------- the spec

#: What a task input is: a picture, a mask (white = yes), a box, click points, free text, one of fixed words.
InputKind = Literal["image", "mask", "box", "points", "text", "choice"]

#: Kinds read from a file: a path on the CLI and in a batch manifest, an upload over HTTP. The rest are values.
FILE_KINDS = frozenset({"image", "mask"})


@dataclass(frozen=True)
class InputSpec:
    """One input of a task, as every consumer needs to know it.

    ``keyword`` is the name ``prepare``, the Python API and a batch manifest use. ``help`` is
    what ``--help`` says (it may name other flags); ``http_help`` is what ``/api/tasks`` and
    the web page say (default: the kind's own format for boxes and points, the choices, or
    the keyword). ``cli`` is an upper-case metavar for a positional argument (``IMAGE``) or
    the flag (default ``--`` + the keyword with dashes); ``field`` is the HTTP name (default:
    the keyword). Defaults are ``prepare``'s own (not repeated here).

    ``opt_in``: an optional input that only some engines use (a sketch that shapes the fill).
    An engine takes it only when its registration lists it (``EngineInfo.takes``); every
    other engine refuses it in one line rather than silently ignore what the user drew,
    ``auto`` picks among the engines that take it, and an engine that does not take it
    never sees the keyword.
    """

    keyword: str
    kind: InputKind
    required: bool = False
    help: str = ""
    http_help: str = ""
    cli: str = ""
    field: str = ""
    choices: tuple[str, ...] = ()
    opt_in: bool = False

    def __post_init__(self) -> None:
        if (self.kind == "choice") != bool(self.choices):
            raise ValueError(f"input {self.keyword}: a choice input, and only one, lists its choices")
        if self.opt_in and self.required:
            raise ValueError(f"input {self.keyword}: an opt-in input is optional")

    @property
    def flag(self) -> str:
        """The CLI flag (``--object``), or the metavar of a positional argument (``IMAGE``)."""
        return self.cli or "--" + self.keyword.replace("_", "-")

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")

    @property
    def field_name(self) -> str:
        """The multipart/JSON name over HTTP (``obj`` -> ``object``)."""
        return self.field or self.keyword

    @property
    def named(self) -> str:
        """The input's name in a message: its flag (or metavar) on the CLI, its field over HTTP."""
        return named(self.flag, self.field_name)

    @property
    def is_file(self) -> bool:
        return self.kind in FILE_KINDS

    @property
    def about(self) -> str:
        """What the HTTP API says about the input."""
        if self.http_help:
            return self.http_help
        if self.kind in _FORMATS:
            return _FORMATS[self.kind]
        if self.choices:
            return " or ".join(self.choices)
        return self.keyword.replace("_", " ")


#: How a box and click points are written over HTTP (the CLI help of those inputs says it for a shell).
_FORMATS = {"box": "x0,y0,x1,y1 in pixels, end-exclusive",
            "points": "[[x, y, label], ...]: label 1 = on the object, 0 = background"}


@dataclass(frozen=True)
class OneOf:
    """Exactly one of ``alternatives`` is given; an alternative is one input, or several given together.

    ``prepare`` enforces it (with its own message); the CLI turns a group of single inputs
    into a required mutually exclusive group.
    """

    alternatives: tuple[tuple[str, ...], ...]

    @property
    def single(self) -> bool:
        """Every alternative is one input (argparse can say it)."""
        return all(len(a) == 1 for a in self.alternatives)

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(k for a in self.alternatives for k in a)


def one_of(*alternatives: str | tuple[str, ...]) -> OneOf:
    """``one_of("mask", "box")``; ``one_of("mask", ("obj", "box"))``: the mask, or the object and the box."""
    return OneOf(tuple((a,) if isinstance(a, str) else tuple(a) for a in alternatives))


@dataclass(frozen=True)
class TaskSpec:
    """A task: its inputs, its ``prepare``, and what the CLI and the HTTP API say about it.

    ``summary``: one line (``/api/tasks``; the CLI command's line in ``--help`` unless
    ``cli_help`` is given). ``description``: the command's ``--help`` text. ``output``: what
    it returns (``images`` tasks name several outputs ``OUT_<k>``). ``paste_back``: whether
    original pixels come back outside the region (``--no-paste-back``, ``--margin``).
    ``devices``: whether its engines take ``--device``, ``--dtype`` and ``--model``.
    ``mask_output``: the help of ``--mask-output`` for a task whose engines may predict the
    object's mask (empty: none).
    """

    name: str
    params: tuple[InputSpec, ...]
    prepare: Callable[..., Job]
    summary: str
    output: Output = "image"
    one_of: tuple[OneOf, ...] = ()
    paste_back: bool = True
    devices: bool = True
    cli_help: str = ""
    description: str = ""
    mask_output: str = ""

    def __post_init__(self) -> None:
        """The spec and its ``prepare`` must agree, so neither can drift from the other."""
        keywords = self.inputs
        if len(set(keywords)) != len(keywords):
            raise ValueError(f"task {self.name}: an input is declared twice")
        params = inspect.signature(self.prepare).parameters
        declared = set(keywords) | {"max_pixels"}
        if set(params) != declared:
            raise ValueError(f"task {self.name}: prepare takes {sorted(set(params) - {'max_pixels'})}, "
                             f"the spec declares {sorted(keywords)}")
        grouped = {k for g in self.one_of for k in g.keywords}
        if not grouped <= set(keywords):
            raise ValueError(f"task {self.name}: one_of names unknown inputs {sorted(grouped - set(keywords))}")
        for p in self.params:
            if params[p.keyword].default is inspect.Parameter.empty and not p.required:
                raise ValueError(f"task {self.name}: prepare has no default for {p.keyword}, so it is required")

    @property
    def inputs(self) -> tuple[str, ...]:
        """The inputs' keywords (every other keyword of a run is an engine option)."""
        return tuple(p.keyword for p in self.params)

    def param(self, keyword: str) -> InputSpec:
        return next(p for p in self.params if p.keyword == keyword)

    @property
    def opt_in(self) -> tuple[str, ...]:
        """The keywords of its opt-in inputs (:attr:`InputSpec.opt_in`)."""
        return tuple(p.keyword for p in self.params if p.opt_in)

    def given_opt_in(self, values: dict[str, Any]) -> tuple[str, ...]:
        """The opt-in inputs given (not ``None``) in ``values`` (inputs by keyword, or a job's arrays)."""
        return tuple(k for k in self.opt_in if values.get(k) is not None)

    def defaults(self) -> dict[str, Any]:
        """``prepare``'s default of each optional input (what the CLI passes when a flag is not given)."""
        params = inspect.signature(self.prepare).parameters
        return {k: params[k].default for k in self.inputs if params[k].default is not inspect.Parameter.empty}


def _n(task: str, keyword: str) -> str:
    """Input ``keyword`` of ``task`` as a message names it (:attr:`InputSpec.named`: ``--mask`` / ``mask``)."""
    return get_task(task).param(keyword).named


def _image_and_mask(image: ImageLike, mask: MaskLike, max_pixels: int | None, operation: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    img = load_image(image, "image", max_pixels)
    m = load_mask(mask, (img.shape[1], img.shape[0]), max_pixels=max_pixels)
    check_mask_coverage(m, operation=operation)
    return img, m


def prepare_remove(image: ImageLike, mask: MaskLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    img, m = _image_and_mask(image, mask, max_pixels, "removal")
    return Job("remove", img, {"image": img, "mask": m}, mask_to_box(m), {"image": "image", "mask": "mask"}, m)


def _decoded_once(source: ImageLike, name: str, max_pixels: int | None) -> ImageLike:
    """A path opened and decoded (EXIF orientation applied) here, once, so that an image and its
    alpha are read from one decode under the caller's pixel limit; anything else as it is."""
    return open_pil(source, name, max_pixels) if isinstance(source, (str, os.PathLike)) else source


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
    obj = _decoded_once(obj, "object", max_pixels)
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
    def n(keyword: str) -> str:
        return _n("harmonize", keyword)

    if obj is not None and mask is not None:
        raise InputError(f"give either {n('mask')} (a composite) or {n('obj')} with {n('box')}, not both")
    if obj is None and (box is not None or object_mask is not None):
        given = " and ".join(n(k) for k, v in (("box", box), ("object_mask", object_mask)) if v is not None)
        verb = "need" if " and " in given else "needs"
        raise InputError(f"{given} {verb} {n('obj')} (the object photo to paste into {n('image')})",
                         field=get_task("harmonize").param("obj").field_name)
    img = load_image(image, "image", max_pixels)
    background = None
    if obj is not None:
        if box is None:
            raise InputError(f"harmonize with an object needs {n('box')} x0,y0,x1,y1 (where to paste it)")
        from diffcompose.regions.place import place

        fg, fg_mask, target = place_object(img, obj, box, object_mask, max_pixels)
        background = img
        img, m = place(img, fg, fg_mask, target)
        if not m.any():
            raise InputError(f"the object placed at {target} covers no pixels")
    else:
        if mask is None:
            raise InputError(f"harmonize needs {n('mask')} (the pasted object in {n('image')}) or {n('obj')} and "
                             f"{n('box')}")
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
            raise InputError(f"bad points {shown(points)}: {example}") from None
    else:
        try:
            rows = [list(p) for p in points]
        except TypeError:
            raise InputError(f"bad points {shown(points)}: {example}") from None
    if not rows or len(rows) > MAX_POINTS:
        raise InputError(f"segment takes 1 to {MAX_POINTS} points, got {len(rows)}")
    out = np.zeros((len(rows), 3))
    for i, row in enumerate(rows):
        if len(row) != 3 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number))
                                for v in row):
            raise InputError(f"bad point {shown(row)}: {example}")
        try:
            x, y, label = (float(v) for v in row)
        except OverflowError:  # an integer beyond any float
            x = y = label = np.inf
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(f"point coordinates must be finite numbers, got ({shown(row[0])}, {shown(row[1])})")
        if not (0 <= x < size[0] and 0 <= y < size[1]):
            raise InputError(f"point ({shown(row[0])}, {shown(row[1])}) is outside the {size[0]}x{size[1]} image")
        if label not in (0.0, 1.0):
            raise InputError(f"point label must be 1 (object) or 0 (background), got {shown(row[2])}")
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
        raise InputError(f"segment needs {_n('segment', 'box')} x0,y0,x1,y1 or at least one object point "
                         f"({_n('segment', 'points')} x,y,1)")
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
    return Job("segment", img, arrays, region, kinds)


def prepare_paint(image: ImageLike, mask: MaskLike, reference: ImageLike, *, reference_mask: MaskLike | None = None,
                  sketch: ImageLike | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """``sketch`` (opt-in): white strokes on black, IMAGE's size, the shape the fill should follow."""
    img, m = _image_and_mask(image, mask, max_pixels, "painting")
    ref = load_image(reference, "reference", max_pixels)
    ref_mask = None
    if reference_mask is not None:
        ref_mask = load_mask(reference_mask, (ref.shape[1], ref.shape[0]), name="reference mask",
                             max_pixels=max_pixels)
    strokes = _load_sketch(sketch, img, max_pixels)
    arrays = {"image": img, "mask": m, "reference": ref, "reference_mask": ref_mask, "sketch": strokes}
    return Job("paint", img, arrays, mask_to_box(m), {"image": "image", "mask": "mask", "sketch": "soft"}, m)


def _load_sketch(sketch: ImageLike | None, image: np.ndarray, max_pixels: int | None) -> np.ndarray | None:
    """A sketch as a float32 (H, W) map in 0..1 of the image's size (white = stroke), or ``None``.

    It is cut to the window as a condition map (``soft``: 1-px strokes survive a shrink)."""
    if sketch is None:
        return None
    return _load_condition(sketch, (image.shape[1], image.shape[0]), "sketch", max_pixels)


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
                    negative_prompt: str = "", stroke: ImageLike | None = None,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Text-guided inpainting of ``mask`` (or of ``box``, a rough region) with what ``prompt`` describes.

    ``stroke`` (opt-in): IMAGE's size, coloured strokes where the fill should take their colour and
    layout; only its non-black pixels inside the region count (black, or anything outside, is none)."""
    if not check_text(_n("inpaint", "prompt"), prompt).strip():
        raise InputError(f"inpaint needs {_n('inpaint', 'prompt')}: the text describing what to paint into the region")
    check_text(_n("inpaint", "negative_prompt"), negative_prompt)
    img = load_image(image, "image", max_pixels)
    size = (img.shape[1], img.shape[0])
    m = _mask_or_box(mask, box, size, max_pixels, f"inpaint needs exactly one of {_n('inpaint', 'mask')} (the "
                     f"region's shape) or {_n('inpaint', 'box')} (a rough region)")
    check_mask_coverage(m, operation="inpainting")
    arrays = {"image": img, "mask": m, "prompt": prompt, "negative_prompt": negative_prompt,
              "stroke": _load_stroke(stroke, img, max_pixels)}
    kinds: dict[str, Kind] = {"image": "image", "mask": "mask", "stroke": "image"}
    return Job("inpaint", img, arrays, mask_to_box(m), kinds, m)


def _load_stroke(stroke: ImageLike | None, image: np.ndarray, max_pixels: int | None) -> np.ndarray | None:
    """A coloured stroke image as uint8 RGB of the image's size, or ``None`` (cut to the window as an image)."""
    if stroke is None:
        return None
    colours = load_image(stroke, "stroke", max_pixels)
    if colours.shape[:2] != image.shape[:2]:
        raise InputError(f"the stroke image is {colours.shape[1]}x{colours.shape[0]}, the image "
                         f"{image.shape[1]}x{image.shape[0]}: draw the strokes on a copy of the image's size")
    return colours


def _reference_object(reference: ImageLike, ref: np.ndarray, reference_mask: MaskLike | None,
                      max_pixels: int | None) -> np.ndarray | None:
    """The reference object's mask: the given one, else the reference's own varying alpha, else ``None``
    (no cut-out known; ``load_image`` already put a transparent background on white)."""
    size = (ref.shape[1], ref.shape[0])
    if reference_mask is not None:
        return load_mask(reference_mask, size, name="reference mask", max_pixels=max_pixels)
    own = _alpha_or_full(reference, size)
    return None if own.all() else own


def _colour_and_alpha(source: ImageLike, max_pixels: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """An image's colour as stored (uint8 RGB, its transparent pixels *not* put on white) and its
    alpha (uint8), or ``None`` when it has no alpha."""
    pil = open_pil(source, "reference", max_pixels) if isinstance(source, (str, os.PathLike)) else source
    if isinstance(pil, Image.Image) and ("A" in pil.mode or "transparency" in pil.info):
        rgba = np.asarray(pil.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    if isinstance(pil, np.ndarray) and pil.ndim == 3 and pil.shape[2] in (2, 4):
        a = array_to_uint8(np.asarray(pil), "reference")
        rgb = a[..., :3] if a.shape[2] == 4 else np.repeat(a[..., :1], 3, axis=2)
        return np.ascontiguousarray(rgb), np.ascontiguousarray(a[..., -1])
    return None


def insert_readings(reference: ImageLike, mask: MaskLike | None, reference_mask: MaskLike | None,
                    shape_mask: MaskLike | None, max_pixels: int | None) -> dict[str, np.ndarray]:
    """``insert``'s inputs before the project's rules: each given mask's levels (float32 0..1, before
    the 0.5 threshold; ``mask``, ``shape_mask``, ``reference_mask``, the reference's alpha standing
    for the last when none is given) and, for a reference with transparency, its colour as stored
    (``reference_rgb``, not put on white). AnyDoor reads them as its public code does."""
    out = {}
    for key, source in (("mask", mask), ("shape_mask", shape_mask), ("reference_mask", reference_mask)):
        if source is not None:
            out[key] = load_soft_mask(source, key.replace("_", " "), max_pixels)
    own = _colour_and_alpha(reference, max_pixels)
    if own is not None:
        out["reference_rgb"] = own[0]
        if reference_mask is None:
            out["reference_mask"] = own[1].astype(np.float32) / 255.0
    return out


def prepare_insert(image: ImageLike, mask: MaskLike | None = None, *, reference: ImageLike | None,
                   box: Box | str | tuple[int, int, int, int] | None = None, reference_mask: MaskLike | None = None,
                   shape_mask: MaskLike | None = None, sketch: ImageLike | None = None,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Insert the object of ``reference`` into the target region of the scene ``image``.

    The region is ``mask`` (white) or ``box`` (exactly one). ``reference_mask`` cuts the object
    out of the reference (default: the reference's own alpha, else nothing; AnyDoor refuses
    to run without one). ``shape_mask`` (optional, scene-sized) is the object's wanted shape
    (shape control); it must lie inside the region's bounding box. The original pixels come
    back outside ``mask | shape_mask`` (and the engine's band and seam). ``sketch`` (opt-in,
    scene-sized, white strokes on black) is the object's outline and inner lines.
    """
    if reference is None:
        raise InputError(f"insert needs {_n('insert', 'reference')}: a photo of the object to insert")
    img = load_image(image, "image", max_pixels)
    size = (img.shape[1], img.shape[0])
    m = _mask_or_box(mask, box, size, max_pixels, f"insert needs exactly one of {_n('insert', 'mask')} (the target "
                     f"region) or {_n('insert', 'box')} x0,y0,x1,y1")
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
    reference = _decoded_once(reference, "reference", max_pixels)
    ref = load_image(reference, "reference", max_pixels)
    ref_mask = _reference_object(reference, ref, reference_mask, max_pixels)
    paste = m if shape is None else m | shape
    arrays = {"image": img, "mask": m, "reference": ref, "reference_mask": ref_mask, "shape_mask": shape,
              "sketch": _load_sketch(sketch, img, max_pixels)}
    kinds: dict[str, Kind] = {"image": "image", "mask": "mask", "shape_mask": "mask", "sketch": "soft"}
    readings = insert_readings(reference, mask, reference_mask, shape_mask, max_pixels)
    return Job("insert", img, arrays, mask_to_box(paste), kinds, paste, readings=readings)


def _load_condition(source: ImageLike, size: tuple[int, int], name: str, max_pixels: int | None) -> np.ndarray:
    """A condition map (edges or sketch, white on black) as float32 (H, W) in 0..1 of the image's size."""
    cond = load_soft_mask(source, name, max_pixels)
    if cond.shape != (size[1], size[0]):
        raise InputError(f"{name} is {cond.shape[1]}x{cond.shape[0]} but the image is {size[0]}x{size[1]}; "
                         "they must be the same size")
    if cond.max() <= 0.0:
        raise InputError(f"{name} is empty (all black): it should show edges or strokes in white")
    return cond


#: Kinds of condition map ``compose`` follows (each picks its adapter).
CONDITION_TYPES = ("canny", "sketch")


def prepare_compose(image: ImageLike, edited_condition: ImageLike, *, condition: ImageLike | None = None,
                    condition_type: str = "canny", mask: MaskLike | None = None, prompt: str = "",
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """``condition``: IMAGE's own condition map (canny is computed when omitted); ``mask``: where change may happen."""
    if condition_type not in CONDITION_TYPES:
        raise InputError(f"{_n('compose', 'condition_type')} must be {' or '.join(CONDITION_TYPES)}, got "
                         f"{shown(condition_type)}")
    check_text(_n("compose", "prompt"), prompt)
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



# ---------------------------------------------------------------------------- outpainting

#: Most pixels one side may grow by (larger requests are refused before any memory is taken).
MAX_EXTEND = 16384


def _number(text: str, what: str, example: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what}: {shown(text)} is not a number; {example}") from None
    if not math.isfinite(value):
        raise InputError(f"{what}: {shown(text)} is not a finite number; {example}")
    return value


def parse_extend(extend: Any) -> tuple[int, int, int, int]:
    """``"L,T,R,B"`` (or one number for every side, or a sequence) -> whole pixels per side, each
    0..:data:`MAX_EXTEND`, at least one above 0."""
    flag = _n("outpaint", "extend")
    example = f"give {flag} L,T,R,B in pixels (e.g. 0,0,256,0), or one number for every side"
    if isinstance(extend, str):
        parts = [p for p in extend.replace(" ", "").split(",")]
        values = [_number(p, flag, example) for p in parts]
    elif isinstance(extend, (list, tuple, np.ndarray)) and not isinstance(extend, (bytes, bytearray)):
        values = list(np.asarray(extend, dtype=object).ravel())
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or \
                    not math.isfinite(float(v)):
                raise InputError(f"{flag}: {shown(v)} is not a finite number; {example}")
    else:
        raise InputError(f"{flag} must be text L,T,R,B or four numbers, got {shown(extend)}; {example}")
    if len(values) == 1:
        values = values * 4
    if len(values) != 4:
        raise InputError(f"{flag} takes 4 values (left, top, right, bottom) or 1, got {len(values)}; {example}")
    sides = []
    for v in values:
        if float(v) != int(float(v)) or not 0 <= float(v) <= MAX_EXTEND:
            raise InputError(f"{flag} values are whole pixels from 0 to {MAX_EXTEND}, got {shown(v)}; {example}")
        sides.append(int(float(v)))
    if sum(sides) == 0:
        raise InputError(f"{flag} grows no side (all zero); {example}")
    return sides[0], sides[1], sides[2], sides[3]


def parse_aspect(aspect: Any) -> float:
    """``"W:H"`` (or a positive number, width / height) -> the wanted width / height ratio."""
    flag = _n("outpaint", "aspect")
    example = f"give {flag} W:H, e.g. 16:9"
    if isinstance(aspect, bool) or not isinstance(aspect, (str, int, float, np.integer, np.floating)):
        raise InputError(f"{flag} must be text W:H, got {shown(aspect)}; {example}")
    parts = aspect.replace(" ", "").split(":") if isinstance(aspect, str) else [str(float(aspect)), "1"]
    if len(parts) != 2:
        raise InputError(f"{flag} must be W:H, got {shown(aspect)}; {example}")
    w, h = (_number(p, flag, example) for p in parts)
    if w <= 0 or h <= 0 or not 1e-3 <= w / h <= 1e3:
        raise InputError(f"{flag} must be two positive numbers with a ratio from 1:1000 to 1000:1, "
                         f"got {shown(aspect)}")
    return w / h


def aspect_extend(size: tuple[int, int], ratio: float) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` growing the shorter side(s) of ``size`` evenly to ``ratio`` (width / height)."""
    w, h = size
    if w / h < ratio:
        extra = round(h * ratio) - w
        left = extra // 2
        sides = (left, 0, extra - left, 0)
    else:
        extra = round(w / ratio) - h
        top = extra // 2
        sides = (0, top, 0, extra - top)
    if sum(sides) <= 0:
        raise InputError(f"the image ({w}x{h}) already has that aspect ratio: nothing to outpaint")
    return sides


def grow_canvas(image: np.ndarray, sides: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The grown canvas and its new area (True). The new pixels repeat the nearest edge: what a preview
    shows before the fill, and never seen by an engine that masks its input's region."""
    left, top, right, bottom = sides
    canvas = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="edge")
    new = np.ones(canvas.shape[:2], dtype=bool)
    new[top:top + image.shape[0], left:left + image.shape[1]] = False
    return canvas, new


def prepare_outpaint(image: ImageLike, extend: Any = None, aspect: Any = None, *,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Grow ``image``'s canvas by ``extend`` (pixels per side) or to ``aspect``; the new area is the region.

    The output has the grown canvas's size; the original pixels sit at ``(left, top)`` in it
    and come back unchanged beyond the seam (``--margin``; 0 keeps every one).
    """
    if (extend is None) == (aspect is None):
        raise InputError(f"outpaint needs exactly one of {_n('outpaint', 'extend')} L,T,R,B (pixels per side) or "
                         f"{_n('outpaint', 'aspect')} W:H")
    img = load_image(image, "image", max_pixels)
    size = (img.shape[1], img.shape[0])
    sides = parse_extend(extend) if extend is not None else aspect_extend(size, parse_aspect(aspect))
    new_w, new_h = size[0] + sides[0] + sides[2], size[1] + sides[1] + sides[3]
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if new_w * new_h > limit:
        raise InputError(f"the outpainted canvas would be {new_w}x{new_h} = {new_w * new_h} pixels, over the limit "
                         f"of {limit} (--max-pixels); extend less")
    canvas, new = grow_canvas(img, sides)
    arrays = {"image": canvas, "mask": new, "extend": sides}
    return Job("outpaint", canvas, arrays, mask_to_box(new), {"image": "image", "mask": "mask"}, new)


# ---------------------------------------------------------------------------- the tasks

# What the HTTP API says about inputs several tasks share.
_TO_EDIT = "the image to edit"
_REGION = "white = the region to change"
_OBJECT = "white = the object"
_REFERENCE = "a photo of the object to paint in"
_PROMPT = "text describing what to paint"
_SKETCH = "white strokes on black, the image's size: the lines the fill should follow (only some engines take one)"

TASK_SPECS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add (or replace) a task: the CLI, the HTTP API, batch and the Python API offer it from now on
    (to the engines that register for it).

    An input name (keyword, or HTTP field) means one kind in every task: the request JSON and
    a batch manifest read an input by its name.
    """
    for other in TASK_SPECS.values():
        if other.name == spec.name:
            continue
        for mine in spec.params:
            for theirs in other.params:
                same = mine.keyword == theirs.keyword or mine.field_name == theirs.field_name
                if same and mine.kind != theirs.kind:
                    raise ValueError(f"task {spec.name}: input {mine.keyword} is a {mine.kind} but "
                                     f"{theirs.keyword} of {other.name} is a {theirs.kind}")
    TASK_SPECS[spec.name] = spec
    return spec


def unregister_task(name: str) -> None:
    TASK_SPECS.pop(name, None)


def get_task(name: str) -> TaskSpec:
    try:
        return TASK_SPECS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown task {shown(name)}; tasks: {', '.join(TASK_SPECS)}") from None


for _spec in (
    TaskSpec("remove", (
        InputSpec("image", "image", True, cli="IMAGE", http_help=_TO_EDIT),
        InputSpec("mask", "mask", True, "white = the object to remove (any size-matched mask file)", _REGION),
    ), prepare_remove, "remove an object and fill the hole",
        cli_help="remove an object and fill the hole from its surroundings",
        description="Remove the object under MASK (white) from IMAGE."),
    TaskSpec("paste", (
        InputSpec("background", "image", True, cli="BACKGROUND", field="image", http_help="the background image"),
        InputSpec("obj", "image", True, "the object photo (its alpha is used as mask if any)", "the object photo",
                  cli="--object", field="object"),
        InputSpec("object_mask", "mask", False, "white = the object in the object photo", _OBJECT),
        InputSpec("box", "box", True, "target box x0,y0,x1,y1 in background pixels"),
    ), prepare_paste, "place an object into a background at a box", paste_back=False, devices=False,
        description="Paste OBJECT (cut out by --object-mask or its alpha) into BACKGROUND inside --box, scaled to "
                    "fit and keeping its aspect ratio."),
    TaskSpec("harmonize", (
        InputSpec("image", "image", True, cli="IMAGE", http_help=_TO_EDIT),
        InputSpec("mask", "mask", False, "white = the pasted object in IMAGE", _REGION),
        InputSpec("obj", "image", False, "object photo to paste first (IMAGE is then the background)",
                  "the object photo", cli="--object", field="object"),
        InputSpec("object_mask", "mask", False, "white = the object in the object photo", _OBJECT),
        InputSpec("box", "box", False, "where to paste --object: x0,y0,x1,y1"),
    ), prepare_harmonize, "make a pasted object match its surroundings", one_of=(one_of("mask", ("obj", "box")),),
        description="Harmonize the object marked by --mask in composite IMAGE, or paste --object at --box into "
                    "background IMAGE first."),
    TaskSpec("segment", (
        InputSpec("image", "image", True, cli="IMAGE", http_help=_TO_EDIT),
        InputSpec("box", "box", False, "box around the object: x0,y0,x1,y1"),
        InputSpec("points", "points", False, "clicks x,y,label;x,y,label (label 1: on the object, 0: background; "
                                             "quote it for the shell)"),
    ), prepare_segment, "an object mask from a box around it and/or clicks on it", output="mask", paste_back=False,
        cli_help="an object mask from a box around it and/or clicks on it",
        description="Write a mask (white = object) of the object inside --box and/or under --points (an engine "
                    "that takes no clicks needs --box and ignores points)."),
    TaskSpec("compose", (
        InputSpec("image", "image", True, "the image, object already pasted in", _TO_EDIT, cli="IMAGE"),
        InputSpec("edited_condition", "image", True,
                  "the wanted condition map (white edges/strokes on black), IMAGE's size", "the edited condition map"),
        InputSpec("condition", "image", False, "IMAGE's own condition map (default for canny: computed with OpenCV)",
                  "the image's own condition map (edges or sketch, white on black)"),
        InputSpec("condition_type", "choice", False,
                  "kind of condition map, which picks the condition model (default: canny)", choices=CONDITION_TYPES),
        InputSpec("mask", "mask", False, "white = the region allowed to change (default: all)", _REGION),
        InputSpec("prompt", "text", False, "what the object is, e.g. 'A toy.'", _PROMPT),
    ), prepare_compose, "re-shape a pasted object to follow an edited condition map",
        cli_help="re-shape a pasted object to follow an edited edge map or sketch",
        description="Semantic composition: change IMAGE so that its condition map (canny edges or a sketch) becomes "
                    "--edited-condition, keeping its appearance."),
    TaskSpec("paint", (
        InputSpec("image", "image", True, cli="IMAGE", http_help=_TO_EDIT),
        InputSpec("mask", "mask", True, "white = the region to fill", _REGION),
        InputSpec("reference", "image", True, "photo of the object to paint in", _REFERENCE),
        InputSpec("reference_mask", "mask", False,
                  "white = the object in the reference (its background is turned white)", _OBJECT),
        InputSpec("sketch", "image", False, "white strokes on black, IMAGE's size: the lines the fill should follow "
                                            "inside the mask", _SKETCH,
                  opt_in=True),
    ), prepare_paint, "fill a region with an object like a reference photo", output="images",
        cli_help="fill a masked region with an object like a reference photo",
        description="Fill the white region of --mask in IMAGE with an object that looks like --reference, "
                    "harmonised with the scene."),
    TaskSpec("inpaint", (
        InputSpec("image", "image", True, cli="IMAGE", http_help=_TO_EDIT),
        InputSpec("mask", "mask", False, "white = the region to fill, in its exact shape", _REGION),
        InputSpec("box", "box", False, "a rough region x0,y0,x1,y1"),
        InputSpec("prompt", "text", True, "what to paint, e.g. 'a red vintage armchair'", _PROMPT),
        InputSpec("negative_prompt", "text", False, "what to avoid (default: none)"),
        InputSpec("stroke", "image", False, "coloured strokes on black, IMAGE's size: colours and layout the fill "
                                            "should follow inside the region (engines that take one: see --engine)",
                  "coloured strokes on black, the image's size (only some engines take one)", opt_in=True),
    ), prepare_inpaint, "fill a region with what a text prompt describes", output="images",
        one_of=(one_of("mask", "box"),),
        cli_help="fill a region with what a text prompt describes",
        description="Fill the white region of --mask (or --box, a rough region) in IMAGE with what --prompt "
                    "describes, keeping everything else.",
        mask_output="also write the object mask the engine predicted; only its pixels were repainted"),
    TaskSpec("insert", (
        InputSpec("image", "image", True, cli="SCENE", http_help=_TO_EDIT),
        InputSpec("mask", "mask", False, "white = the target region", _REGION),
        InputSpec("box", "box", False, "the target region x0,y0,x1,y1"),
        InputSpec("reference", "image", True, "photo of the object to insert", _REFERENCE),
        InputSpec("reference_mask", "mask", False,
                  "white = the object in the reference (default: its alpha, if any; some engines need one)", _OBJECT),
        InputSpec("shape_mask", "mask", False,
                  "scene-sized mask of the shape the object should take, inside the region (shape control)", _OBJECT),
        InputSpec("sketch", "image", False, "white strokes on black, SCENE's size: the object's outline and lines "
                                            "inside the region", _SKETCH,
                  opt_in=True),
    ), prepare_insert, "insert the object of a reference photo into a target region", output="images",
        one_of=(one_of("mask", "box"),),
        cli_help="insert the object of a reference photo into a region",
        description="Insert the object of --reference into the white region of --mask (or into --box) of SCENE, "
                    "fitted to the region and made to belong to the scene."),
    TaskSpec("outpaint", (
        InputSpec("image", "image", True, cli="IMAGE", http_help=_TO_EDIT),
        InputSpec("extend", "text", False, "pixels to add per side: L,T,R,B (e.g. 0,0,256,0), or one number for all",
                  "pixels to add per side: left,top,right,bottom"),
        InputSpec("aspect", "text", False, "grow the shorter side(s) evenly to this aspect ratio W:H (e.g. 16:9)",
                  "the aspect ratio W:H to grow the canvas to"),
    ), prepare_outpaint, "extend the canvas and fill the new area from the picture",
        one_of=(one_of("extend", "aspect"),),
        cli_help="extend the canvas (pixels per side or to an aspect ratio) and fill the new area",
        description="Grow IMAGE's canvas by --extend pixels per side or to --aspect W:H and fill the new area so "
                    "that it continues the picture. The output has the new size; the original pixels keep their "
                    "place and values (beyond the seam, --margin; 0 keeps all)."),
):
    register_task(_spec)


def split_inputs(task: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(inputs, options)``: the keywords of ``values`` that are inputs of ``task``, and the rest."""
    names = set(get_task(task).inputs)
    return ({k: v for k, v in values.items() if k in names}, {k: v for k, v in values.items() if k not in names})


#: Largest ``max_pixels`` accepted (a terapixel: far beyond memory, but a finite limit).
MAX_PIXELS_LIMIT = 10**12


def check_max_pixels(max_pixels: Any) -> None:
    """Refuse a pixel limit that is not ``None`` or a whole number from 1 to :data:`MAX_PIXELS_LIMIT`
    (``True`` is not a number here): the one check behind every ``--max-pixels`` and ``max_pixels=``."""
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
                                   or not 1 <= max_pixels <= MAX_PIXELS_LIMIT):
        raise InputError(f"--max-pixels must be a whole number from 1 to {MAX_PIXELS_LIMIT}, got {shown(max_pixels)}")


def prepare(task: str, inputs: dict[str, Any], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    """Validate ``inputs`` (the keywords of the task's spec) of ``task`` into a :class:`Job`."""
    spec = get_task(task)
    unknown = sorted(set(inputs) - set(spec.inputs))
    if unknown:
        raise InputError(f"{task} takes no input {', '.join(unknown)}; its inputs: {', '.join(spec.inputs)}")
    check_max_pixels(max_pixels)
    job = spec.prepare(**inputs, max_pixels=max_pixels)
    job.output = spec.output
    return job
