"""Object removal without weights: exemplar fills (PatchMatch, frequency-selective
reconstruction) and diffusion fills (OpenCV Telea / Navier-Stokes, scikit-image biharmonic).

Each separate part of the mask is filled in its own window (the part plus context), so
the cost follows the holes, not the photo. Inside a window every hole pixel is treated as
unknown, so one object never serves as context for filling another. Windows larger than
the method's cap (:data:`MAX_WINDOW_PIXELS`) are worked at reduced resolution, which
bounds the time of any hole in any photo.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from diffcompose.inputs.boxes import Box, mask_to_box
from diffcompose.inputs.masks import dilate_mask
from diffcompose.methods.classical import exemplar
from diffcompose.methods.classical._window import window_for
from diffcompose.methods.classical.options import RemoveOptions
from diffcompose.progress import RunContext

log = logging.getLogger(__name__)

#: Parts of the mask closer than this (pixels) are filled in one window.
MERGE_DISTANCE = 8
#: Above this many separate parts, one window around all of them is cheaper.
MAX_PARTS = 32
#: Biharmonic solves a sparse system over the hole: past this many window pixels it works
#: at reduced resolution (its fill is smooth, so little is lost) to stay within seconds.
BIHARMONIC_MAX_PIXELS = 160_000
#: Per method: window pixels past which the window is worked at reduced resolution (None:
#: never). PatchMatch's time grows with the hole's pixels: about 0.7 s for a 0.16 MP window
#: with a 15% hole, about 6 s in all for a 2000x3000 hole in a 10 MP photo (worked at the
#: 0.5 MP cap); frequency-selective reconstruction is slower still (about 2 s for the first).
MAX_WINDOW_PIXELS: dict[str, int | None] = {
    "biharmonic": BIHARMONIC_MAX_PIXELS,
    "patchmatch": 500_000,
    "fsr-fast": 250_000,
}


def part_seed(seed: int, index: int) -> int:
    """The seed of part ``index`` of a run seeded with ``seed`` (a 32-bit int)."""
    return int(np.random.SeedSequence([int(seed) % 2**63, index]).generate_state(1)[0])


def _parts(mask: np.ndarray) -> list[np.ndarray]:
    """The mask split into groups of nearby connected components."""
    n, labels = cv2.connectedComponents(dilate_mask(mask, MERGE_DISTANCE // 2).astype(np.uint8), connectivity=8)
    if n - 1 <= 1 or n - 1 > MAX_PARTS:
        return [mask]
    return [mask & (labels == i) for i in range(1, n)]


def _fill(window_image: np.ndarray, hole: np.ndarray, opts: RemoveOptions, seed: int) -> np.ndarray:
    if opts.method == "patchmatch":
        return exemplar.patchmatch_fill(window_image, hole, patch=opts.patch, seed=seed)
    if opts.method == "fsr-fast":
        return exemplar.fsr_fill(window_image, hole, quality="fast")
    if opts.method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        filled = inpaint_biharmonic(window_image.astype(np.float64) / 255.0, hole, channel_axis=-1)
        return np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)
    flag = cv2.INPAINT_TELEA if opts.method == "telea" else cv2.INPAINT_NS
    return cv2.inpaint(np.ascontiguousarray(window_image), hole.astype(np.uint8), opts.radius, flag)


def _fill_part(image: np.ndarray, mask: np.ndarray, part: np.ndarray, opts: RemoveOptions, seed: int) -> np.ndarray:
    """Fill the pixels of ``part`` (returns the window's filled values for them)."""
    region: Box = mask_to_box(part)
    cap = MAX_WINDOW_PIXELS.get(opts.method)
    win = window_for(image.shape, region, context=0.5, min_context=max(16, 2 * opts.radius), max_pixels=cap)
    crop = win.crop(image)
    native = win.work_size == (win.box.width, win.box.height)
    # Downscaled: any working pixel touching the hole is unknown, so no object colour leaks in.
    hole = win.crop_mask(mask) if native else win.crop_mask(mask, soft=True) > 0
    if hole.all() and not native:  # thin gaps between parts vanished at the working size: keep them
        hole = win.crop_mask(mask, soft=True) >= 0.5
    if hole.all():  # the part fills its whole window: no context there, use the whole image
        return _fill(image, mask, opts, seed)[part]
    filled = _fill(crop, hole, opts, seed)
    if not native:
        return win.uncrop(filled, image)[part]
    return filled[part[win.box.slices]]


def remove(*, image: np.ndarray, mask: np.ndarray, options: RemoveOptions, ctx: RunContext) -> np.ndarray:
    """Fill ``mask`` from its surroundings; pixels outside the mask are returned unchanged."""
    out = image.copy()
    parts = _parts(mask)
    log.debug("remove: %s, %d part(s)", options.method, len(parts))
    progress = ctx.progress("remove", len(parts))
    for i, part in enumerate(parts):  # progress.step() checks for a cancel after each part
        out[part] = _fill_part(image, mask, part, options, part_seed(ctx.seed, i))
        progress.step()
    return out
