"""Uni-paint's sampling schedule: which latents are blended in, and which prompt is read, at each step.

Facts from the public DDIM sampler (``ldm/models/diffusion/ddim.py``) and its callers: at step
``i`` of ``total`` (``index = total - 1 - i``, so ``index / total`` falls from about 1 to 0), *before*
the network is called,

* the known region is put back from the photo's latent noised to that step's timestep with fresh
  noise, on every step (``blend_interval=[0, 1]``; region = the dilated latent hole);
* with a stroke, inside the stroke the sample is replaced by the stroke's latent noised to the
  step's timestep while ``tau <= index / total <= tau + 0.02`` (one step of 50 at tau = 0.55): an
  SDEdit-style start from the coloured stroke partway down the schedule;
* with a stroke the prompt is the empty text while ``index / total >= tau`` and the user's after
  (so guidance is void until the stroke is in).

Nothing is blended after the last step; the runner's paste-back restores the known pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from diffcompose.methods.unipaint.tuning import q_sample

#: How long (a share of the schedule) the stroke is blended in from ``tau`` on (public: 0.02).
STROKE_WINDOW = 0.02


@dataclass
class Blend:
    """Replace the sample by ``z0`` noised to the step's timestep where ``where`` is 1, while
    ``lo <= index / total <= hi``."""

    z0: torch.Tensor
    where: torch.Tensor
    lo: float
    hi: float

    def due(self, index: int, total: int) -> bool:
        return self.lo <= index / total <= self.hi


def background_blend(z_known: torch.Tensor, hole: torch.Tensor) -> Blend:
    """The known region, put back on every step."""
    return Blend(z_known, 1 - hole, 0.0, 1.0)


def stroke_blend(z_stroke: torch.Tensor, stroke_mask: torch.Tensor, tau: float) -> Blend:
    return Blend(z_stroke, stroke_mask, tau, tau + STROKE_WINDOW)


def apply_blends(latents: torch.Tensor, blends: list[Blend], index: int, total: int, t: torch.Tensor,
                 alphas_cumprod: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The sample after the blends due at ``index`` (in list order; each draws its own noise)."""
    for b in blends:
        if b.due(index, total):
            noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
            noisy = q_sample(b.z0.expand_as(latents), t.reshape(1).cpu(), noise, alphas_cumprod)
            latents = noisy * b.where + latents * (1 - b.where)
    return latents


def reads_prompt(index: int, total: int, tau: float | None) -> bool:
    """Whether step ``index`` reads the user's prompt (``tau``: the stroke start; ``None``: no stroke)."""
    return tau is None or index / total < tau


def stroke_pixels(stroke: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colours, stroke mask): the stroke's pixels inside the region, black elsewhere, and where it is not black."""
    colours = stroke * hole[..., None].astype(stroke.dtype)
    return colours, colours.sum(axis=-1) > 0


def stroke_latent_mask(mask: np.ndarray, latent_size: tuple[int, int], device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    """``(1, 1, h, w)``: the stroke mask at latent size (nearest, as the public code)."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(m, size=latent_size).to(device, dtype)
