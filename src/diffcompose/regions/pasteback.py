"""Exact paste-back: outside the edited region the original pixels come back bit for bit.

The seam is feathered *outward* over ``margin`` pixels: weight 1 on the mask, falling
linearly to 0 at ``margin`` pixels from it. So the pixels that can differ from the input
are exactly ``dilate_mask(mask, margin)`` (see :func:`changed_region`), which is what
tests and users can rely on.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from diffcompose.inputs.masks import dilate_mask


def default_margin(shape: tuple[int, ...]) -> int:
    """Seam width for an image: 1% of its long side, at least 4 pixels."""
    return max(4, int(math.ceil(0.01 * max(shape[0], shape[1]))))


def blend_weights(mask: np.ndarray, margin: int) -> np.ndarray:
    """Float32 weights of the edited image: 1 on the mask, linear ramp to 0 over ``margin`` px."""
    if margin <= 0 or mask.all():
        return mask.astype(np.float32)
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(1.0 - dist / float(margin + 1), 0.0, 1.0).astype(np.float32) * (dist <= margin)


def changed_region(mask: np.ndarray, margin: int) -> np.ndarray:
    """Pixels that :func:`paste_back` may change: the mask dilated by ``margin``."""
    return dilate_mask(mask, margin)


def paste_back(original: np.ndarray, edited: np.ndarray, mask: np.ndarray, margin: int | None = None) -> np.ndarray:
    """Composite ``edited`` over ``original`` inside ``mask`` with a feathered seam.

    Pixels farther than ``margin`` from the mask are returned bit-identical to ``original``.
    """
    if original.shape != edited.shape:
        raise ValueError(f"paste_back: shapes differ {original.shape} vs {edited.shape}")
    if margin is None:
        margin = default_margin(original.shape)
    wgt = blend_weights(mask, margin)
    out = original.copy()
    sel = wgt > 0
    a = wgt[sel][:, None]
    blended = original[sel].astype(np.float32) * (1.0 - a) + edited[sel].astype(np.float32) * a
    out[sel] = np.clip(np.rint(blended), 0, 255).astype(original.dtype)
    return out
