"""The one array <-> tensor codec, and the VAE's latent geometry (scale, stride, native size).

Images travel as uint8 ``(H, W, 3)`` arrays outside torch and as float ``(N, 3, H, W)``
tensors in [-1, 1] inside it (the VAE's range); masks as bool ``(H, W)`` arrays and float
``(1, 1, H, W)`` tensors.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


def images_to_tensor(images: np.ndarray | Sequence[np.ndarray], device: Any = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` (or a list of them) -> ``(N, 3, H, W)`` in [-1, 1]."""
    batch = np.stack(list(images)) if not isinstance(images, np.ndarray) else images[None]
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.to(device=device, dtype=dtype)


def tensor_to_images(x: torch.Tensor) -> list[np.ndarray]:
    """``(N, 3, H, W)`` in [-1, 1] -> N uint8 ``(H, W, 3)`` arrays (clamped, rounded)."""
    x = ((x.detach().float().cpu() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return list((x * 255.0).round().astype(np.uint8))


def mask_to_tensor(mask: np.ndarray, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """bool or float ``(H, W)`` -> ``(1, 1, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None].to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- latent geometry

def latent_scale(vae: Any) -> float:
    """The factor latents are multiplied by for the UNet (0.18215 for SD 1.x/2.x)."""
    return float(vae.config.get("scaling_factor", 0.18215))


def vae_stride(vae: Any) -> int:
    """Pixels per latent cell (8 for SD's VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def native_resolution(unet: Any, vae: Any) -> int:
    """The pixel size the UNet was trained at (512 for SD 1.5 and Paint-by-Example)."""
    return int(unet.config.sample_size) * vae_stride(vae)


def latent_multiple(unet: Any, vae: Any) -> int:
    """Working sides must be multiples of this many pixels (the UNet halves the latent per level)."""
    return vae_stride(vae) * 2 ** (len(unet.config.block_out_channels) - 1)


@torch.no_grad()
def encode(vae: Any, images: torch.Tensor, generator: torch.Generator | None = None, samples: int = 1) -> torch.Tensor:
    """Scaled latents of ``(N, 3, H, W)`` images in [-1, 1]: a posterior sample with ``generator``, else the mean.

    ``samples`` > 1 gives ``samples * N`` latents (the batch repeated ``samples`` times) from one
    encoder pass: the same draws as encoding the repeated batch (one noise tensor for it all from
    ``generator``), without running the encoder on the copies."""
    dist = vae.encode(images).latent_dist
    if samples > 1:
        dist = type(dist)(dist.parameters.repeat(samples, 1, 1, 1))
    z = dist.sample(generator=generator) if generator is not None else dist.mean
    return z * latent_scale(vae)


def decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (not clamped, so gradients can flow; autograd as the caller sets)."""
    return vae.decode(latents / latent_scale(vae)).sample
