"""The guided denoising loop of Paint-by-Example.

Each step makes **one** UNet call on a batch of ``2 n`` (unconditional and conditional
halves) and mixes them as ``e = e_u + s (e_c - e_u)``. The UNet input is the 9-channel
``[z_t, z_masked, mask_keep]``: the noisy latent, the VAE latent of the image with the hole
zeroed, and the keep mask (1 = keep, 0 = hole) at latent resolution.

Random draws happen in a fixed order from one generator: the initial noise, then the VAE
posterior sample of the masked image, then whatever the scheduler draws (eta > 0).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffcompose.methods.pbe.components import PbEComponents

SchedulerName = Literal["plms", "ddim", "euler", "dpm"]


def make_scheduler(name: str, config: dict[str, Any]) -> Any:
    """An inference scheduler sharing the model's training noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

    classes = {"plms": PNDMScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
               "dpm": DPMSolverMultistepScheduler}
    extra = {"skip_prk_steps": True} if name == "plms" else {}
    return classes[name].from_config({**config, **extra})


def encode_masked(c: PbEComponents, image: torch.Tensor, keep: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Latent of ``image * keep`` (a posterior sample, as in training), scaled for the UNet."""
    posterior = c.vae.encode(image * keep).latent_dist
    return posterior.sample(generator=generator) * c.latent_scale


def denoise(
    c: PbEComponents,
    image: torch.Tensor,
    keep: torch.Tensor,
    reference: torch.Tensor,
    *,
    num_images: int = 1,
    steps: int = 50,
    guidance_scale: float = 5.0,
    scheduler: str = "plms",
    eta: float = 0.0,
    generator: torch.Generator,
    progress: bool = False,
    callback: Callable[..., None] | None = None,
) -> torch.Tensor:
    """Fill the hole of ``image`` (1,3,H,W in [-1,1]); ``keep`` (1,1,H,W) is 1 where pixels stay.

    ``reference`` is the encoder input (1,3,S,S). Returns ``(num_images, 3, H, W)`` in [-1, 1].
    """
    dev, dt = c.device, c.dtype
    guided = guidance_scale > 1.0
    n = num_images
    cond = c.encoder(reference.to(dev, dt)).expand(n, -1, -1)
    context = torch.cat([c.encoder.uncond(n).to(dt), cond]) if guided else cond

    sched = make_scheduler(scheduler, c.scheduler_config)
    sched.set_timesteps(steps, device=dev)
    h, w = image.shape[-2] // c.vae_factor, image.shape[-1] // c.vae_factor
    noise = torch.randn((n, c.unet.config.out_channels, h, w), generator=generator, dtype=torch.float32)
    latents = noise.to(dev, dt) * sched.init_noise_sigma

    image, keep = image.to(dev, dt), keep.to(dev, dt)
    z_masked = encode_masked(c, image, keep, generator)
    cond_in = torch.cat([z_masked.expand(n, -1, -1, -1), F.interpolate(keep, size=(h, w)).expand(n, -1, -1, -1)], 1)
    if guided:
        cond_in = torch.cat([cond_in, cond_in])

    step_kwargs = _step_kwargs(sched, eta, generator)
    for i, t in enumerate(tqdm(sched.timesteps, desc="paint", disable=not progress, leave=False)):
        z = torch.cat([latents, latents]) if guided else latents
        z = sched.scale_model_input(z, t)
        eps = c.unet(torch.cat([z, cond_in], dim=1), t, encoder_hidden_states=context).sample
        if guided:
            e_u, e_c = eps.chunk(2)
            eps = e_u + guidance_scale * (e_c - e_u)
        latents = sched.step(eps, t, latents, **step_kwargs).prev_sample
        if callback is not None:
            callback(i, t, latents)
    return c.vae.decode(latents / c.latent_scale).sample.clamp(-1, 1)


def _step_kwargs(sched: Any, eta: float, generator: torch.Generator) -> dict[str, Any]:
    params = inspect.signature(sched.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs
