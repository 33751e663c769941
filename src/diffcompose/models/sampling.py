"""The one denoising loop, and the small pieces of sampling math every engine shares.

An engine describes its network as a *model function* ``model(x, t) -> prediction``: a
closure over whatever it conditions on (Paint-by-Example's 9-channel input and image
context, ControlNet residuals, an extra input embedding, an extra output channel that it
keeps for itself). :func:`denoise` owns the rest: the scheduler, classifier-free guidance
(one batched call on ``[uncond, cond]`` per step), the seeded generator, progress and
cancellation, and an optional hook between steps for engines that edit the latents there.
:func:`guide` and :func:`to_epsilon` are shared with FreeCompose's DDS.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from diffcompose.progress import Progress

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``after_step(step index, timestep, latents) -> replacement latents or None`` (see :func:`denoise`).
AfterStep = Callable[[int, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


def guide(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def is_guided(scale: float, *, below_one: bool = False) -> bool:
    """Whether ``scale`` needs the unconditional branch; the model function must agree (one
    ``[uncond, cond]`` batch when guided).

    By default only scales above 1, as diffusers' pipelines (a scale <= 1 means one plain
    conditional call). ``below_one=True``: every scale but exactly 1, as the original
    CompVis / Paint-by-Example scripts (below 1 moves *towards* the unconditional prediction,
    0 is the unconditional prediction).
    """
    return scale != 1.0 if below_one else scale > 1.0


def to_epsilon(prediction: torch.Tensor, z_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
               ) -> torch.Tensor:
    """The noise prediction from an epsilon or v prediction at ``z_t`` (``alpha_bar`` = cumulative alpha of t)."""
    if prediction_type == "epsilon":
        return prediction
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * prediction + (1 - alpha_bar).sqrt() * z_t
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def make_scheduler(name: str, config: dict[str, Any]) -> Any:
    """An inference scheduler sharing the model's training noise schedule; ``name`` is one of
    :data:`diffcompose.methods.options.SCHEDULERS` (the choices the engines' options offer)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

    classes = {"plms": PNDMScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
               "dpm": DPMSolverMultistepScheduler}
    extra = {"skip_prk_steps": True} if name == "plms" else {}
    return classes[name].from_config({**config, **extra})


def initial_noise(vae: Any, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Float32 CPU noise shaped like the VAE's latents (its latent channels, not the UNet's outputs)."""
    channels = int(vae.config.latent_channels)
    return torch.randn((batch, channels, height, width), generator=generator, dtype=torch.float32)


def step_kwargs(scheduler: Any, eta: float, generator: torch.Generator) -> dict[str, Any]:
    """``eta`` and ``generator`` for the schedulers whose ``step`` takes them."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def denoise(model: ModelFn, scheduler: Any, latents: torch.Tensor, *, guidance_scale: float,
            generator: torch.Generator, progress: Progress, eta: float = 0.0,
            preview: Callable[[torch.Tensor], Any] | None = None, guide_below_one: bool = False,
            after_step: AfterStep | None = None) -> torch.Tensor:
    """Run ``scheduler``'s timesteps (set by the caller) from ``latents``; returns the final latents.

    With guidance (:func:`is_guided`, ``below_one=guide_below_one``), ``model`` is called once
    per step on the batch ``[latents, latents]`` and its output split into the unconditional
    and conditional halves. ``preview(latents)``, when given, becomes the events' lazy preview.

    ``after_step(i, t, latents)``, when given, is called after each scheduler step (``i`` counts
    from 0, ``t`` is that step's timestep) with the stepped latents; what it returns, unless
    ``None``, replaces them. It is how an engine edits the sampler's state between steps
    (SmartBrush blends the original background back in) without a copy of this loop. The
    step's progress event (and its preview) comes after it, so it shows the latents the next
    step starts from.
    """
    guided = is_guided(guidance_scale, below_one=guide_below_one)
    kwargs = step_kwargs(scheduler, eta, generator)
    for i, t in enumerate(scheduler.timesteps):
        x = torch.cat([latents, latents]) if guided else latents
        pred = model(scheduler.scale_model_input(x, t), t)
        if guided:
            pred = guide(*pred.chunk(2), guidance_scale)
        latents = scheduler.step(pred, t, latents, **kwargs).prev_sample
        if after_step is not None:
            replaced = after_step(i, t, latents)
            if replaced is not None:
                latents = replaced
        snapshot = latents
        progress.step(timestep=int(t), preview=None if preview is None else (lambda z=snapshot: preview(z)))
    return latents
