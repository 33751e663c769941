"""Work on a window around the edited region, at the resolution a model wants.

Diffusion models work at a fixed number of pixels, in sizes that are multiples of their
stride (8 for the VAE, 64 for a UNet with three downsamplings in latent space). Users have
photos of any size and aspect ratio. :func:`plan_window` picks a window around the region
(with context), and a working size for it; :class:`Window` cuts it out and puts results
back. Only the window's pixels can ever change.
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

    def uncrop(self, work_image: np.ndarray, full: np.ndarray) -> np.ndarray:
        """Return a copy of ``full`` with the window replaced by ``work_image`` resized back."""
        out = full.copy()
        out[self.box.slices] = resize_image(work_image, (self.box.width, self.box.height))
        return out


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image to ``(width, height)``: area-averaging when shrinking, bicubic when growing."""
    w, h = size
    if image.shape[1] == w and image.shape[0] == h:
        return image.copy()
    shrinking = w * h < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


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

    ``context``: margin added on each side, as a share of the region's size (at least
    ``min_context`` pixels). ``square``: make the window as square as the image allows (for
    models trained on squares). ``resolution``: the working size has about
    ``resolution**2`` pixels (each side a multiple of ``multiple``); ``None`` keeps the
    window's own pixel size, rounded up to ``multiple`` only by growing the window.
    """
    w, h = image_size
    mx = max(min_context, int(math.ceil(region.width * context)))
    my = max(min_context, int(math.ceil(region.height * context)))
    want_w, want_h = region.width + 2 * mx, region.height + 2 * my
    if square:
        want_w = want_h = max(want_w, want_h)
    x0, x1 = _grow(region.x0, region.x1, want_w, w)
    y0, y1 = _grow(region.y0, region.y1, want_h, h)
    if resolution is None:
        # Keep native pixels; grow to a multiple where the image allows, else crop is exact.
        x0, x1 = _grow(x0, x1, -(-(x1 - x0) // multiple) * multiple, w)
        y0, y1 = _grow(y0, y1, -(-(y1 - y0) // multiple) * multiple, h)
        box = Box(x0, y0, x1, y1)
        return Window(box, (_round_to(box.width, multiple), _round_to(box.height, multiple)))
    box = Box(x0, y0, x1, y1)
    s = math.sqrt(resolution * resolution / (box.width * box.height))
    return Window(box, (_round_to(box.width * s, multiple), _round_to(box.height * s, multiple)))
