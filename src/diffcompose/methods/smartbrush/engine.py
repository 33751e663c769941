"""The SmartBrush engine: text- and shape-guided inpainting that keeps the background it does not need.

Per request (on the window the runner cuts around the region):

1. the user's mask is the *coarse* mask at precision level ``s`` (``--precision``; by
   default ``S`` for a rectangle, 0 otherwise); the UNet gets ``[x_t, m, z_masked]``, the
   text context and ``class_labels = s`` (:mod:`.model`);
2. sampling starts from ``x_T = n * m + z_0 * (1 - m)`` (``z_0``: the latent of the image, the
   posterior mean): ``n`` is pure Gaussian noise by default (``--start noise``, as Stable
   Diffusion samples), or with ``--start noised-image`` ``z_0`` noised to the first timestep
   (a faint trace of the region's old colours stays); with guidance both halves run in one
   batched call;
3. at every step the mask head's probability (of the conditional half) is smoothed over
   time, ``p <- a p + (1 - a) sigmoid(logit)`` with ``a = --mask-smoothing``, starting from
   the user's mask; thresholded at ``--mask-threshold``, grown by ``--mask-margin`` pixels
   (whole latent cells) and kept inside the user's mask, it is the region where the new
   latents are kept: ``x_{t-1} <- x_{t-1} * b + z_0 * (1 - b)``. So a box no longer
   repaints the whole box. An empty estimate falls back to the user's mask; an untrained
   (zero-initialised) head says 0.5 everywhere, which is the user's mask too;
4. the last estimate, at pixel size (bilinear), thresholded, grown by ``--mask-margin``
   pixels and cut to the user's mask, is returned with each image: the runner pastes back
   the original pixels outside it and hands it to ``--mask-output``.

Random draws, in order, from one generator: the initial noise, the VAE posterior sample of
the masked image, then the scheduler's (eta > 0).

The loop is :func:`~diffcompose.models.sampling.denoise`'s (guidance, progress, cancellation);
the background blend happens between scheduler steps, on the scheduler's latents, through its
``after_step`` hook (:class:`ObjectMaskBlend`). Only variance-preserving schedulers are offered:
with them the latents are ``x_t`` itself, so ``z_0`` can be blended in as it is.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffcompose.errors import PASS_MODEL, InputError, WeightsMissingError, engine_named, named
from diffcompose.inputs import dilate_mask
from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.methods.options import option_named
from diffcompose.methods.smartbrush.model import (
    is_smartbrush_unet, latent_mask, precision_levels, split_output,
)
from diffcompose.methods.smartbrush.options import SmartBrushOptions
from diffcompose.methods.smartbrush.precision import is_box
from diffcompose.models import codec
from diffcompose.models.device import make_generator
from diffcompose.models.loader import SDComponents, encode_prompts, load_sd, resolve_sd
from diffcompose.models.sampling import denoise, initial_noise, is_guided, make_scheduler
from diffcompose.progress import RunContext
from diffcompose.regions import WindowPolicy

log = logging.getLogger(__name__)

NO_WEIGHTS = ("no SmartBrush weights are published yet: train a model (diffcompose train smartbrush --config FILE) "
              f"and {PASS_MODEL} (its final/ folder), or {named('--model tiny', 'model', 'model tiny')} for a smoke "
              f"test; {engine_named('sd-inpaint')} works with public weights today")


class SmartBrushEngine(DiffusionEngine):
    """Fill a region with the object a prompt describes, following the region's shape as told by ``precision``."""

    name = "smartbrush"
    sd: SDComponents
    levels: int

    def _load(self) -> None:
        self._resolve_device()
        root = self.model_dir(lambda name: resolve_sd(name, hint="; pass --model DIR (a SmartBrush model from "
                                                                "'diffcompose train smartbrush --export'), or use "
                                                                "--engine sd-inpaint"), missing=NO_WEIGHTS)
        self.sd = load_sd(root, self.device, self.dtype)
        if not is_smartbrush_unet(self.sd.unet):
            cfg = self.sd.unet.config
            raise WeightsMissingError(
                f"{root} is not a SmartBrush model: its UNet takes {cfg.in_channels} input and {cfg.out_channels} "
                f"output channels without precision embeddings (SmartBrush: 9, 5 and num_class_embeds); "
                f"{NO_WEIGHTS.split(': ', 1)[1]}")
        self.levels = precision_levels(self.sd.unet)

    def modules(self) -> list[torch.nn.Module]:
        return self.sd.modules

    def window_policy(self, task: str, options: SmartBrushOptions) -> WindowPolicy:
        size = options.resolution or self.sd.resolution
        return WindowPolicy(size, codec.latent_multiple(self.sd.unet, self.sd.vae), context=options.context)

    def precision_of(self, mask: np.ndarray, options: SmartBrushOptions) -> int:
        """The level the user's mask is taken at: ``options.precision``, else S for a rectangle and 0 otherwise."""
        if options.precision is None:
            return self.levels if is_box(mask) else 0
        if options.precision > self.levels:
            raise InputError(f"{option_named('precision')} must be <= {self.levels} for this model, got "
                             f"{options.precision}")
        return options.precision

    @torch.no_grad()
    def _inpaint(self, *, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str,
                 options: SmartBrushOptions, ctx: RunContext) -> tuple[list[np.ndarray], list[np.ndarray]]:
        sd, dev, dt = self.sd, self.device, self.dtype
        n = options.num_images
        level = self.precision_of(mask, options)
        generator = make_generator(ctx.seed)
        guided = is_guided(options.guidance_scale)
        texts = [negative_prompt, prompt] if guided else [prompt]
        context = encode_prompts(sd, texts).repeat_interleave(n, dim=0)
        labels = torch.full((context.shape[0],), level, dtype=torch.long, device=dev)

        sched = make_scheduler(options.scheduler, dict(sd.scheduler.config))
        sched.set_timesteps(options.steps, device=dev)
        stride = codec.vae_stride(sd.vae)
        h, w = image.shape[0] // stride, image.shape[1] // stride
        noise = initial_noise(sd.vae, n, h, w, generator).to(dev, dt)

        hole = codec.mask_to_tensor(mask, dev, dt)
        pixels = codec.images_to_tensor(image, dev, dt)
        z_masked = codec.encode(sd.vae, pixels * (hole < 0.5), generator)
        z0 = codec.encode(sd.vae, pixels).expand(n, -1, -1, -1)
        m = latent_mask(hole, stride)
        cond_in = torch.cat([m, z_masked], 1).expand(n, -1, -1, -1)
        if guided:
            cond_in = torch.cat([cond_in, cond_in])
        latents = start_latents(sched, z0, noise, m, options.start)

        blend = ObjectMaskBlend(m, z0, options, cells=math.ceil(options.mask_margin / stride), guided=guided)

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = sd.unet(torch.cat([x, cond_in], 1), t, encoder_hidden_states=context, class_labels=labels).sample
            return blend.keep_logit(out)

        log.info("smartbrush %dx%d, precision %d, %d steps (%s)", image.shape[1], image.shape[0], level,
                 options.steps, options.scheduler)
        latents = denoise(model, sched, latents, guidance_scale=options.guidance_scale, generator=generator,
                          progress=ctx.progress("inpaint", len(sched.timesteps)), eta=options.eta,
                          preview=lambda z: codec.tensor_to_images(codec.decode(sd.vae, z[:1]))[0],
                          after_step=blend)
        images = codec.tensor_to_images(codec.decode(sd.vae, latents).clamp(-1, 1))
        return images, object_masks(blend.prob, mask, options.mask_threshold, options.mask_margin)


