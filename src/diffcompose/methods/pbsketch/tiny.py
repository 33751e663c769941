"""A tiny random Paint-by-Sketch model (Paint-by-Example's tiny model with a 12-channel UNet input)."""

from __future__ import annotations

import os
from pathlib import Path

from diffcompose.models.tiny import ensure_written, tiny_cache_dir

TINY_PBSKETCH_VERSION = 1


def write_tiny_pbsketch(path: str | os.PathLike, *, seed: int = 0) -> Path:
    from diffcompose.methods.pbe.tiny import write_tiny_pbe
    from diffcompose.methods.pbsketch.components import IN_CHANNELS

    return write_tiny_pbe(path, seed=seed, in_channels=IN_CHANNELS)


def ensure_tiny_pbsketch(path: Path | None = None) -> Path:
    """The cached tiny Paint-by-Sketch directory, written once."""
    target = path or tiny_cache_dir().parent / f"tiny-pbsketch-v{TINY_PBSKETCH_VERSION}"
    return ensure_written(target, write_tiny_pbsketch, "Paint-by-Sketch model")
