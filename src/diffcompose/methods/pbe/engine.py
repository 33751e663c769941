"""The Paint-by-Example engine: a square window around the mask, guided sampling on the shared loop.

The UNet input is the 9-channel ``[z_t, z_masked, mask_keep]``: the noisy latent, the VAE
latent of the image with the hole zeroed, and the keep mask (1 = keep, 0 = hole) at
latent resolution, built by the same functions training uses
(:func:`~.components.masked_condition`, :func:`~.components.unet_input`); the context is
the exemplar encoder's one token (its learned unconditional vector for the unguided half).

Random draws happen in a fixed order from one generator: the initial noise, then the VAE
posterior sample of the masked image, then whatever the scheduler draws (eta > 0).
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.methods.pbe.components import PbEComponents, load_pbe, locate_pbe, masked_condition, unet_input
from diffcompose.methods.pbe.options import PaintOptions
from diffcompose.methods.pbe.reference import prepare_reference
from diffcompose.models import codec
from diffcompose.models.device import make_generator
from diffcompose.models.sampling import denoise, initial_noise, is_guided, make_scheduler
from diffcompose.progress import RunContext
from diffcompose.regions import WindowPolicy

log = logging.getLogger(__name__)

#: ``extra(call, calls, batch) -> channels``: the extra UNet input channels (latent-sized, ``batch`` rows:
#: the guided batch when guided) for the model's ``call``-th of ``calls`` evaluations in the run. The
#: denoising loop calls the model once per scheduler timestep, so ``call`` is the loop's step index.
ExtraChannels = Callable[[int, int, int], torch.Tensor]

#: Guidance at every scale but exactly 1, as the original's ``scripts/inference.py`` (``scale != 1``).
GUIDE_BELOW_ONE = True


class PaintByExampleEngine(DiffusionEngine):
    """Fill a masked region with an object like a reference photo (Yang et al., CVPR 2023)."""

    name = "pbe"
    c: PbEComponents

    def _load(self) -> None:
        self._resolve_device()
        self.c = load_pbe(self.model_dir(locate_pbe), self.device, self.dtype)

    @classmethod
    def from_components(cls, c: PbEComponents) -> "PaintByExampleEngine":
        """A loaded engine over modules already in memory (benchmarks, models built in code)."""
        engine = cls(device=str(c.device), dtype=str(c.dtype).replace("torch.", ""))
        engine.device, engine.dtype, engine.c, engine._loaded = c.device, c.dtype, c, True
        return engine

    def modules(self) -> list[torch.nn.Module]:
        return self.c.modules

    def window_policy(self, task: str, options: PaintOptions) -> WindowPolicy:
        size = options.resolution or codec.native_resolution(self.c.unet, self.c.vae)
        multiple = codec.latent_multiple(self.c.unet, self.c.vae)
        return WindowPolicy(size, multiple, square=True, context=options.context, whole_image=not options.crop)

    @torch.no_grad()
    def _paint(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
               reference_mask: np.ndarray | None, options: PaintOptions, ctx: RunContext,
               task: str = "paint", extra: ExtraChannels | None = None) -> list[np.ndarray]:
        """``extra``: more UNet input channels after the 9 (a model that extends the input, such as
        Paint-by-Sketch), asked for at each model call (see :data:`ExtraChannels`)."""
        c, dev, dt = self.c, self.device, self.dtype
        n = options.num_images
        generator = make_generator(ctx.seed)
        guided = is_guided(options.guidance_scale, below_one=GUIDE_BELOW_ONE)
        cond = c.encoder(torch.from_numpy(self._reference_input(reference, reference_mask, options))[None].to(dev, dt))
        cond = cond.expand(n, -1, -1)
        context = torch.cat([c.encoder.uncond(n, cond.shape[1]).to(dt), cond]) if guided else cond

        sched = self._scheduler(options)
        stride = codec.vae_stride(c.vae)
        h, w = image.shape[0] // stride, image.shape[1] // stride
        latents = initial_noise(c.vae, n, h, w, generator).to(dev, dt) * sched.init_noise_sigma

        pixels, hole = codec.images_to_tensor(image, dev, dt), codec.mask_to_tensor(mask, dev, dt)
        masked, keep_latent = masked_condition(pixels, hole, (h, w), self._latent_mask(options))
        z_masked = codec.encode(c.vae, masked, generator).expand(n, -1, -1, -1)
        keep_latent = keep_latent.expand(n, -1, -1, -1)
        if guided:
            z_masked, keep_latent = torch.cat([z_masked, z_masked]), torch.cat([keep_latent, keep_latent])

        calls = len(sched.timesteps)
        count = iter(range(calls))

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            more = () if extra is None else (extra(next(count), calls, x.shape[0]),)
            return c.unet(unet_input(x, z_masked, keep_latent, *more), t, encoder_hidden_states=context).sample

        log.info("painting %dx%d, %d steps (%s)", image.shape[1], image.shape[0], options.steps, options.scheduler)
        latents = denoise(model, sched, latents, guidance_scale=options.guidance_scale, generator=generator,
                          guide_below_one=GUIDE_BELOW_ONE, eta=options.eta,
                          progress=ctx.progress(task, len(sched.timesteps)),
                          preview=lambda z: codec.tensor_to_images(codec.decode(c.vae, z[:1]))[0])
        return codec.tensor_to_images(codec.decode(c.vae, latents).clamp(-1, 1))

    # Hooks: what an engine on this sampler with another exemplar encoder (ObjectStitch) changes.
    def _reference_input(self, reference: np.ndarray, reference_mask: np.ndarray | None,
                         options: PaintOptions) -> np.ndarray:
        """The encoder's float32 ``(3, S, S)`` input for the reference photo."""
        return prepare_reference(reference, reference_mask, size=self.c.encoder.image_size,
                                 mode=options.reference_preprocess)

    def _latent_mask(self, options: PaintOptions) -> str:
        return options.latent_mask

    def _scheduler(self, options: PaintOptions):
        """The sampler with its timesteps set."""
        sched = make_scheduler(options.scheduler, self.c.scheduler_config)
        sched.set_timesteps(options.steps, device=self.device)
        return sched

    def _insert(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                reference_mask: np.ndarray | None, shape_mask: np.ndarray | None, options: PaintOptions,
                ctx: RunContext) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        """``insert`` is ``paint`` of the region (of the shape mask, when given: shape control).

        With a shape mask only the shape is painted, so only the shape is pasted back: the rest
        of the region keeps the scene's own pixels, not their trip through the VAE.
        """
        hole = mask if shape_mask is None else shape_mask
        images = self._paint(image=image, mask=hole, reference=reference, reference_mask=reference_mask,
                             options=options, ctx=ctx, task="insert")
        return images if shape_mask is None else (images, [shape_mask] * len(images))
