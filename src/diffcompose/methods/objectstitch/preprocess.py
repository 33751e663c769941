"""The object's and the box's preprocessing, as bcmi's ObjectStitch computes them.

* The object: pixels outside its mask become **black** (the public ``inference.py`` keeps a
  pixel where the mask, read as RGB, is above 127 in that channel; Paint-by-Example whitens
  instead), then the whole photo is stretched to CLIP's square with Pillow's bilinear filter
  (torchvision's ``Resize`` on a PIL image, which is what the public code calls) and
  normalised with CLIP's mean and std. Without a mask the photo is used as it is.
* The box: a hole mask, 1 inside ``[y0:y1, x0:x1]`` (the public ``bbox2mask``); at latent size
  by nearest sampling, thresholded at 0.5 (``prepare_input``), so the model's mask channel is
  ``1 - mask``: 1 = keep (:func:`~diffcompose.methods.pbe.components.masked_condition` with
  ``"nearest"`` computes exactly that for a 0/1 mask).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from diffcompose.errors import InputError
from diffcompose.methods.pbe.reference import normalize

#: Pillow's filter behind torchvision's ``Resize`` (default ``InterpolationMode.BILINEAR``) on PIL images.
OBJECT_FILTER = Image.BILINEAR
#: How the box reaches the latent grid: nearest, as the public ``F.interpolate(mask, shape)``.
LATENT_MASK = "nearest"


def black_background(obj: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``obj`` with every pixel outside ``mask`` (bool, True = object) black."""
    if mask is None:
        return obj
    if mask.shape != obj.shape[:2]:
        raise InputError(f"object mask is {mask.shape[1]}x{mask.shape[0]}, the object {obj.shape[1]}x{obj.shape[0]}")
    if not mask.any():
        raise InputError("object mask is empty: it must be white on the object")
    return np.where(mask[..., None], obj, np.zeros_like(obj))


def prepare_object(obj: np.ndarray, mask: np.ndarray | None = None, *, size: int = 224) -> np.ndarray:
    """The adaptor's input for an object photo: float32 ``(3, size, size)``, CLIP-normalised."""
    square = np.asarray(Image.fromarray(black_background(obj, mask)).resize((size, size), OBJECT_FILTER))
    return normalize(square)


def box_hole(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The public ``bbox2mask``: bool ``(h, w)``, True inside the end-exclusive box ``(x0, y0, x1, y1)``."""
    hole = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    hole[y0:y1, x0:x1] = True
    return hole
