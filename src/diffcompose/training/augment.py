"""Reference augmentations (OpenCV/numpy, seeded): flip, rotation, blur, elastic warp.

In self-reference training the reference is a crop of the very image being inpainted;
without heavy augmentation the model learns to copy pixels. These distortions force it to
carry over what the object *is*, not where its pixels were.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ReferenceAugment:
    size: int = 224
    flip_p: float = 0.5
    max_rotate: float = 20.0
    blur_p: float = 0.3
    elastic_p: float = 0.3
    elastic_alpha: float = 8.0  # largest displacement in pixels (at ``size``)
    elastic_sigma: float = 4.0  # smoothness of the displacement field

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (h, w, 3) -> augmented uint8 (size, size, 3)."""
        out = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA
                         if crop.shape[0] * crop.shape[1] > self.size ** 2 else cv2.INTER_CUBIC)
        if rng.random() < self.flip_p:
            out = out[:, ::-1]
        out = rotate(out, rng.uniform(-self.max_rotate, self.max_rotate))
        if rng.random() < self.blur_p:
            k = int(rng.choice([3, 5, 7]))
            out = cv2.blur(out, (k, k))
        if rng.random() < self.elastic_p:
            out = elastic(out, rng, self.elastic_alpha, self.elastic_sigma)
        return np.ascontiguousarray(out)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    return cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def elastic(image: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Warp by a smooth random displacement field (Simard et al. 2003)."""
    h, w = image.shape[:2]
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    scale = alpha / max(np.abs(dx).max(), np.abs(dy).max(), 1e-6)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(image), xs + dx * scale, ys + dy * scale,
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
