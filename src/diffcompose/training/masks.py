"""Hole shapes for self-reference training: the extended box, or an irregular Bezier outline.

The model never sees the object's exact silhouette at training time: the hole is the
object's box grown by a random share of the free space around it, and half the time an
irregular shape inside that grown box. So at inference a rough user mask works.
"""

from __future__ import annotations

import cv2
import numpy as np

from diffcompose.inputs import Box


def extend_box(box: Box, size: tuple[int, int], rng: np.random.Generator, max_share: float = 0.4) -> Box:
    """Grow each side of ``box`` by a random share (up to ``max_share``) of the free space on that side."""
    w, h = size
    grow = rng.uniform(0.0, max_share, size=4)
    x0 = box.x0 - int(grow[0] * box.x0)
    y0 = box.y0 - int(grow[1] * box.y0)
    x1 = box.x1 + int(grow[2] * (w - box.x1))
    y1 = box.y1 + int(grow[3] * (h - box.y1))
    return Box(x0, y0, x1, y1)


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[box.slices] = True
    return m


def _quad_bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def bezier_mask(box: Box, shape: tuple[int, int], rng: np.random.Generator, points: int = 18,
                jitter: float = 5.0) -> np.ndarray:
    """An irregular hole inside ``box``: 4 quadratic Bezier curves corner to corner, control points
    at the edge midpoints, ``points`` samples each jittered by up to ``jitter`` px, filled."""
    x0, y0, x1, y1 = box.x0, box.y0, box.x1 - 1, box.y1 - 1
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    outline = []
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        outline.append(_quad_bezier(a, (a + b) / 2.0, b, points))
    pts = np.concatenate(outline)
    pts += rng.uniform(-jitter, jitter, size=pts.shape)
    pts[:, 0] = np.clip(pts[:, 0], x0, x1)
    pts[:, 1] = np.clip(pts[:, 1], y0, y1)
    canvas = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)
