"""Engine entry for the ``paint`` task: window around the mask, guided sampling, uncrop."""

from __future__ import annotations

import logging

import numpy as np
import torch

from diffcompose.inputs import Box, mask_to_box
from diffcompose.methods.pbe.components import PbEComponents, load_pbe, resolve_pbe
from diffcompose.methods.pbe.options import PaintOptions
from diffcompose.methods.pbe.reference import prepare_reference
from diffcompose.methods.pbe.sampler import denoise
from diffcompose.methods.registry import Runtime
from diffcompose.models.device import make_generator, pick_device, pick_dtype
from diffcompose.regions import Window, plan_window

log = logging.getLogger(__name__)


def plan(image_shape: tuple[int, ...], mask: np.ndarray, options: PaintOptions, native: int) -> Window:
    """A square window around the mask (or the whole image) at the working resolution."""
    h, w = image_shape[:2]
    resolution = options.resolution or native
    if options.crop:
        return plan_window((w, h), mask_to_box(mask), context=options.context, resolution=resolution,
                           multiple=8, square=True)
    return plan_window((w, h), Box(0, 0, w, h), context=0.0, min_context=0, resolution=resolution, multiple=8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H,W,3) -> float32 (1,3,H,W) in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def to_uint8(batch: torch.Tensor) -> list[np.ndarray]:
    """(N,3,H,W) in [-1, 1] -> N uint8 (H,W,3) arrays."""
    x = ((batch.float().cpu() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return list((x * 255.0).round().astype(np.uint8))


@torch.no_grad()
def paint_window(c: PbEComponents, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                 reference_mask: np.ndarray | None, options: PaintOptions, runtime: Runtime) -> list[np.ndarray]:
    """Run the model on an image already at the working size (sides multiples of 8)."""
    ref = prepare_reference(reference, reference_mask, size=c.encoder.image_size, mode=options.reference_preprocess)
    keep = torch.from_numpy(~mask)[None, None].float()
    out = denoise(c, to_tensor(image), keep, torch.from_numpy(ref)[None], num_images=options.num_images,
                  steps=options.steps, guidance_scale=options.guidance_scale, scheduler=options.scheduler,
                  eta=options.eta, generator=make_generator(runtime.seed), progress=runtime.progress,
                  callback=runtime.callback)
    return to_uint8(out)


def paint(*, image: np.ndarray, mask: np.ndarray, reference: np.ndarray, reference_mask: np.ndarray | None,
          options: PaintOptions, runtime: Runtime) -> list[np.ndarray]:
    """Fill ``mask`` of ``image`` with an object like ``reference``: ``num_images`` full-size results."""
    device = pick_device(runtime.device)
    dtype = pick_dtype(device, runtime.dtype)
    c = load_pbe(resolve_pbe(runtime.model), device, dtype)
    win = plan(image.shape, mask, options, c.resolution)
    log.info("painting window %s at %dx%d, %d steps (%s)", win.box, *win.work_size, options.steps, options.scheduler)
    outs = paint_window(c, win.crop(image), win.crop_mask(mask), reference, reference_mask, options, runtime)
    return [win.uncrop(o, image) for o in outs]
