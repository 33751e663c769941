"""Locating and loading a Paint-by-Sketch model: Paint-by-Example's layout and loader, a 12-channel UNet.

Layout (what ``convert pbsketch`` and ``train pbsketch`` write): Paint-by-Example's ``unet/``
(12 input channels), ``vae/``, ``image_encoder/``, ``scheduler/``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffcompose.methods.pbe.components import IN_CHANNELS as PBE_CHANNELS
from diffcompose.methods.pbe.components import _PATTERNS, _REQUIRED, PbEComponents, check_weights, load_pbe
from diffcompose.methods.pbsketch.sketch import SKETCH_CHANNELS
from diffcompose.models.hub import resolve_model

#: ``[z_t, z_masked, keep]`` then the sketch's three channels.
IN_CHANNELS = PBE_CHANNELS + SKETCH_CHANNELS
WAYS_OUT = "; pass --model DIR (a Paint-by-Sketch directory from 'diffcompose convert pbsketch' or 'train pbsketch')"


def locate_pbsketch(name: str) -> Path:
    """A complete local Paint-by-Sketch directory for ``name`` (a hub id or a directory)."""
    root = resolve_model(name, _REQUIRED, what="Paint-by-Sketch model", allow_patterns=_PATTERNS, hint=WAYS_OUT)
    return check_weights(root)


def load_pbsketch(root: Path, device: torch.device, dtype: torch.dtype) -> PbEComponents:
    return load_pbe(root, device, dtype, in_channels=IN_CHANNELS, what="a Paint-by-Sketch model", ways_out=WAYS_OUT)
