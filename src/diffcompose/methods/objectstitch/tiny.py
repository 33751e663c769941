"""A tiny random ObjectStitch model: Paint-by-Example's tiny model with the adaptor over every CLIP token."""

from __future__ import annotations

import os
from pathlib import Path

from diffcompose.models.tiny import ensure_written, tiny_cache_dir

TINY_OBJECTSTITCH_VERSION = 1


def write_tiny_objectstitch(path: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny CLIP vision tower (17 tokens at 32 px), adaptor, 9-channel UNet, VAE and scheduler."""
    from diffcompose.methods.objectstitch.components import TOKEN_MODE
    from diffcompose.methods.pbe.tiny import write_tiny_pbe

    return write_tiny_pbe(path, seed=seed, tokens=TOKEN_MODE)


def ensure_tiny_objectstitch(path: Path | None = None) -> Path:
    """The cached tiny ObjectStitch directory, written once."""
    target = path or tiny_cache_dir().parent / f"tiny-objectstitch-v{TINY_OBJECTSTITCH_VERSION}"
    return ensure_written(target, write_tiny_objectstitch, "ObjectStitch model")
