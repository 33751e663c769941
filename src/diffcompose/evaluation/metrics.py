"""Full-reference metrics between an output and its ground truth, optionally over a mask.

Conventions: images are ``uint8`` (or float on the same 0..255 scale) arrays of shape
``(H, W)`` or ``(H, W, C)``; a mask is a bool ``(H, W)`` array selecting the pixels that
count (e.g. the filled hole, the harmonized object). Ranges:

* :func:`mse`: 0..65025 (255**2), mean over pixels *and* channels; 0 = identical;
* :func:`fmse`: :func:`mse` over the mask only (the iHarmony4 "foreground MSE");
* :func:`mae`: 0..255, mean absolute difference;
* :func:`psnr`: dB, ``10 log10(255**2 / MSE)``; ``inf`` when identical;
* :func:`ssim`: -1..1 (1 = identical), scikit-image's Gaussian-weighted SSIM (sigma 1.5)
  computed per channel and averaged; with a mask, the mean of the SSIM map over it.
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def _select(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return x
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {x.shape[:2]}")
    if not mask.any():
        raise ValueError("mask is empty: no pixels to measure")
    return x[mask]


def mse(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error (0..65025), over ``mask`` when given."""
    a, b = _pair(output, target)
    return float(np.mean(_select((a - b) ** 2, mask)))


def fmse(output: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Foreground MSE: the MSE over the object's pixels only."""
    return mse(output, target, mask)


def mae(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error (0..255), over ``mask`` when given."""
    a, b = _pair(output, target)
    return float(np.mean(_select(np.abs(a - b), mask)))


def psnr(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB for a 0..255 scale, over ``mask`` when given."""
    err = mse(output, target, mask)
    return math.inf if err == 0 else 10.0 * math.log10(PEAK * PEAK / err)


def ssim(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Structural similarity (-1..1); with ``mask``, the SSIM map averaged over the mask."""
    from skimage.metrics import structural_similarity

    a, b = _pair(output, target)
    channel_axis = -1 if a.ndim == 3 else None
    small = min(a.shape[0], a.shape[1])
    if small < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {a.shape[1]}x{a.shape[0]}")
    _, smap = structural_similarity(a, b, data_range=PEAK, channel_axis=channel_axis, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, full=True)
    if smap.ndim == 3:
        smap = smap.mean(axis=2)
    return float(np.mean(_select(smap, mask)))
