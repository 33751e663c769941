"""The sketch channels: what the UNet sees of the sketch, and at which steps.

Facts of the public code (``kangyeolk/Paint-by-Sketch``): the UNet takes 12 input channels,
``[z_t (4), z_masked (4), keep (1), sketch (3)]`` (``configs/v1_aesthetic_sketch_image.yaml``,
``in_channels: 12``; the order in ``LatentDiffusion.get_input``). The sketch is an RGB image of
white strokes on black, read into [-1, 1]. With the published ``input_edge_type:
only_mask_region`` it is kept only inside the hole: ``2 * (sketch01 * hole) - 1``, so outside the
hole, and between strokes, it reads -1. It is then resized to the latent grid as the keep mask is
(torchvision's tensor ``Resize``: bilinear, no antialiasing in the version it pins; here
``F.interpolate(..., "bilinear", align_corners=False)``, what that calls). Classifier-free guidance
gives both halves the same sketch.

Part of the steps: the public PLMS sampler's ``_sketch_inject_strategy`` sets the sketch channels to
**0** (not -1) at every step from ``int(steps * not_use_sketch_after)`` on (the demo's slider,
default 1: the sketch at every step). Its first PLMS step evaluates the model twice, and both
evaluations see that step's sketch. Our PLMS (diffusers' PNDM without Runge-Kutta warm-up) makes
that second evaluation a step of its own at the start of the loop: :func:`sketch_shown` counts it
as part of the first public step.
"""

from __future__ import annotations

import numpy as np

#: Colour channels of the sketch input (the public model reads the sketch as RGB).
SKETCH_CHANNELS = 3


def sketch_pixels(sketch: np.ndarray | None, hole: np.ndarray) -> np.ndarray:
    """float32 ``(3, H, W)`` in [-1, 1]: the sketch (0..1, white = stroke) kept inside ``hole``
    (bool or 0..1, 1 = hole), -1 elsewhere; an absent sketch is a sketch without strokes."""
    strokes = np.zeros(hole.shape, np.float32) if sketch is None else sketch.astype(np.float32)
    if strokes.shape != hole.shape:
        raise ValueError(f"sketch {strokes.shape} and hole {hole.shape} differ in size")
    kept = strokes * hole.astype(np.float32)
    return np.repeat((2.0 * kept - 1.0)[None], SKETCH_CHANNELS, axis=0)


def shown_steps(steps: int, share: float) -> int:
    """How many of ``steps`` sampling steps, from the first, see the sketch (the public rule: ``int(steps * share)``)."""
    return int(steps * share)


def sketch_shown(call: int, steps: int, calls: int, share: float) -> bool:
    """Whether the model's ``call``-th evaluation (0-based) of a run of ``steps`` steps and ``calls``
    evaluations sees the sketch. The evaluations before the steps line up (``calls - steps``: 1 for
    PLMS's extra first evaluation, else 0) belong to the first step."""
    step = max(call - (calls - steps), 0)
    return step < shown_steps(steps, share)
