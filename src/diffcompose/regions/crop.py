"""Work on a window around the edited region, at the resolution a model wants.

Diffusion models work at a fixed number of pixels, in sizes that are multiples of their
stride (8 for the VAE, 64 for a UNet with three downsamplings in latent space). Users have
photos of any size and aspect ratio. :func:`plan_window` picks a window around the region
(with context), and a working size for it; :class:`Window` cuts it out and puts results
back. The working canvas's sides are multiples of the stride, but the window keeps its aspect
ratio: it grows into the photo's context, or is mirrored past the photo's edge, up to the
multiple, and the extra is cut off again. Only the window's pixels can ever change. Engines state what they want as a
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
    """A box of the original image, the size ``(width, height)`` it is worked at, and where its pixels go.

    ``work_size`` is the canvas the engine gets (each side a multiple of the model's stride).
    ``content_size`` is what the box's own pixels are resized to, at the canvas's top-left,
    with the box's aspect ratio; the rest of the canvas (fewer than ``multiple`` pixels per
    side, only where the box already reaches the photo's edge) mirrors them. Resizing the
    box straight to a multiple stretched it by up to 15% (520x300 was worked at 512x256).
    ``None``: the content fills the canvas.
    """

    box: Box
    work_size: tuple[int, int]
    content_size: tuple[int, int] | None = None

    @property
    def content(self) -> tuple[int, int]:
        """``(width, height)`` of the canvas's part that holds the box's pixels."""
        return self.content_size or self.work_size

    @property
    def scale(self) -> float:
        """Working pixels per original pixel (geometric mean of the two axes)."""
        cw, ch = self.content
        return math.sqrt(cw * ch / (self.box.width * self.box.height))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """Cut the window out of a full-size ``(H, W, C)`` image, resize it and mirror it to the canvas."""
        return self._fill(resize_image(image[self.box.slices], self.content))

    def crop_mask(self, mask: np.ndarray, soft: bool = False) -> np.ndarray:
        """The mask as :meth:`crop` cuts the image: mirrored with it, so that a mirrored object is masked too."""
        return self._fill(resize_mask(mask[self.box.slices], self.content, soft=soft))

    def crop_lines(self, lines: np.ndarray) -> np.ndarray:
        """Cut a map of thin lines (edges, sketch strokes) out and resize it with :func:`resize_lines`."""
        return self._fill(resize_lines(lines[self.box.slices], self.content))

    def crop_box(self, box: Box) -> Box:
        """``box`` (image pixels) in the working window's pixels, clipped to the content."""
        cw, ch = self.content
        sx, sy = cw / self.box.width, ch / self.box.height
        x0 = min(max(int(math.floor((box.x0 - self.box.x0) * sx)), 0), cw - 1)
        y0 = min(max(int(math.floor((box.y0 - self.box.y0) * sy)), 0), ch - 1)
        x1 = min(max(int(math.ceil((box.x1 - self.box.x0) * sx)), x0 + 1), cw)
        y1 = min(max(int(math.ceil((box.y1 - self.box.y0) * sy)), y0 + 1), ch)
        return Box(x0, y0, x1, y1)

    def cut(self, work: np.ndarray) -> np.ndarray:
        """The content of a canvas-sized array (a result, a preview): the mirrored margin dropped."""
        cw, ch = self.content
        return work[:ch, :cw]

    def uncrop(self, work_image: np.ndarray, full: np.ndarray) -> np.ndarray:
        """Return a copy of ``full`` with the window replaced by ``work_image``'s content resized back."""
        out = full.copy()
        out[self.box.slices] = resize_image(self.cut(work_image), (self.box.width, self.box.height))
        return out

    def uncrop_mask(self, work_mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A full-size bool mask (``size`` = (width, height)), False outside the window."""
        out = np.zeros((size[1], size[0]), dtype=bool)
        out[self.box.slices] = resize_mask(np.asarray(self.cut(work_mask), dtype=bool),
                                           (self.box.width, self.box.height))
        return out

    def _fill(self, content: np.ndarray) -> np.ndarray:
        """``content`` mirrored past its bottom and right edges to the canvas (the photo's own edges
        there: the planner pads only an axis the box spans whole)."""
        w, h = self.work_size
        if content.shape[:2] == (h, w):
            return content
        pad = [(0, h - content.shape[0]), (0, w - content.shape[1])] + [(0, 0)] * (content.ndim - 2)
        return np.pad(content, pad, mode="symmetric")


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


def _up_to(x: int, multiple: int) -> int:
    """``x`` rounded up to a multiple."""
    return -(-x // multiple) * multiple


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
    resized; the classical engines). ``multiple``: each side of the working canvas is a
    multiple of it (the window's pixels keep their aspect ratio; see :func:`_fit_to_multiple`).
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

    The rules: the window is never worked at a larger scale than the source's own (a small
    object is not blown up into a blurry crop), and it keeps its aspect ratio (never
    stretched to the multiple). With ``resolution`` R:

    * the whole image has at most R x R pixels: the whole image is the window, at its own
      pixels (a small photo is not upsampled to the model's size);
    * otherwise the window is the region plus ``context`` (a share of the region's size on
      each side, at least ``min_context`` px), grown to at least R source pixels on each
      side (clipped to the image), and worked at about R x R pixels: shrunk, never grown.

    ``resolution=None`` keeps native pixels. ``square`` makes the window as square as the
    image allows. Then each side goes up to the next ``multiple`` (:func:`_fit_to_multiple`).
    """
    w, h = image_size
    if resolution is not None and w * h <= resolution * resolution:
        return _fit_to_multiple(Box(0, 0, w, h), 1.0, multiple, image_size)
    mx = max(min_context, int(math.ceil(region.width * context)))
    my = max(min_context, int(math.ceil(region.height * context)))
    want_w, want_h = region.width + 2 * mx, region.height + 2 * my
    if square:
        want_w = want_h = max(want_w, want_h)
    if resolution is not None:
        want_w, want_h = max(want_w, resolution), max(want_h, resolution)
    x0, x1 = _grow(region.x0, region.x1, want_w, w)
    y0, y1 = _grow(region.y0, region.y1, want_h, h)
    box = Box(x0, y0, x1, y1)
    scale = 1.0 if resolution is None else min(1.0, resolution / math.sqrt(box.width * box.height))
    return _fit_to_multiple(box, scale, multiple, image_size)


def _fit_to_multiple(box: Box, scale: float, multiple: int, image_size: tuple[int, int]) -> Window:
    """The window of ``box`` worked at ``scale``, its canvas's sides rounded up to ``multiple``.

    Each canvas side is the box's scaled side rounded up. The box first grows into the
    photo's real context to fill the canvas at the same scale; only where it already spans the
    photo's whole width (height) is the rest mirrored (:meth:`Window.crop`) and cut off again
    (:meth:`Window.uncrop`): at most ``multiple - 1`` working pixels per side. Rounding
    down and resizing the box to it instead (as this planner did) stretched 520x300 to 512x256.
    """
    def side(n: float) -> int:  # rounded down (the content stays within the scale asked for), at least 1 px
        return max(1, int(math.floor(n + 1e-6)))

    canvas = (_up_to(side(box.width * scale), multiple), _up_to(side(box.height * scale), multiple))
    x0, x1 = _grow(box.x0, box.x1, int(math.ceil(canvas[0] / scale - 1e-6)), image_size[0])
    y0, y1 = _grow(box.y0, box.y1, int(math.ceil(canvas[1] / scale - 1e-6)), image_size[1])
    box = Box(x0, y0, x1, y1)
    content = (min(canvas[0], side(box.width * scale)), min(canvas[1], side(box.height * scale)))
    return Window(box, canvas, None if content == canvas else content)
