"""BrushNet's blending step: the photo pasted back outside the region through a blurred mask.

The paper's inference ends with it (TencentARC's ``examples/brushnet/test_brushnet.py``, its
``blended`` branch): the decoded image can drift slightly everywhere (the VAE's round trip), so
the original pixels are put back outside the hole. To avoid a hard seam the hole mask ``m`` (1 =
hole) is blurred with a 21x21 Gaussian (OpenCV's sigma for that size, 3.5) and *united* with
itself, ``m' = 1 - (1 - m)(1 - blur(m))``: 1 inside the hole (the generated pixels are kept
untouched there), falling off over ~10 pixels outside it. The result is
``original * (1 - m') + generated * m'``, truncated to uint8 as the public script does.
"""

from __future__ import annotations

import cv2
import numpy as np


def blend_mask(hole: np.ndarray, kernel: int = 21) -> np.ndarray:
    """``m' = 1 - (1 - m)(1 - blur(m))`` (float64, ``(H, W, 1)``) for a bool/0-1 ``(H, W)`` hole mask."""
    m = hole.astype(np.float64)
    blurred = cv2.GaussianBlur(m * 255, (kernel, kernel), 0) / 255
    return (1 - (1 - m) * (1 - blurred))[:, :, None]


def blend(original: np.ndarray, generated: np.ndarray, hole: np.ndarray, kernel: int = 21) -> np.ndarray:
    """``generated`` inside the hole, ``original`` outside, mixed by :func:`blend_mask` (uint8, truncated)."""
    m = blend_mask(hole, kernel)
    return (original.astype(np.float64) * (1 - m) + generated.astype(np.float64) * m).astype(np.uint8)
