"""Boxes ``(x0, y0, x1, y1)`` in pixels, end-exclusive (``x1 - x0`` is the width)."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from diffcompose.errors import InputError


class Box(NamedTuple):
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``array[box.slices]`` is the box's content (rows, then columns)."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def __str__(self) -> str:
        return f"({self.x0}, {self.y0}, {self.x1}, {self.y1})"


def parse_box(value: str | Sequence[float], image_size: tuple[int, int] | None = None, name: str = "box") -> Box:
    """Parse ``"x0,y0,x1,y1"`` (or a 4-sequence of numbers) and validate it against ``(width, height)``.

    A sequence must hold numbers: ``True`` or ``"10"`` in a list is refused rather than read as
    1 or 10 (JSON and Python callers give numbers; only the text form is parsed).
    """
    if isinstance(value, str):
        parts: list = [p for p in value.replace(",", " ").split() if p]
    else:
        try:
            parts = list(value)
        except TypeError:
            raise InputError(f"{name} must be x0,y0,x1,y1 (4 numbers), got {value!r}") from None
        if any(isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.number)) for p in parts):
            raise InputError(f"{name} must have 4 numbers x0,y0,x1,y1 (not booleans or text), got {value!r}")
    if len(parts) != 4:
        raise InputError(f"{name} must have 4 numbers x0,y0,x1,y1 (end-exclusive pixels), got {value!r}")
    try:
        nums = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise InputError(f"{name} must have 4 numbers x0,y0,x1,y1, got {value!r}") from None
    if not all(math.isfinite(n) and abs(n) < 2**31 for n in nums):
        raise InputError(f"{name} coordinates must be finite pixel positions, got {value!r}")
    if any(n != round(n) for n in nums):
        raise InputError(f"{name} coordinates must be whole pixels, got {value!r}")
    box = Box(*(int(round(n)) for n in nums))
    if box.x1 <= box.x0 or box.y1 <= box.y0:
        raise InputError(f"{name} {box} is degenerate: need x0 < x1 and y0 < y1 (end-exclusive)")
    if image_size is not None:
        w, h = image_size
        if box.x0 < 0 or box.y0 < 0 or box.x1 > w or box.y1 > h:
            raise InputError(f"{name} {box} lies outside the {w}x{h} image (valid: 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})")
    return box


def mask_to_box(mask: np.ndarray) -> Box:
    """Tight end-exclusive bounding box of the True pixels of a non-empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        raise InputError("mask is empty (no white pixels)")
    return Box(int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
