"""Cut-and-paste: place an object into a background at a box (:mod:`diffcompose.regions.place`),
then blend the seam: a hard cut, a feathered alpha, or Poisson blending.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from diffcompose.errors import InputError
from diffcompose.inputs.boxes import Box, mask_to_box
from diffcompose.methods.classical._window import window_for
from diffcompose.methods.classical.options import PasteOptions
from diffcompose.progress import RunContext
from diffcompose.regions.place import place_soft


def feather_alpha(mask: np.ndarray, width: int) -> np.ndarray:
    """Alpha falling from 1 inside to 0 at the mask's edge over ``width`` pixels (inward)."""
    if width <= 0:
        return mask.astype(np.float32)
    # Edge-replicated padding: where the object touches the image border, that is no edge.
    padded = np.pad(mask, 1, mode="edge").astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return np.clip(dist / float(width), 0.0, 1.0).astype(np.float32) * mask


def poisson_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient-domain blend of ``source`` into ``target`` inside ``mask`` (same-size arrays).

    ``cv2.seamlessClone`` needs a mask that does not touch the image border, and positions
    the mask's bounding box by its centre: both arrays are padded by reflection so masks on
    the border work, and the centre is computed so the clone lands exactly in place. Masks
    thinner than 3 pixels (which OpenCV cannot solve) are copied as they are.

    OpenCV reads gradients across the mask's edge from both arrays; so that the edge's
    only jump is the one the solve removes, ``source`` is extended outward with its nearest
    masked pixel and ``target`` inward with its nearest unmasked one (so ``target`` may
    already hold the object, e.g. a composite).
    """
    out = target.copy()
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    if w < 3 or h < 3:
        out[mask] = source[mask]
        return out
    _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
    source = source[iy, ix]
    if (~mask).any():
        _, (iy, ix) = ndimage.distance_transform_edt(mask, return_indices=True)
        target = target[iy, ix]
    pad = 4
    src = cv2.copyMakeBorder(np.ascontiguousarray(source), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    dst = cv2.copyMakeBorder(np.ascontiguousarray(target), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    m = np.zeros(src.shape[:2], dtype=np.uint8)
    m[pad:-pad, pad:-pad] = mask.astype(np.uint8) * 255
    center = (x + pad + w // 2, y + pad + h // 2)
    cloned = cv2.seamlessClone(src, dst, m, center, cv2.NORMAL_CLONE)[pad:-pad, pad:-pad]
    out[mask] = cloned[mask]
    return out


def paste(*, background: np.ndarray, object: np.ndarray, object_mask: np.ndarray, box: Box,  # noqa: A002
          options: PasteOptions, ctx: RunContext) -> np.ndarray:
    """The background with the object placed in ``box`` and its seam blended."""
    layer, coverage = place_soft(background, object, object_mask, box)
    placed = coverage >= 0.5
    if not placed.any():
        raise InputError(f"the object placed in box {box} covers no pixels; use a larger box")
    out = background.copy()
    if options.blend == "none":
        out[placed] = layer[placed]
        return out
    region = mask_to_box(placed)
    if options.blend == "feather":
        width = options.feather if options.feather is not None else max(1, round(0.03 * min(region.width, region.height)))
        alpha = feather_alpha(placed, width)
        if width > 0:  # the resized mask's coverage anti-aliases the edge; feathering only softens it
            alpha = np.minimum(alpha, coverage)
        alpha = alpha[..., None]
        blended = layer.astype(np.float32) * alpha + background.astype(np.float32) * (1.0 - alpha)
        return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    win = window_for(background.shape, region, context=0.1, min_context=8)
    sl = win.box.slices
    out[sl] = poisson_blend(layer[sl], background[sl], placed[sl])
    return out
