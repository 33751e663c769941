"""Masks: white (True) = the region to change.

Internal form: ``numpy.ndarray`` of dtype ``bool``, shape ``(H, W)``.

Reading rule, whatever the file encoding:

* one channel (``1``, ``L``, ``I;16``, ``I``, ``F``): that channel;
* RGB: the per-pixel maximum of the three channels (a mask drawn in any single channel,
  or in grey, reads the same);
* with alpha (``RGBA``, ``LA``, palette with transparency): the alpha channel when it is
  a cut-out (thresholded, it marks some pixels in and some out), otherwise the colour
  channels as above (masks saved with an opaque or nearly opaque alpha);
* values are scaled to 0..1 and thresholded at ``threshold`` (0.5), which also cleans the
  soft edges of JPEG-compressed masks.

Scaling to 0..1:

* files and PIL images: 8-bit modes are 0..255; 16- and 32-bit integer modes (``I;16``,
  ``I``) are 0..65535; float mode ``F`` is 0..1 (clipped);
* numpy arrays (Python API), by dtype: ``bool`` as is; an integer array whose values are
  all 0 or 1 is a 0/1 mask; otherwise ``uint16`` is 0..65535 and every other integer dtype
  is 0..255 (values outside 0..255 are refused); floating dtypes must be in 0..1 (values
  outside it, beyond a 1e-6 tolerance, are refused, as are NaN and infinity).
"""

from __future__ import annotations

import os
from typing import Union

import cv2
import numpy as np
from PIL import Image

from diffcompose.errors import InputError
from diffcompose.inputs.images import DEFAULT_MAX_PIXELS, FLOAT_TOLERANCE, load_pil, open_pil

MaskLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def _scale01(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError("mask array contains NaN or infinite values")
        return np.clip(a.astype(np.float32), 0.0, 1.0)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a.astype(np.float32) / 65535.0, 0.0, 1.0)
    raise InputError(f"mask array has unsupported dtype {a.dtype}")


def _array_to_unit(a: np.ndarray, name: str) -> np.ndarray:
    """A numpy mask array (Python API) to float32 0..1 following the dtype rule of the module docstring."""
    kind, size = a.dtype.kind, a.dtype.itemsize
    if kind == "b":
        return a.astype(np.float32)
    if kind in ("i", "u"):
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 1:  # a 0/1 mask, whatever the integer width
            return a.astype(np.float32)
        if kind == "u" and size == 2:
            return a.astype(np.float32) / 65535.0
        if lo < 0 or hi > 255:
            raise InputError(f"{name} array of dtype {a.dtype} has values in {lo}..{hi}; integer masks must be "
                             "0/1 or in 0..255 (uint16: 0..65535)")
        return a.astype(np.float32) / 255.0
    if kind == "f":
        if not np.isfinite(a).all():
            raise InputError(f"{name} array contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
            raise InputError(f"float {name} arrays must be in 0..1, got values in {lo:g}..{hi:g}; "
                             "divide by 255 or pass uint8")
        return np.clip(a.astype(np.float32), 0.0, 1.0)
    raise InputError(f"{name} array has unsupported dtype {a.dtype}")


def _channels_to_soft(a: np.ndarray, name: str) -> np.ndarray:
    """(H, W[, C]) array to a float (H, W) map in 0..1 following the module rule."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return _scale01(a)
    if a.ndim != 3 or a.shape[2] not in (2, 3, 4):
        raise InputError(f"{name} has shape {a.shape}; expected (H, W) or (H, W, C) with C in 1..4")
    if a.shape[2] in (2, 4):
        alpha = _scale01(a[..., -1])
        cut = alpha >= 0.5
        if cut.any() and not cut.all():
            return alpha
        a = a[..., :-1]
    return _scale01(a).max(axis=2)


def load_soft_mask(source: MaskLike, name: str = "mask", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a mask as a float32 ``(H, W)`` map in 0..1 (before thresholding)."""
    if isinstance(source, (str, os.PathLike)):
        source = open_pil(source, name, max_pixels)
    from_array = False
    if isinstance(source, Image.Image):
        load_pil(source, name)
        im = source
        if im.mode == "P":
            im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I", "F"):
            im = im.convert("RGBA" if "A" in im.mode else "RGB")
        arr = np.asarray(im)
    elif isinstance(source, np.ndarray):
        arr, from_array = source, True
    else:
        raise InputError(f"{name} must be a file path, a PIL image or a numpy array, not {type(source).__name__}")
    if arr.size == 0:
        raise InputError(f"{name} is empty (0 pixels)")
    if from_array:  # the array dtype rule; arrays read from files keep the file rule of _scale01
        arr = _array_to_unit(arr, name)
    return _channels_to_soft(arr, name)


def load_mask(
    source: MaskLike,
    size: tuple[int, int] | None = None,
    *,
    name: str = "mask",
    threshold: float = 0.5,
    allow_empty: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read and validate a mask; ``size`` is the image's ``(width, height)`` it must match."""
    if not 0.0 < threshold < 1.0:
        raise InputError(f"mask threshold must be between 0 and 1 (exclusive), got {threshold}")
    mask = load_soft_mask(source, name, max_pixels) >= threshold
    if size is not None:
        w, h = size
        if mask.shape != (h, w):
            raise InputError(
                f"{name} is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}; they must be the same size"
            )
    if not allow_empty and not mask.any():
        raise InputError(f"{name} is empty (no white pixels): nothing to change; white marks the region to edit")
    return mask


def check_mask_coverage(mask: np.ndarray, name: str = "mask", operation: str = "this operation") -> None:
    """Refuse a mask covering the whole image where the operation needs context around it."""
    if mask.all():
        raise InputError(
            f"{name} covers the whole image; {operation} needs some unmasked context (white = region to change)"
        )


def resize_mask(mask: np.ndarray, size: tuple[int, int], *, soft: bool = False) -> np.ndarray:
    """The one mask resizer: ``size`` is ``(width, height)``.

    Area-averages when shrinking and interpolates bilinearly when growing, so the result is
    the coverage of each output pixel; ``soft=True`` returns that float32 coverage, otherwise
    it is thresholded at 0.5.
    """
    w, h = size
    if w <= 0 or h <= 0:
        raise ValueError(f"cannot resize a mask to {w}x{h}")
    src = mask.astype(np.float32)
    if src.shape == (h, w):
        out = src
    else:
        shrinking = w * h < src.shape[0] * src.shape[1]
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        out = cv2.resize(src, (w, h), interpolation=interp)
    return out if soft else out >= 0.5


def dilate_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a boolean mask by ``pixels`` (Euclidean distance), exactly and for any radius."""
    if pixels <= 0:
        return mask.copy()
    inv = (~mask).astype(np.uint8)
    if not inv.any():
        return mask.copy()
    dist = cv2.distanceTransform(inv, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist <= pixels
