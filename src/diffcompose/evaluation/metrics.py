"""Full-reference metrics between an output and its ground truth, optionally over a mask.

Conventions: images are ``uint8`` (or float on the same 0..255 scale) arrays of shape
``(H, W)`` or ``(H, W, C)``; a mask is a bool ``(H, W)`` array selecting the pixels that
count (e.g. the filled hole, the harmonized object). Ranges:

* :func:`mse`: 0..65025 (255**2), mean over pixels *and* channels; 0 = identical;
* :func:`fmse`: :func:`mse` over the mask only (the iHarmony4 "foreground MSE");
* :func:`mae`: 0..255, mean absolute difference;
* :func:`psnr`: dB, ``10 log10(255**2 / MSE)``; ``inf`` when identical;
* :func:`ssim`: -1..1 (1 = identical), scikit-image's Gaussian-weighted SSIM (sigma 1.5)
  computed per channel and averaged; with a mask, the mean of the SSIM map over it;
* :func:`texture_distance`: 0..~360 grey levels (0 = the same distribution of edge
  strengths), how far the output's gradient magnitudes are from the target's (see below).

PSNR, SSIM and MAE compare pixel by pixel, so over a filled hole they reward blur: a fill
whose texture is right but not at exactly the true position scores worse than a smear
(for SSIM, an uncorrelated texture of variance s2 against a flat fill: C2 / (2 s2 + C2) <
C2 / (s2 + C2)). :func:`texture_distance` compares distributions instead of positions: it
is 0 for a fill with the target's sharpness wherever its texture lies, and grows with blur
(edge strengths pulled toward 0), seams (strong gradients where the target has none) and
noise alike.
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0
#: Scales of :func:`texture_distance`: the image itself, then halved twice (area averaging).
TEXTURE_SCALES = 3
#: A coarser scale counts only while the mask keeps at least this many pixels there.
TEXTURE_MIN_PIXELS = 16


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
    """Foreground MSE: the MSE over the object's pixels only.

    This is iHarmony4's fMSE (the MSE of the two images multiplied by the mask, x H W / mask
    area: the squared error summed over the mask's pixels and channels, divided by the mask's
    area x channels; errors outside the mask do not count).
    """
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


def _luminance(x: np.ndarray) -> np.ndarray:
    """BT.601 luma (float32, 0..255) of an RGB image; a one-channel image as it is."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    if x.ndim == 3:
        x = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    return x


def _gradient_magnitude(lum: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude in grey levels per pixel (a unit step reads 1)."""
    import cv2

    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
    return np.hypot(gx, gy)


def texture_distance(output: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """How far the output's texture is from the target's: 0 = the same edge strengths.

    At each of :data:`TEXTURE_SCALES` scales (full size, then halved by area averaging) the
    Sobel gradient magnitudes of the luminance are taken over the whole image (so a seam at
    the mask's edge counts) and the pixels of ``mask`` kept (at a coarser scale: the pixels at
    least half covered by it, while there are :data:`TEXTURE_MIN_PIXELS` of them). The two
    sets of magnitudes are compared as distributions with the 1-D Wasserstein (earth mover's)
    distance, the mean absolute difference of the sorted values; the result is the mean over
    the scales, in grey levels per pixel. Position-free: a fill with the target's texture
    shifted scores near 0, a blurred fill scores about the target's mean edge strength.
    """
    import cv2

    a, b = _pair(output, target)
    if mask is None:
        mask = np.ones(a.shape[:2], bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != a.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {a.shape[:2]}")
    if not mask.any():
        raise ValueError("mask is empty: no pixels to measure")
    la, lb, m = _luminance(a), _luminance(b), mask
    dists = []
    for level in range(TEXTURE_SCALES):
        if level:
            h, w = la.shape
            if min(h, w) < 4:
                break
            size = ((w + 1) // 2, (h + 1) // 2)
            la = cv2.resize(la, size, interpolation=cv2.INTER_AREA)
            lb = cv2.resize(lb, size, interpolation=cv2.INTER_AREA)
            m = cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
            if m.sum() < TEXTURE_MIN_PIXELS:
                break
        ga = np.sort(_gradient_magnitude(la)[m])
        gb = np.sort(_gradient_magnitude(lb)[m])
        dists.append(float(np.mean(np.abs(ga - gb))))
    return float(np.mean(dists))
