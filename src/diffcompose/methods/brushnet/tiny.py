"""Tiny random BrushNet models: for ``--model tiny``, the tests and PowerPaint v2's tiny model.

:func:`build_tiny_brushnet` makes a branch for a (tiny) base UNet config in memory;
:func:`write_tiny_brushnet` writes the directory ``--model tiny`` loads: the tiny SD-1.5 layout
(the base: a 4-channel text-to-image UNet, VAE, CLIP text encoder, tokenizer, scheduler) with the
branch in its ``brushnet/`` folder, in the public BrushNet ``config.json`` + safetensors layout.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from diffcompose.models.tiny import TINY_VERSION, ensure_written, tiny_cache_dir, tiny_unet_config, write_tiny_sd

#: Bump when the tiny BrushNet layout changes, so cached copies are rebuilt.
TINY_BRUSHNET_VERSION = 1
#: Folder of the branch inside a combined BrushNet model directory.
BRANCH_DIR = "brushnet"


def build_tiny_brushnet(unet_config: dict[str, Any] | None = None, *, cross_attention: bool = False, seed: int = 0,
                        unet: Any = None) -> Any:
    """A tiny branch for ``unet_config`` (default: the tiny SD UNet's), seeded; its zero convolutions
    hold small random values so its residuals are not zero (see
    :func:`~diffcompose.methods.brushnet.model.randomize_zero_convs`). With ``unet``, the base
    weights are copied in first, as the public ``from_unet`` does."""
    import torch

    from diffcompose.methods.brushnet.model import BrushNetModel, randomize_zero_convs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        branch = BrushNetModel.from_unet(unet_config or tiny_unet_config(), cross_attention=cross_attention,
                                         unet=unet)
    return randomize_zero_convs(branch, seed + 1).eval()


def write_tiny_brushnet(path: str | os.PathLike, *, seed: int = 0, cross_attention: bool = False) -> Path:
    """A tiny BrushNet directory at ``path`` (must not exist): tiny SD-1.5 base + ``brushnet/``."""
    root = write_tiny_sd(path, seed=seed)
    for extra in ("t2i_adapter_canny", "t2i_adapter_sketch", "vgg"):  # FreeCompose's extras: not used here
        shutil.rmtree(root / extra, ignore_errors=True)
    unet_config = json.loads((root / "unet" / "config.json").read_text())
    branch = build_tiny_brushnet(unet_config, cross_attention=cross_attention, seed=seed)
    branch.save_pretrained(root / BRANCH_DIR, safe_serialization=True)
    index = json.loads((root / "model_index.json").read_text())
    index[BRANCH_DIR] = ["diffcompose", "BrushNetModel"]
    index["diffcompose_tiny"] = TINY_VERSION
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def ensure_tiny_brushnet(path: Path | None = None) -> Path:
    """The tiny BrushNet directory, written once to the cache."""
    target = path or tiny_cache_dir().with_name(f"tiny-brushnet-v{TINY_VERSION}.{TINY_BRUSHNET_VERSION}")
    return ensure_written(target, write_tiny_brushnet, "BrushNet model")