def start_latents(sched: Any, z0: torch.Tensor, noise: torch.Tensor, m: torch.Tensor, start: str) -> torch.Tensor:
    """``x_T``: the region starts from ``noise`` (``start="noise"``) or from ``z0`` noised to the first
    timestep (``"noised-image"``); outside it the photo's clean latent ``z0`` (module docstring, point 2)."""
    if start == "noise":
        region = noise * sched.init_noise_sigma
    elif start == "noised-image":
        region = sched.add_noise(z0, noise, sched.timesteps[:1].repeat(z0.shape[0]))
    else:
        raise ValueError(f"start must be noise or noised-image, got {start!r}")
    return region * m + z0 * (1 - m)


class ObjectMaskBlend:
    """The object mask SmartBrush estimates while sampling, and the background blend it drives (module
    docstring, point 3), as the two hooks :func:`~diffcompose.models.sampling.denoise` offers.

    :meth:`keep_logit` wraps the model function: it keeps the mask head's logit (of the conditional
    half when guided) and hands the noise prediction on. Called after each scheduler step, the
    object smooths the probability with that logit and returns the blended latents.
    """

    def __init__(self, user: torch.Tensor, z0: torch.Tensor, options: SmartBrushOptions, *, cells: int,
                 guided: bool) -> None:
        self.user, self.z0, self.options, self.cells, self.guided = user, z0, options, cells, guided
        #: The time-smoothed object probability per image, starting from the user's (latent) mask.
        self.prob = user.expand(z0.shape[0], -1, -1, -1).float()
        self.logit: torch.Tensor | None = None

    def keep_logit(self, out: torch.Tensor) -> torch.Tensor:
        """The noise prediction of the UNet's output ``out``; its mask logit is kept for the next blend."""
        eps, logit = split_output(out)
        self.logit = logit.chunk(2)[1] if self.guided else logit
        return eps

    def __call__(self, step: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if self.logit is None:
            raise RuntimeError("the mask blend ran before the model function kept a logit")
        a = self.options.mask_smoothing
        self.prob = a * self.prob + (1 - a) * torch.sigmoid(self.logit.float())
        keep_new = blend_region(self.prob, self.user, self.options.mask_threshold, self.cells).to(self.z0.dtype)
        return latents * keep_new + self.z0 * (1 - keep_new)


def blend_region(prob: torch.Tensor, user: torch.Tensor, threshold: float, cells: int) -> torch.Tensor:
    """Where the new latents are kept this step: ``prob >= threshold`` grown by ``cells`` latent cells,
    inside the user's (latent) mask; the user's mask where that leaves nothing."""
    inside = user > 0.5
    region = (prob >= threshold) & inside
    if cells > 0:
        region = F.max_pool2d(region.float(), 2 * cells + 1, stride=1, padding=cells) > 0.5
    region = region & inside
    empty = ~region.flatten(1).any(1)
    region = torch.where(empty[:, None, None, None], inside.expand_as(region), region)
    return region.float()


def object_masks(prob: torch.Tensor, user: np.ndarray, threshold: float, margin: int) -> list[np.ndarray]:
    """The final object masks at the user mask's pixel size (see the module docstring, point 4)."""
    h, w = user.shape
    up = F.interpolate(prob.float().cpu(), size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
    out = []
    for p in up:
        region = dilate_mask((p >= threshold) & user, margin) & user
        out.append(region if region.any() else user.copy())
    return out
