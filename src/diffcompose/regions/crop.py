"""Work on a window around the edited region, at the resolution a model wants.

Diffusion models work at a fixed number of pixels, in sizes that are multiples of their
stride (8 for the VAE, 64 for a UNet with three downsamplings in latent space). Users have
photos of any size and aspect ratio. :func:`plan_window` picks a window around the region
(with context), and a working size for it; :class:`Window` cuts it out and puts results
back. Only the window's pixels can ever change. Engines state what they want as a
:class:`WindowPolicy`; the windowed runner, :meth:`diffcompose.methods.engine.Engine.execute`,
applies it for every engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from diffcompose.inputs.boxes import Box
from diffcompose.inputs.masks import resize_mask


@dataclass(frozen=True)
class Window:
    """A box of the original image and the size ``(width, height)`` it is worked at."""

    box: Box
    work_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Working pixels per original pixel (geometric mean of the two axes)."""
        return math.sqrt(self.work_size[0] * self.work_size[1] / (self.box.width * self.box.height))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """Cut the window out of a full-size ``(H, W, C)`` image and resize it to the working size."""
        return resize_image(image[self.box.slices], self.work_size)

    def crop_mask(self, mask: np.ndarray, soft: bool = False) -> np.ndarray:
        return resize_mask(mask[self.box.slices], self.work_size, soft=soft)

    def crop_lines(self, lines: np.ndarray) -> np.ndarray:
        """Cut a map of thin lines (edges, sketch strokes) out and resize it with :func:`resize_lines`."""
        return resize_lines(lines[self.box.slices], self.work_size)

    def crop_box(self, box: Box) -> Box:
        """``box`` (image pixels) in the working window's pixels, clipped to it."""
        sx, sy = self.work_size[0] / self.box.width, self.work_size[1] / self.box.height
        ww, wh = self.work_size
        x0 = min(max(int(math.floor((box.x0 - self.box.x0) * sx)), 0), ww - 1)
        y0 = min(max(int(math.floor((box.y0 - self.box.y0) * sy)), 0), wh - 1)
        x1 = min(max(int(math.ceil((box.x1 - self.box.x0) * sx)), x0 + 1), ww)
        y1 = min(max(int(math.ceil((box.y1 - self.box.y0) * sy)), y0 + 1), wh)
        return Box(x0, y0, x1, y1)

    def uncrop(self, work_image: np.ndarray, full: np.ndarray) -> np.ndarray:
        """Return a copy of ``full`` with the window replaced by ``work_image`` resized back."""
        out = full.copy()
        out[self.box.slices] = resize_image(work_image, (self.box.width, self.box.height))
        return out

    def uncrop_mask(self, work_mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A full-size bool mask (``size`` = (width, height)), False outside the window."""
        out = np.zeros((size[1], size[0]), dtype=bool)
        out[self.box.slices] = resize_mask(np.asarray(work_mask, dtype=bool), (self.box.width, self.box.height))
        return out


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image to ``(width, height)``: area-averaging when shrinking, bicubic when growing."""
    w, h = size
    if image.shape[1] == w and image.shape[0] == h:
        return image.copy()
    shrinking = w * h < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def resize_lines(lines: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float map of thin white lines on black to ``(width, height)`` so that 1-px lines survive.

    Each output pixel takes the maximum of the source pixels it covers (a max-pool over a
    partition of the source; nearest when growing). Area averaging would spread a 1-px line
    over a whole output pixel at a fraction of its value, and a later threshold would drop
    it: a 2048-px edge map shrunk to 512 px kept about 1% of its edges.
    """
    w, h = size
    src = np.asarray(lines, dtype=np.float32)
    if src.shape[:2] == (h, w):
        return src.copy()
    rows = np.arange(h) * src.shape[0] // h  # first source row of each output row
    cols = np.arange(w) * src.shape[1] // w
    return np.maximum.reduceat(np.maximum.reduceat(src, rows, axis=0), cols, axis=1)


def _floor_to(x: float, multiple: int) -> int:
    """``x`` rounded down to a multiple (at least one multiple: the one case that must upsample)."""
    return max(multiple, int(math.floor(x + 1e-6)) // multiple * multiple)


def _grow(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """Grow the 1-D span [lo, hi) to length ``want`` (clamped to [0, limit)), staying centred."""
    want = min(max(want, hi - lo), limit)
    extra = want - (hi - lo)
    lo -= extra // 2
    hi += extra - extra // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    return max(lo, 0), hi


@dataclass(frozen=True)
class WindowPolicy:
    """How an engine wants its window: declared once per engine (and task), applied by the runner.

    ``size``: the working size, about ``size x size`` pixels (``None``: native pixels, never
    resized; the classical engines). ``multiple``: each working side is a multiple of it.
    ``square``: the window is as square as the image allows (models trained on squares).
    ``context``: margin on each side as a share of the region's size (at least
    ``min_context`` pixels). ``whole_image``: the window is the whole image.
    """

    size: int | None = None
    multiple: int = 1
    square: bool = False
    context: float = 0.5
    min_context: int = 16
    whole_image: bool = False

    def plan(self, image_size: tuple[int, int], region: Box) -> Window:
        if self.whole_image:
            region = Box(0, 0, image_size[0], image_size[1])
        return plan_window(image_size, region, context=self.context, min_context=self.min_context,
                           resolution=self.size, multiple=self.multiple, square=self.square)


def plan_window(
    image_size: tuple[int, int],
    region: Box,
    *,
    context: float = 0.5,
    min_context: int = 16,
    resolution: int | None = 512,
    multiple: int = 8,
    square: bool = False,
) -> Window:
    """Choose the window around ``region`` and its working size.

    The rule: the window is never worked at a larger scale than the source's own (a small
    object is not blown up into a blurry crop). With ``resolution`` R:

    * the whole image has at most R x R pixels: the whole image is the window, at its own
      scale (sides rounded down to ``multiple``);
    * otherwise the window is the region plus ``context`` (a share of the region's size on
      each side, at least ``min_context`` px), grown to at least R source pixels on each
      side (clipped to the image), and worked at about R x R pixels: shrunk, never grown.

    ``resolution=None`` keeps native pixels (the window grows to a multiple where the image
    allows). ``square`` makes the window as square as the image allows.
    """
    w, h = image_size
    if resolution is not None and w * h <= resolution * resolution:
        box = Box(0, 0, w, h)
        return Window(box, (_floor_to(w, multiple), _floor_to(h, multiple)))
    mx = max(min_context, int(math.ceil(region.width * context)))
    my = max(min_context, int(math.ceil(region.height * context)))
    want_w, want_h = region.width + 2 * mx, region.height + 2 * my
    if square:
        want_w = want_h = max(want_w, want_h)
    if resolution is not None:
        want_w, want_h = max(want_w, resolution), max(want_h, resolution)
    x0, x1 = _grow(region.x0, region.x1, want_w, w)
    y0, y1 = _grow(region.y0, region.y1, want_h, h)
    if resolution is None:
        # Keep native pixels; grow to a multiple where the image allows (else the work size rounds).
        x0, x1 = _grow(x0, x1, -(-(x1 - x0) // multiple) * multiple, w)
        y0, y1 = _grow(y0, y1, -(-(y1 - y0) // multiple) * multiple, h)
        box = Box(x0, y0, x1, y1)
        return Window(box, (max(multiple, -(-box.width // multiple) * multiple),
                            max(multiple, -(-box.height // multiple) * multiple)))
    box = Box(x0, y0, x1, y1)
    s = min(1.0, resolution / math.sqrt(box.width * box.height))
    return Window(box, (_floor_to(box.width * s, multiple), _floor_to(box.height * s, multiple)))
