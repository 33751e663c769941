"""Reference photo -> CLIP pixel tensor (no torchvision, no transformers image processor).

Two ways to reach CLIP's square input: ``stretch`` resizes the whole photo to a square (the
original Paint-by-Example; nothing of the object is cut off, its aspect ratio changes) and
``crop`` resizes the short side and centre-crops (diffusers; the aspect ratio is kept, the
edges of a long object are lost).

Both resize with Pillow's bicubic filter. For ``stretch`` that is what the original's
inference code does: ``scripts/inference.py`` and its test-bench loader call Pillow's
``resize((224, 224))`` without a filter, and Pillow's default filter is bicubic (since
Pillow 7.0, 2020, older than the original's release). Its *training* resizes the reference
crop bilinearly (albumentations' ``Resize``), which :mod:`.augment` follows; so inference
is bicubic and training bilinear, as in the original. A reference mask turns the background white, which
keeps the scene around the reference object out of the condition.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from diffcompose.errors import InputError

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

Preprocess = Literal["stretch", "crop"]
#: The original inference's filter (module docstring): Pillow's default for ``resize``.
STRETCH_FILTER = Image.BICUBIC


def whiten_background(reference: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Pixels outside ``mask`` (the object) become white."""
    if mask is None:
        return reference
    if mask.shape != reference.shape[:2]:
        raise InputError(f"reference mask is {mask.shape[1]}x{mask.shape[0]}, the reference "
                         f"{reference.shape[1]}x{reference.shape[0]}")
    if not mask.any():
        raise InputError("reference mask is empty: it must be white on the object")
    out = reference.copy()
    out[~mask] = 255
    return out


def to_square(reference: np.ndarray, size: int, mode: Preprocess) -> np.ndarray:
    """uint8 ``(size, size, 3)``: bicubic stretch (the original's inference), or short side to ``size`` + centre crop."""
    pil = Image.fromarray(reference)
    if mode == "stretch":
        return np.asarray(pil.resize((size, size), STRETCH_FILTER))
    if mode != "crop":
        raise InputError(f"reference preprocessing must be stretch or crop, got {mode!r}")
    w, h = pil.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    pil = pil.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(pil)[top:top + size, left:left + size]


def normalize(square: np.ndarray) -> np.ndarray:
    """uint8 ``(S, S, 3)`` -> float32 ``(3, S, S)`` with CLIP's mean and std."""
    x = square.astype(np.float32) / 255.0
    return ((x - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1).copy()


def prepare_reference(reference: np.ndarray, mask: np.ndarray | None = None, *, size: int = 224,
                      mode: Preprocess = "stretch") -> np.ndarray:
    """The encoder's input for one reference photo: float32 ``(3, size, size)``."""
    return normalize(to_square(whiten_background(reference, mask), size, mode))
