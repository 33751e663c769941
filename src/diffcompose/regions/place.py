"""Placement: where a cut-out object lands in a target box (the rule every engine shares).

The object is cropped to the bounding box of its mask, scaled by the largest factor that
fits it inside the target box with its aspect ratio kept, and centred in the box. Only the
object's own pixels (its mask, resized) are placed; the rest of the box keeps the
background. Used by ``paste``, ``harmonize --object`` and the diffusion engines.
"""

from __future__ import annotations

import numpy as np

from diffcompose.inputs.boxes import Box, mask_to_box
from diffcompose.inputs.masks import resize_mask
from diffcompose.regions.crop import resize_image


def fit_box(object_size: tuple[int, int], box: Box) -> Box:
    """Where an object of ``(width, height)`` lands in ``box``: aspect kept, fitted, centred."""
    ow, oh = object_size
    s = min(box.width / ow, box.height / oh)
    w = min(box.width, max(1, round(ow * s)))
    h = min(box.height, max(1, round(oh * s)))
    x0 = box.x0 + (box.width - w) // 2
    y0 = box.y0 + (box.height - h) // 2
    return Box(x0, y0, x0 + w, y0 + h)


def place_soft(background: np.ndarray, obj: np.ndarray, object_mask: np.ndarray, box: Box
               ) -> tuple[np.ndarray, np.ndarray]:
    """The object resized into place on a copy of ``background``, and its float coverage (0..1)."""
    crop = mask_to_box(object_mask)
    target = fit_box((crop.width, crop.height), box)
    size = (target.width, target.height)
    layer = background.copy()
    layer[target.slices] = resize_image(obj[crop.slices], size)
    coverage = np.zeros(background.shape[:2], dtype=np.float32)
    coverage[target.slices] = resize_mask(object_mask[crop.slices], size, soft=True)
    return layer, coverage


def place(background: np.ndarray, obj: np.ndarray, object_mask: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Hard-cut placement: ``(composite, placed_mask)``; the mask may be empty for a tiny box."""
    layer, coverage = place_soft(background, obj, object_mask, box)
    placed = coverage >= 0.5
    composite = background.copy()
    composite[placed] = layer[placed]
    return composite, placed
