"""An object mask from a box: GrabCut (Rother et al., 2004) initialised with the box.

GrabCut models the colours inside and outside the box with Gaussian mixtures and cuts the
graph between them. It runs on a window around the box (the pixels outside the box there
are the background samples), reduced to at most ``MAX_PIXELS`` so big photos stay fast.
OpenCV's k-means initialisation is random: it is seeded from ``ctx.seed``.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from diffcompose.errors import InputError
from diffcompose.inputs.boxes import Box
from diffcompose.inputs.masks import resize_mask
from diffcompose.methods.classical._window import window_for
from diffcompose.methods.classical.options import SegmentOptions
from diffcompose.progress import RunContext

log = logging.getLogger(__name__)

#: GrabCut works on at most this many pixels (the mask is upscaled back).
MAX_PIXELS = 400_000
#: GrabCut fits 5-component colour mixtures: it needs enough pixels inside the box.
MIN_BOX_PIXELS = 64


def segment(*, image: np.ndarray, box: Box, options: SegmentOptions, ctx: RunContext) -> np.ndarray:
    """Bool ``(H, W)`` mask of the object inside ``box`` (always False outside it)."""
    h, w = image.shape[:2]
    if box.width * box.height < MIN_BOX_PIXELS:
        raise InputError(f"box {box} is too small to segment ({box.width}x{box.height}); "
                         f"GrabCut needs at least {MIN_BOX_PIXELS} pixels inside it")
    if box.width * box.height >= 0.98 * w * h or (box.width >= w - 1 and box.height >= h - 1):
        raise InputError(f"box {box} covers (nearly) the whole {w}x{h} image; segmentation needs "
                         "background pixels outside the box")
    win = window_for(image.shape, box, context=0.25, min_context=16, max_pixels=MAX_PIXELS)
    sx = win.work_size[0] / win.box.width
    sy = win.work_size[1] / win.box.height
    crop = np.ascontiguousarray(win.crop(image)[..., ::-1])  # OpenCV works in BGR
    x0 = int(np.floor((box.x0 - win.box.x0) * sx))
    y0 = int(np.floor((box.y0 - win.box.y0) * sy))
    x1 = min(win.work_size[0], int(np.ceil((box.x1 - win.box.x0) * sx)))
    y1 = min(win.work_size[1], int(np.ceil((box.y1 - win.box.y0) * sy)))
    labels = np.zeros(crop.shape[:2], dtype=np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(int(ctx.seed) & 0x7FFFFFFF)
    cv2.grabCut(crop, labels, (x0, y0, x1 - x0, y1 - y0), bgd, fgd, options.iterations, cv2.GC_INIT_WITH_RECT)
    fg = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    mask = np.zeros((h, w), dtype=bool)
    mask[win.box.slices] = resize_mask(fg, (win.box.width, win.box.height))
    inside = np.zeros((h, w), dtype=bool)
    inside[box.slices] = True
    mask &= inside
    if not mask.any():
        log.warning("segment: GrabCut found no object in box %s", box)
    return mask
