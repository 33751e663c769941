"""Locating and loading a Paint-by-Example model (diffusers layout) through the shared loader.

Layout (the hub's ``Fantasy-Studio/Paint-by-Example``, and what ``convert pbe`` and
``train pbe`` write): ``unet/`` (9 input channels), ``vae/``, ``image_encoder/`` (CLIP
vision + mapper, :class:`~.encoder.ExemplarEncoder`), ``scheduler/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from diffcompose.errors import WeightsMissingError
from diffcompose.methods.pbe.encoder import ExemplarEncoder
from diffcompose.models.hub import check_complete, read_json, resolve_model
from diffcompose.models.loader import load_component

log = logging.getLogger(__name__)

#: Channels of the UNet input: [z_t (4), z_masked (4), mask_keep (1)].
IN_CHANNELS = 9
#: How the keep mask reaches latent size: ``bilinear`` (the original, in training and in its
#: inference script: soft at the hole's edge) or ``nearest`` (diffusers' pipeline).
LatentMask = Literal["bilinear", "nearest"]
WAYS_OUT = "; pass --model DIR (a local Paint-by-Example directory, e.g. from 'diffcompose convert pbe')"
_REQUIRED = ["model_index.json", "unet/config.json", "vae/config.json", "image_encoder/config.json",
             "scheduler/scheduler_config.json"]
_PATTERNS = ["model_index.json", "*/config.json", "scheduler/scheduler_config.json",
             "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
             "image_encoder/model.safetensors", "image_encoder/pytorch_model.bin"]


@dataclass
class PbEComponents:
    """A Paint-by-Example model's parts, frozen, on one device and dtype."""

    root: Path
    unet: Any
    vae: Any
    encoder: ExemplarEncoder
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae, self.encoder]


# ----------------------------------------------------------------------------- the UNet input
# Training (``train.py``) and the sampler (``engine.py``) both build the UNet input
# through these two functions, so they cannot disagree on mask polarity, the masked image or
# the channel order (``tests/methods/pbe/test_pbe_train_sampler.py``).

def masked_condition(image: torch.Tensor, hole: torch.Tensor, latent_size: tuple[int, int],
                     latent_mask: LatentMask = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked image, keep mask at latent size)`` for images in [-1, 1] and a (soft) hole mask, 1 = hole.

    Inside the model the mask means 1 = keep; the masked image is ``image * keep`` (the hole
    becomes 0, mid-grey), whose VAE latent is the second block of input channels.
    """
    keep = 1.0 - hole
    if latent_mask == "nearest":
        keep_latent = F.interpolate(keep, size=tuple(latent_size))
    elif latent_mask == "bilinear":
        keep_latent = F.interpolate(keep, size=tuple(latent_size), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"latent mask resampling must be bilinear or nearest, got {latent_mask!r}")
    return image * keep, keep_latent


def unet_input(z_t: torch.Tensor, z_masked: torch.Tensor, keep_latent: torch.Tensor,
               *extra: torch.Tensor) -> torch.Tensor:
    """The 9-channel UNet input ``[z_t, z_masked, mask_keep]`` (not SD inpainting's order), then
    any ``extra`` channels of a model that extends it (Paint-by-Sketch's sketch)."""
    return torch.cat([z_t, z_masked, keep_latent, *extra], dim=1)


def locate_pbe(name: str) -> Path:
    """A complete local Paint-by-Example directory for ``name`` (a hub id or a directory)."""
    root = resolve_model(name, _REQUIRED, what="Paint-by-Example model", allow_patterns=_PATTERNS, hint=WAYS_OUT)
    return check_weights(root)


def check_weights(root: Path) -> Path:
    check_complete(root, _REQUIRED, "Paint-by-Example model")
    for part, names in (("unet", ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]),
                        ("vae", ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]),
                        ("image_encoder", ["model.safetensors", "pytorch_model.bin"])):
        if not any((root / part / n).is_file() for n in names):
            raise WeightsMissingError(f"Paint-by-Example model directory {root} is incomplete: "
                                      f"missing {part}/{names[0]}{WAYS_OUT}")
    return root


def scheduler_config(root: Path) -> dict[str, Any]:
    raw = read_json(Path(root) / "scheduler" / "scheduler_config.json", "Paint-by-Example scheduler config")
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def load_pbe(root: Path, device: torch.device, dtype: torch.dtype, *, in_channels: int = IN_CHANNELS,
             what: str = "a Paint-by-Example model", ways_out: str = WAYS_OUT) -> PbEComponents:
    """UNet, VAE and exemplar encoder of ``root`` (through the shared loader), checked to fit.

    ``in_channels``: what the UNet must take (a model that extends Paint-by-Example's input,
    Paint-by-Sketch's 12, says so with ``what`` and its own ``ways_out``)."""
    unet = load_component(root, "unet", device, dtype)
    vae = load_component(root, "vae", device, dtype)
    encoder = load_component(root, "image_encoder", device, dtype, cls=ExemplarEncoder)
    if unet.config.in_channels != in_channels:
        raise WeightsMissingError(f"{root} is not {what}: its UNet takes "
                                  f"{unet.config.in_channels} input channels, not {in_channels}{ways_out}")
    if unet.config.cross_attention_dim != encoder.proj_size:
        raise WeightsMissingError(f"{root}: the image encoder gives {encoder.proj_size}-d context, the UNet "
                                  f"expects {unet.config.cross_attention_dim}")
    return PbEComponents(Path(root), unet, vae, encoder, scheduler_config(root), device, dtype)
