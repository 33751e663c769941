"""Hole shapes for self-reference training: the extended box, or an irregular Bezier outline.

The model never sees the object's exact silhouette at training time: the hole is the
object's box grown by a random share of the free space around it, and half the time an
irregular, lobed shape instead. So at inference a rough user mask works.

As in the original recipe (``ldm/data/open-images.py``): the irregular hole is outlined by
four quadratic Bezier curves running between the corners of the **object** box, each bent
towards the matching edge of the **extended** box (its control point is that edge's
midpoint), sampled at t = 0.05 .. 0.9 and jittered by a few pixels (not clipped), then
filled. The curves bulge out beyond the object on the sides where the box was extended
and cut the object's corners, so the hole is far from a rectangle (mean IoU with the
extended box about 0.6, ``tests/methods/pbe/test_pbe_dataset.py``).
"""

from __future__ import annotations

import cv2
import numpy as np

from diffcompose.inputs import Box


def extend_box(box: Box, size: tuple[int, int], rng: np.random.Generator, max_share: float = 0.4) -> Box:
    """Grow each side of ``box`` by a random whole number of pixels, up to ``max_share`` of the free space
    on that side (uniform over ``0 .. int(max_share * free)``, as the original draws it)."""
    w, h = size
    free = (box.x0, box.y0, w - box.x1, h - box.y1)
    grow = [int(rng.integers(0, int(max_share * f) + 1)) for f in free]
    return Box(box.x0 - grow[0], box.y0 - grow[1], box.x1 + grow[2], box.y1 + grow[3])


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[box.slices] = True
    return m


def _quad_bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def bezier_outline(box: Box, extended: Box) -> np.ndarray:
    """The 4 x 18 outline points (before jitter), clockwise from the object box's top-left corner."""
    x0, y0, x1, y1 = (float(v) for v in (box.x0, box.y0, box.x1, box.y1))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    p = np.array
    curves = [  # (start corner, control point on the extended box's edge, end corner)
        (p([x0, y0]), p([cx, extended.y0]), p([x1, y0])),  # top
        (p([x1, y0]), p([extended.x1, cy]), p([x1, y1])),  # right
        (p([x1, y1]), p([cx, extended.y1]), p([x0, y1])),  # bottom
        (p([x0, y1]), p([extended.x0, cy]), p([x0, y0])),  # left
    ]
    t = 0.05 * np.arange(1, 19)  # 0.05, 0.10, ..., 0.90
    return np.concatenate([_quad_bezier(a, c, b, t) for a, c, b in curves])


def bezier_mask(box: Box, extended: Box, shape: tuple[int, int], rng: np.random.Generator,
                jitter: int = 5) -> np.ndarray:
    """The irregular hole of ``box`` (the object) bulging towards ``extended``: see the module docstring.

    Each outline point moves by a whole number of pixels in ``[-jitter, jitter]`` on each
    axis, without clipping (the outline may leave the extended box by that much).
    """
    pts = bezier_outline(box, extended)
    pts = pts + rng.integers(-jitter, jitter + 1, size=pts.shape)
    canvas = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)
