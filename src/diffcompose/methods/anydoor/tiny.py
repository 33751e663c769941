"""A tiny random AnyDoor in the real directory layout, for tests, smoke runs and ``--model tiny``.

Same structure as the published model (SD2.1-style UNet with linear projections, a ControlNet
with the 4-channel hint and 16/32/96/256 hint embedding and a zero ``conv_in``, DINOv2 with
SwiGLU FFN and layer scale as ViT-g/14, a projector, SD's VAE) at small widths, written by
:func:`~.model.save_anydoor` and read back by :func:`~.model.load_anydoor`: the loading code
of real checkpoints is the code under test. Its outputs are noise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from diffcompose.methods.anydoor.model import AnyDoorModel, build_anydoor, save_anydoor
from diffcompose.models.tiny import ensure_written, tiny_cache_dir, tiny_scheduler_config, \
    tiny_unet_config, tiny_vae_config

TINY_ANYDOOR_VERSION = 2


def tiny_dinov2_config(**overrides: Any) -> dict[str, Any]:
    """A small DINOv2 (patch 14, SwiGLU, layer scale) whose checkpoint grid (8x8 = 112 px) is not
    the 16x16 of 224 px inputs, so the public position-embedding resampling runs too."""
    cfg: dict[str, Any] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                               patch_size=14, image_size=112, use_swiglu_ffn=True, layerscale_value=1.0)
    cfg.update(overrides)
    return cfg


def tiny_anydoor_unet_config(**overrides: Any) -> dict[str, Any]:
    """The tiny UNet with SD2.1's traits (linear projections in the transformers)."""
    return tiny_unet_config(**{"use_linear_projection": True, **overrides})


def build_tiny_anydoor(seed: int = 0) -> AnyDoorModel:
    """The tiny model in memory (random weights from ``seed``).

    diffusers initialises a ControlNet's output convs and its hint embedding's last conv at
    zero (a fresh ControlNet adds nothing); here they are random, so the hint (collage, mask
    channel, shape control, control strength) really reaches the UNet of the tiny model.
    """
    model = build_anydoor(tiny_anydoor_unet_config(), tiny_dinov2_config(), tiny_vae_config(),
                          tiny_scheduler_config(), seed=seed)
    cn = model.controlnet
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for conv in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
            for p in conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def write_tiny_anydoor(path: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write a tiny random AnyDoor directory to ``path`` (created, or an empty folder)."""
    from diffcompose.models.hub import quiet_libraries

    quiet_libraries()
    return save_anydoor(build_tiny_anydoor(seed), path, {"diffcompose_tiny": TINY_ANYDOOR_VERSION})


def ensure_tiny_anydoor(path: Path | None = None) -> Path:
    """The cached tiny AnyDoor directory, written once."""
    target = path or tiny_cache_dir().parent / f"tiny-anydoor-v{TINY_ANYDOOR_VERSION}"
    return ensure_written(target, write_tiny_anydoor, "AnyDoor model")


__all__ = ["build_tiny_anydoor", "ensure_tiny_anydoor", "tiny_dinov2_config", "write_tiny_anydoor"]
