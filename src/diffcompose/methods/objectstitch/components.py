"""Locating and loading an ObjectStitch model: Paint-by-Example's layout and loader, an adaptor over every token.

Layout (what ``convert objectstitch`` and ``train objectstitch`` write): ``unet/`` (9 input
channels ``[z_t, z_masked, keep]``), ``vae/``, ``image_encoder/`` (CLIP vision + the content
adaptor, ``token_mode: patches``), ``scheduler/``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffcompose.errors import WeightsMissingError
from diffcompose.methods.pbe.components import _PATTERNS, _REQUIRED, PbEComponents, check_weights, load_pbe
from diffcompose.models.hub import resolve_model

WAYS_OUT = ("; pass --model DIR (an ObjectStitch directory from 'diffcompose convert objectstitch' or "
            "'train objectstitch')")
#: What the content adaptor reads: every CLIP token (Paint-by-Example's encoder reads the pooled one).
TOKEN_MODE = "patches"


def locate_objectstitch(name: str) -> Path:
    """A complete local ObjectStitch directory for ``name`` (a hub id or a directory)."""
    root = resolve_model(name, _REQUIRED, what="ObjectStitch model", allow_patterns=_PATTERNS, hint=WAYS_OUT)
    return check_weights(root)


def load_objectstitch(root: Path, device: torch.device, dtype: torch.dtype) -> PbEComponents:
    """Paint-by-Example's loader, and a check that the image encoder is ObjectStitch's adaptor."""
    c = load_pbe(root, device, dtype, what="an ObjectStitch model", ways_out=WAYS_OUT)
    if c.encoder.tokens != TOKEN_MODE:
        raise WeightsMissingError(f"{root} is a Paint-by-Example model (its image encoder reads CLIP's pooled token, "
                                  f"ObjectStitch's every token){WAYS_OUT}")
    return c
