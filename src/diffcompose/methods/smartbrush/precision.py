"""Mask precision levels: from an object's exact mask (level 0) to its bounding box (level S).

SmartBrush trains on masks of several precisions made from one exact instance mask by a
Gaussian blur and a threshold; the paper publishes neither the kernels nor S. Ours (pinned
by ``tests/methods/smartbrush/test_smartbrush.py`` on real masks):

===== ============================ =====================================================
level sigma (share of object size) what the mask looks like (share of the gap exact->box)
===== ============================ =====================================================
0     -                            the exact mask (0)
1     0.015                        outline rounded, gaps of a few pixels closed (~0.2)
2     0.04                         a smooth outline, concavities filling (~0.4)
3     0.08                         a blob around the object (~0.65)
4     0.15                         a rounded box, its corners left out (~0.85)
5     -                            the bounding box (1)
===== ============================ =====================================================

The last column is the median, over the real masks of ``../shared/testdata``, of how much
of the area between the exact mask and its box a level covers.

The object size is the geometric mean of its bounding box's sides, so a level means the
same at any resolution. Level ``s`` in 1..S-1 is ``GaussianBlur(m, k_s, sigma_s) >= tau``
with ``tau = 0.1`` (a low threshold grows the shape outwards by about ``1.28 sigma`` at a
straight edge, more in concavities), ``k_s = 2 ceil(3 sigma_s) + 1``, joined with the level
below it and cut to the bounding box. So by construction every level contains the exact
mask and the level below it (the box's coverage never falls as ``s`` rises), stays inside
the box, and level S is the box itself. A large object is blurred at a reduced scale
(object size 256 px) and the blurred field resized back before the threshold: the same
levels, in milliseconds.

No torch here: the trainer's data loader and the tests use it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: S, the coarsest level: the bounding box.
PRECISION_LEVELS = 5
#: Blur sigma of levels 1..S-1, as a share of the object size (the geometric mean of its box's sides).
SIGMA_SHARES = (0.015, 0.04, 0.08, 0.15)
#: The blurred mask is binarised at this value (below 0.5: the shape grows outwards).
THRESHOLD = 0.1
#: Objects larger than this (pixels, geometric mean of the box's sides) are blurred at this size.
WORK_SIZE = 256

assert len(SIGMA_SHARES) == PRECISION_LEVELS - 1


def kernel_size(sigma: float) -> int:
    """An odd Gaussian kernel side covering +-3 sigma."""
    return 2 * math.ceil(3.0 * sigma) + 1


def level_table(box_size: tuple[int, int]) -> list[tuple[int, int | None, float | None]]:
    """``(level, kernel size, sigma in pixels)`` for an object whose box is ``(width, height)`` (None: no blur)."""
    size = math.sqrt(max(1, box_size[0]) * max(1, box_size[1]))
    rows: list[tuple[int, int | None, float | None]] = [(0, None, None)]
    for s, share in enumerate(SIGMA_SHARES, 1):
        sigma = share * size
        rows.append((s, kernel_size(sigma), sigma))
    rows.append((PRECISION_LEVELS, None, None))
    return rows


def precision_masks(mask: np.ndarray) -> list[np.ndarray]:
    """Every level 0..S of the exact bool ``mask`` (see the module docstring); an empty mask stays empty."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return [mask.copy() for _ in range(PRECISION_LEVELS + 1)]
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = mask[y0:y1, x0:x1]  # the blur is cut to the box anyway: work on the box only
    levels = [crop]
    current = crop
    h, w = crop.shape
    # A large object is blurred at a reduced scale (the blurred field is smooth: nothing is lost
    # but time), then the field is brought back to full size before the threshold.
    scale = min(1.0, WORK_SIZE / math.sqrt(h * w))
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    src = crop.astype(np.float32)
    if scale < 1.0:
        src = cv2.resize(src, small, interpolation=cv2.INTER_AREA)
    for _, k, sigma in level_table(small)[1:-1]:
        blurred = cv2.GaussianBlur(src, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
        if scale < 1.0:
            blurred = cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR)
        current = current | (blurred >= THRESHOLD)
        levels.append(current)
    levels.append(np.ones_like(crop))
    out = []
    for level in levels:
        full = np.zeros_like(mask)
        full[y0:y1, x0:x1] = level
        out.append(full)
    return out


def precision_mask(mask: np.ndarray, level: int) -> np.ndarray:
    """Level ``level`` (0 = exact .. S = the box) of the exact bool ``mask``."""
    if not 0 <= int(level) <= PRECISION_LEVELS:
        raise ValueError(f"precision level must be in 0..{PRECISION_LEVELS}, got {level}")
    return precision_masks(mask)[int(level)]


def box_coverage(mask: np.ndarray) -> float:
    """The share of its bounding box that ``mask`` covers (1.0 for a box; 0.0 for an empty mask)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0
    ys, xs = np.nonzero(mask)
    return float(mask.sum()) / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))


def is_box(mask: np.ndarray) -> bool:
    """Whether ``mask`` is a filled rectangle (what ``--box`` gives)."""
    return bool(np.asarray(mask, dtype=bool).any()) and box_coverage(mask) == 1.0
