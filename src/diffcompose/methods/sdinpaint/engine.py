"""The SD-inpainting engine: a window around the region, guided sampling on the shared loop.

The UNet input is SD-inpainting's 9 channels ``[z_t, mask, z_masked]``: the noisy latent,
the hole mask at latent size (1 = paint here, nearest-resampled) and the VAE latent of the
image with the hole zeroed (``image * (mask < 0.5)``). Note the order and the mask polarity
differ from Paint-by-Example's ``[z_t, z_masked, keep]``. The context is CLIP text:
``[negative, prompt]`` for the two halves of classifier-free guidance.

Random draws happen in a fixed order from one generator: the initial noise, then the VAE
posterior sample of the masked image, then whatever the scheduler draws (eta > 0).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from diffcompose.errors import WeightsMissingError
from diffcompose.methods.diffusion import DiffusionEngine
from diffcompose.methods.sdinpaint.options import InpaintOptions
from diffcompose.models import codec
from diffcompose.models.device import make_generator
from diffcompose.models.loader import SDComponents, encode_prompts, load_sd, resolve_sd
from diffcompose.models.sampling import denoise, initial_noise, is_guided, make_scheduler
from diffcompose.progress import RunContext
from diffcompose.regions import WindowPolicy

log = logging.getLogger(__name__)

#: The way out when the weights are missing (no classical engine paints from text).
WAYS_OUT = "; pass --model DIR (a local SD inpainting directory in the diffusers layout)"
#: Channels of the UNet input: [z_t (4), mask (1), z_masked (4)].
IN_CHANNELS = 9


class SDInpaintEngine(DiffusionEngine):
    """Fill a region with what a prompt describes (any diffusers SD1.x/2.x inpainting checkpoint)."""

    name = "sd-inpaint"
    sd: SDComponents

    def _load(self) -> None:
        self._resolve_device()
        root = self.model_dir(lambda name: resolve_sd(name, hint=WAYS_OUT))
        self.sd = load_sd(root, self.device, self.dtype)
        if self.sd.unet.config.in_channels != IN_CHANNELS:
            raise WeightsMissingError(f"{root} is not an inpainting model: its UNet takes "
                                      f"{self.sd.unet.config.in_channels} input channels, not {IN_CHANNELS}; "
                                      "pass --model with an SD inpainting checkpoint")

    def modules(self) -> list[torch.nn.Module]:
        return self.sd.modules

    def window_policy(self, task: str, options: InpaintOptions) -> WindowPolicy:
        size = options.resolution or self.sd.resolution
        return WindowPolicy(size, codec.latent_multiple(self.sd.unet, self.sd.vae), context=options.context)

    @torch.no_grad()
    def _inpaint(self, *, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str,
                 options: InpaintOptions, ctx: RunContext) -> list[np.ndarray]:
        sd, dev, dt = self.sd, self.device, self.dtype
        n = options.num_images
        generator = make_generator(ctx.seed)
        guided = is_guided(options.guidance_scale)
        texts = [negative_prompt, prompt] if guided else [prompt]
        context = encode_prompts(sd, texts).repeat_interleave(n, dim=0)

        sched = make_scheduler(options.scheduler, dict(sd.scheduler.config))
        sched.set_timesteps(options.steps, device=dev)
        stride = codec.vae_stride(sd.vae)
        h, w = image.shape[0] // stride, image.shape[1] // stride
        latents = initial_noise(sd.vae, n, h, w, generator).to(dev, dt) * sched.init_noise_sigma

        hole = codec.mask_to_tensor(mask, dev, dt)
        z_masked = codec.encode(sd.vae, codec.images_to_tensor(image, dev, dt) * (hole < 0.5), generator)
        cond_in = torch.cat([F.interpolate(hole, size=(h, w)).expand(n, -1, -1, -1), z_masked.expand(n, -1, -1, -1)], 1)
        if guided:
            cond_in = torch.cat([cond_in, cond_in])

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return sd.unet(torch.cat([x, cond_in], dim=1), t, encoder_hidden_states=context).sample

        log.info("inpainting %dx%d, %d steps (%s)", image.shape[1], image.shape[0], options.steps, options.scheduler)
        latents = denoise(model, sched, latents, guidance_scale=options.guidance_scale, generator=generator,
                          eta=options.eta, progress=ctx.progress("inpaint", len(sched.timesteps)),
                          preview=lambda z: codec.tensor_to_images(codec.decode(sd.vae, z[:1]))[0])
        return codec.tensor_to_images(codec.decode(sd.vae, latents).clamp(-1, 1))
