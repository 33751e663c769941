"""Harmonization: make a pasted object's colours fit the scene around it.

``reinhard``: the colour transfer of Reinhard et al. (2001) in CIELAB, applied locally: the
object's per-channel mean and standard deviation move toward those of a ring of pixels
around it (``strength`` = how far; 1 = all the way). An object rarely shares its
surroundings' colours, so the default goes 30% of the way, and the change of contrast is
clamped: on the quality benchmark (docs/benchmarks.md) that beats both the full transfer and doing
nothing. When the clean background is known, its pixels under the object and the ring
are the reference instead (nothing of the object leaks into it).

``poisson``: gradient-domain blending (``cv2.seamlessClone``) of the object into its own
surroundings: the object keeps its texture and takes the surroundings' colour at its edge.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from diffcompose.errors import InputError
from diffcompose.inputs.boxes import mask_to_box
from diffcompose.inputs.masks import dilate_mask
from diffcompose.methods.classical._window import window_for
from diffcompose.methods.classical.options import HarmonizeOptions
from diffcompose.methods.classical.paste import poisson_blend
from diffcompose.progress import RunContext

log = logging.getLogger(__name__)

#: Fewest reference pixels the colour statistics are computed from.
MIN_REFERENCE = 16
#: The standard-deviation ratio is clamped to [1/x, x]: a flat ring (sky, wall) must not
#: crush an object's texture, nor a busy one blow it up.
MAX_STD_RATIO = 1.5
#: Default ``strength`` per method.
DEFAULT_STRENGTH = {"reinhard": 0.3, "poisson": 1.0}


def default_ring(mask: np.ndarray) -> int:
    """25% of the object's size (geometric mean of its box sides), at least 3 pixels."""
    box = mask_to_box(mask)
    return max(3, round(0.25 * math.sqrt(box.width * box.height)))


def to_lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def from_lab(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def reinhard(image: np.ndarray, mask: np.ndarray, reference: np.ndarray, reference_mask: np.ndarray,
             strength: float) -> np.ndarray:
    """``image`` with the Lab statistics of its ``mask`` pixels moved toward those of the reference pixels."""
    lab = to_lab(image)
    obj = lab[mask]
    ref = to_lab(reference)[reference_mask]
    mu_o, sd_o = obj.mean(axis=0), obj.std(axis=0)
    mu_r, sd_r = ref.mean(axis=0), ref.std(axis=0)
    ratio = np.clip(sd_r / np.maximum(sd_o, 1e-3), 1.0 / MAX_STD_RATIO, MAX_STD_RATIO)
    gain = ratio ** strength  # geometric path from 1 (untouched) to the full ratio
    mu_t = mu_o + strength * (mu_r - mu_o)
    out = lab.copy()
    out[mask] = (obj - mu_o) * gain + mu_t
    result = image.copy()
    result[mask] = from_lab(out)[mask]
    return result


def harmonize(*, image: np.ndarray, mask: np.ndarray, background: np.ndarray | None, options: HarmonizeOptions,
              ctx: RunContext) -> np.ndarray:
    """``image`` with the object under ``mask`` recoloured to fit; other pixels unchanged."""
    ring = options.ring if options.ring is not None else default_ring(mask)
    strength = options.strength if options.strength is not None else DEFAULT_STRENGTH[options.method]
    region = mask_to_box(mask)
    win = window_for(image.shape, region, context=0.0, min_context=ring + 2)
    sl = win.box.slices
    img, m = image[sl], mask[sl]
    surround = dilate_mask(m, ring) & ~m
    if options.method == "reinhard":
        if background is not None:
            ref, ref_mask = background[sl], surround | m
        else:
            ref, ref_mask = img, surround
        if ref_mask.sum() < MIN_REFERENCE:
            raise InputError("the mask leaves too few surrounding pixels to take colours from; "
                             "harmonization needs some unmasked context around the object")
        edited = reinhard(img, m, ref, ref_mask, strength)
    else:
        if not surround.any():
            raise InputError("the mask leaves no surrounding pixels to blend into; "
                             "harmonization needs some unmasked context around the object")
        cloned = poisson_blend(img, img, m)  # outside the mask, composite == background
        mix = img.astype(np.float32) + strength * (cloned.astype(np.float32) - img.astype(np.float32))
        edited = np.clip(np.rint(mix), 0, 255).astype(np.uint8)
    log.debug("harmonize: %s, ring %d px, window %s", options.method, ring, win.box)
    out = image.copy()
    out[sl] = np.where(m[..., None], edited, img)
    return out
