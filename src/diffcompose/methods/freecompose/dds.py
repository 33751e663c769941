"""The DDS optimiser core shared by the three FreeCompose tasks.

One iteration: draw one timestep ``t`` and one noise ``eps`` (shared by both branches),
noise ``z_src`` and ``z_tgt``, run the UNet ONCE on the batch ``[u_src, u_tgt, c_src,
c_tgt]`` without autograd, apply classifier-free guidance per branch (v-prediction
converted to epsilon first), and step the optimiser on ``z_tgt`` with the gradient
``dds_scale(z) * weight_map * (e_tgt - e_src)`` plus the gradients of any extra losses (the
perceptual terms, which decode ``z_tgt`` with autograd). Every random draw comes from
one seeded CPU generator; no graph outlives its iteration. Guidance and the v-to-epsilon
conversion are the shared ones of :mod:`diffcompose.models.sampling`.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from diffcompose.attention import AttentionEdit, edit_attention
from diffcompose.models import codec
from diffcompose.models.loader import encode_prompts  # noqa: F401  (the tasks' text encoder)
from diffcompose.models.sampling import guide, to_epsilon
from diffcompose.progress import Progress

log = logging.getLogger(__name__)

#: The public code scales the DDS loss by 20000 / (latent pixels): 20000 / 4096 at 64x64 latents.
DDS_SCALE_TOTAL = 20000.0


def dds_scale(latent: torch.Tensor) -> float:
    """The DDS gradient's scale for a latent of this size (per latent pixel, as the public code)."""
    return DDS_SCALE_TOTAL / float(latent.shape[-2] * latent.shape[-1])

Loss = Callable[[torch.Tensor], torch.Tensor]  # decoded image in [0, 1] -> scalar


@dataclass
class Branches:
    """What differs between the source and target rows: text, and optionally adapter features."""

    embeddings: torch.Tensor  # (4, L, D): [null, null, P_src, P_tgt]
    adapter_features: list[torch.Tensor] | None = None  # each (4, C, h, w): [orig, edit, orig, edit], scaled


@dataclass
class DDSConfig:
    iterations: int
    guidance: float = 7.5
    lr: float = 0.05
    optimizer: str = "sgd"
    t_range: Callable[[int], tuple[int, int]] = lambda i: (50, 950)  # iteration -> inclusive [lo, hi]
    weight_map: torch.Tensor | None = None  # (1, 1, h, w) on the latent grid


# ----------------------------------------------------------------------------- encoders

@torch.no_grad()
def encode_image(sd: Any, image: np.ndarray) -> torch.Tensor:
    """The VAE posterior mean times the scaling factor, in float32."""
    return codec.encode(sd.vae, codec.images_to_tensor(image, sd.device, sd.dtype)).float()


def decode_latent(sd: Any, z: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) image in [0, 1] (not clamped, so gradients flow); autograd as the caller sets."""
    return (codec.decode(sd.vae, z.to(sd.dtype)).float() + 1.0) / 2.0


def to_uint8(image01: torch.Tensor) -> np.ndarray:
    return codec.tensor_to_images(image01[:1] * 2.0 - 1.0)[0]


# ----------------------------------------------------------------------------- the step

@torch.no_grad()
def dds_gradient(sd: Any, z_src: torch.Tensor, z_tgt: torch.Tensor, t: int, noise: torch.Tensor,
                 branches: Branches, guidance: float, alphas: torch.Tensor) -> torch.Tensor:
    """``e_tgt - e_src`` (float32, latent shape) from one batch-4 UNet call."""
    a = alphas[t]
    zs = a.sqrt() * z_src + (1 - a).sqrt() * noise
    zt = a.sqrt() * z_tgt + (1 - a).sqrt() * noise
    batch = torch.cat([zs, zt, zs, zt]).to(sd.dtype)
    residuals = None if branches.adapter_features is None else list(branches.adapter_features)  # popped by the UNet
    out = sd.unet(batch, torch.tensor(t, device=batch.device), encoder_hidden_states=branches.embeddings,
                  down_intrablock_additional_residuals=residuals).sample.float()
    out = to_epsilon(out, batch.float(), a, sd.prediction_type)
    u_src, u_tgt, c_src, c_tgt = out.chunk(4)
    return guide(u_tgt, c_tgt, guidance) - guide(u_src, c_src, guidance)


def optimise(sd: Any, z_src: torch.Tensor, branches: Branches, cfg: DDSConfig, generator: torch.Generator, *,
             progress: Progress, losses: Sequence[tuple[float, Loss]] = (),
             attention: AttentionEdit | None = None,
             decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Optimise a copy of ``z_src`` with DDS (+ weighted ``losses`` on its decode); returns it detached.

    ``decode`` (latent -> image in [0, 1], with autograd) feeds the losses; default the
    model's VAE in its dtype (engines pass a float32 one so small gradients survive). Each
    iteration ends with ``progress.step(timestep, preview)`` (the preview decodes that
    iteration's latent, only if the listener calls it), which also stops a cancelled run.
    The first iteration logs, at debug level, the norms of the DDS and loss gradients.
    """
    decode = decode or (lambda z: decode_latent(sd, z))
    scale = dds_scale(z_src)
    device = z_src.device
    alphas = sd.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    z = z_src.detach().clone().requires_grad_(True)
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
    opt = opt_cls([z], lr=cfg.lr)
    weight = None if cfg.weight_map is None else cfg.weight_map.to(device=device, dtype=torch.float32)
    ctx = edit_attention(sd.unet, attention) if attention is not None else nullcontext()
    with ctx:
        for i in range(cfg.iterations):
            lo, hi = cfg.t_range(i)
            t = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            noise = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(device)
            if attention is not None:
                attention.update(i, t)
            grad = dds_gradient(sd, z_src, z.detach(), t, noise, branches, cfg.guidance, alphas) * scale
            if weight is not None:
                grad = grad * weight
            opt.zero_grad(set_to_none=True)
            if losses:
                with torch.enable_grad():
                    image = decode(z)
                    total = sum(w * fn(image) for w, fn in losses if w > 0)
                    if isinstance(total, torch.Tensor):
                        total.backward()
                del image
            if i == 0:
                loss_norm = 0.0 if z.grad is None else float(z.grad.norm())
                log.debug("DDS gradient norm %.3e, loss gradient norm %.3e (ratio %.3e)", float(grad.norm()),
                          loss_norm, loss_norm / max(float(grad.norm()), 1e-30))
            z.grad = grad if z.grad is None else z.grad + grad
            opt.step()
            latent = z.detach().clone()
            progress.step(timestep=t, preview=lambda latent=latent: to_uint8(_decode_nograd(sd, latent)))
    return z.detach()


@torch.no_grad()
def _decode_nograd(sd: Any, z: torch.Tensor) -> torch.Tensor:
    return decode_latent(sd, z)
