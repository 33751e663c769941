"""Cut-and-paste: place an object into a background at a box, then blend the seam.

Placement rule (shared by ``harmonize --object`` and the diffusion engines): the object is
cropped to the bounding box of its mask, scaled by the largest factor that fits it inside
the target box with its aspect ratio kept, and centred in the box. Only the object's own
pixels (its mask, resized) are placed; the rest of the box keeps the background.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from diffcompose.errors import InputError
from diffcompose.inputs.boxes import Box, mask_to_box
from diffcompose.inputs.masks import resize_mask
from diffcompose.methods.classical._window import window_for
from diffcompose.methods.classical.options import PasteOptions
from diffcompose.methods.registry import Runtime
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
          options: PasteOptions, runtime: Runtime) -> np.ndarray:
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
