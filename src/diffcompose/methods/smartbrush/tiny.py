"""``--model tiny`` for SmartBrush: a tiny random SD-inpainting model turned into a SmartBrush one, written once."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from diffcompose.models.tiny import TINY_VERSION, ensure_written, tiny_cache_dir, write_tiny_sd

#: Bump when the tiny SmartBrush layout changes, so cached copies are rebuilt.
TINY_SMARTBRUSH_VERSION = 1


def write_tiny_smartbrush(path: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny SmartBrush directory at ``path`` (must not exist): exactly what training starts from
    with a tiny random SD-inpainting init (zero level embeddings, zero mask head)."""
    from diffusers import UNet2DConditionModel

    from diffcompose.methods.smartbrush.model import model_index, to_smartbrush

    root = write_tiny_sd(path, seed=seed, unet_overrides={"in_channels": 9})
    base = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    shutil.rmtree(root / "unet")
    to_smartbrush(base, "sd-inpainting").save_pretrained(root / "unet", safe_serialization=True)
    for extra in ("t2i_adapter_canny", "t2i_adapter_sketch", "vgg"):  # FreeCompose's extras: not used here
        shutil.rmtree(root / extra, ignore_errors=True)
    index = json.loads((root / "model_index.json").read_text())
    index.update(model_index(init="tiny", init_kind="sd-inpainting"))
    index["diffcompose_tiny"] = TINY_VERSION
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def ensure_tiny_smartbrush(path: Path | None = None) -> Path:
    """The tiny SmartBrush directory, written once to the cache."""
    target = path or tiny_cache_dir().with_name(f"tiny-smartbrush-v{TINY_VERSION}.{TINY_SMARTBRUSH_VERSION}")
    return ensure_written(target, write_tiny_smartbrush, "SmartBrush model")
