"""The Paint-by-Sketch engine: Paint-by-Example's sampler with the sketch as three more input channels.

Everything but the sketch (window, reference encoder, masked latent, guidance, scheduler, seed,
progress, paste-back) is :class:`~diffcompose.methods.pbe.engine.PaintByExampleEngine`'s; this
class loads the 12-channel model and hands the sampler the sketch channels of each step
(:mod:`.sketch`). No sketch given is a sketch without strokes.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from diffcompose.errors import InputError
from diffcompose.methods.pbe.engine import ExtraChannels, PaintByExampleEngine
from diffcompose.methods.pbsketch.components import load_pbsketch, locate_pbsketch
from diffcompose.methods.pbsketch.options import SketchPaintOptions
from diffcompose.methods.pbsketch.sketch import sketch_pixels, sketch_shown
from diffcompose.models import codec
from diffcompose.progress import RunContext

log = logging.getLogger(__name__)


def sketch_latent(pixels: np.ndarray, latent_size: tuple[int, int]) -> torch.Tensor:
    """``(1, 3, h, w)``: the ``(3, H, W)`` sketch channels on the latent grid, resized as the keep mask
    (bilinear, no antialiasing: the public code's torchvision tensor ``Resize``)."""
    x = torch.from_numpy(pixels)[None]
    return F.interpolate(x, size=tuple(latent_size), mode="bilinear", align_corners=False)


def sketch_channels(latent: torch.Tensor, steps: int, share: float) -> ExtraChannels:
    """The sampler's extra channels: the sketch while :func:`~.sketch.sketch_shown`, then zeros (the public rule)."""
    hidden = torch.zeros_like(latent)

    def channels(call: int, calls: int, batch: int) -> torch.Tensor:
        shown = sketch_shown(call, steps, calls, share)
        return (latent if shown else hidden).expand(batch, -1, -1, -1)

    return channels


class PaintBySketchEngine(PaintByExampleEngine):
    """Fill a masked region with an object like a reference photo, along a sketch (Kim et al., 2023)."""

    name = "pbsketch"

    def _load(self) -> None:
        self._resolve_device()
        self.c = load_pbsketch(self.model_dir(locate_pbsketch), self.device, self.dtype)

    def _sketch(self, sketch: np.ndarray | None, hole: np.ndarray, image: np.ndarray,
                options: SketchPaintOptions) -> ExtraChannels:
        if sketch is not None and not (sketch * hole).any():
            raise InputError("the sketch has no strokes inside the region: it shapes only what is painted there")
        stride = codec.vae_stride(self.c.vae)
        latent = sketch_latent(sketch_pixels(sketch, hole), (image.shape[0] // stride, image.shape[1] // stride))
        return sketch_channels(latent.to(self.device, self.dtype), options.steps, options.sketch_steps)

    def _paint(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
               reference_mask: np.ndarray | None, options: SketchPaintOptions, ctx: RunContext,
               sketch: np.ndarray | None = None, task: str = "paint", extra: ExtraChannels | None = None
               ) -> list[np.ndarray]:
        extra = self._sketch(sketch, mask, image, options)
        return super()._paint(image=image, mask=mask, reference=reference, reference_mask=reference_mask,
                              options=options, ctx=ctx, task=task, extra=extra)

    def _insert(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                reference_mask: np.ndarray | None, shape_mask: np.ndarray | None, options: SketchPaintOptions,
                ctx: RunContext, sketch: np.ndarray | None = None
                ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        """``insert`` is ``paint`` of the region (of the shape mask, when given), with the sketch."""
        hole = mask if shape_mask is None else shape_mask
        images = self._paint(image=image, mask=hole, reference=reference, reference_mask=reference_mask,
                             options=options, ctx=ctx, sketch=sketch, task="insert")
        return images if shape_mask is None else (images, [shape_mask] * len(images))
