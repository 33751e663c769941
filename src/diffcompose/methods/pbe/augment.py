"""Reference augmentations (OpenCV/numpy, seeded): flip, rotation, blur, affine + elastic warp.

In self-reference training the reference is a crop of the very image being inpainted;
without heavy augmentation the model learns to copy pixels. These distortions force it to
carry over what the object *is*, not where its pixels were.

The recipe is the original's (albumentations 0.4.3 in ``ldm/data/open-images.py``): resize
to 224 (bilinear, OpenCV's ``INTER_LINEAR`` without antialiasing: that ``Resize``'s default), horizontal flip (p 0.5), rotation within +-20 degrees (p 0.5), box blur of size 3, 5
or 7 (p 0.3) and that version's ``ElasticTransform`` (p 0.3) with its defaults ``alpha=1,
sigma=50, alpha_affine=50``. The last is in effect a strong random **affine** warp: three
anchor points around the centre each move by up to +-50 px (on 224 px) and the image
follows them; the elastic field after it (alpha 1, sigma 50) moves pixels by well under a
pixel. Distances are given at 224 px and scale with ``size``.

A draw is a :class:`Plan` (what to apply, with every random parameter), made before any
pixel is touched, so tests can check the statistics of the recipe itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BASE = 224  # the size the original's pixel distances are given at


#: How the reference crop reaches ``size``: bilinear, as the original's albumentations ``Resize``
#: (its default interpolation, ``cv2.INTER_LINEAR``), whatever the crop's size.
REFERENCE_RESIZE = cv2.INTER_LINEAR


@dataclass(frozen=True)
class Plan:
    flip: bool
    angle: float | None  # degrees, None: no rotation
    blur: int | None  # box-blur kernel size, None: no blur
    anchors: tuple[np.ndarray, np.ndarray] | None  # affine: source and moved anchor points (3 x 2), None: no warp
    field_seed: int  # seed of the elastic displacement field (used only with ``anchors``)


@dataclass(frozen=True)
class ReferenceAugment:
    size: int = 224
    flip_p: float = 0.5
    rotate_p: float = 0.5
    max_rotate: float = 20.0
    blur_p: float = 0.3
    elastic_p: float = 0.3
    affine_shift: float = 50.0  # largest anchor move per axis, in pixels at 224 (albumentations' alpha_affine)
    elastic_alpha: float = 1.0  # elastic field strength (albumentations' alpha)
    elastic_sigma: float = 50.0  # its smoothness in pixels at 224 (albumentations' sigma)

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (h, w, 3) -> augmented uint8 (size, size, 3)."""
        return self.apply(crop, self.draw(rng))

    def draw(self, rng: np.random.Generator) -> Plan:
        """Every random choice of one augmentation, in a fixed order."""
        flip = bool(rng.random() < self.flip_p)
        angle = float(rng.uniform(-self.max_rotate, self.max_rotate)) if rng.random() < self.rotate_p else None
        blur = int(rng.choice([3, 5, 7])) if rng.random() < self.blur_p else None
        anchors, field_seed = None, 0
        if rng.random() < self.elastic_p:
            src = affine_anchors(self.size)
            shift = self.affine_shift * self.size / BASE
            anchors = (src, (src + rng.uniform(-shift, shift, size=src.shape)).astype(np.float32))
            field_seed = int(rng.integers(2 ** 63))
        return Plan(flip, angle, blur, anchors, field_seed)

    def apply(self, crop: np.ndarray, plan: Plan) -> np.ndarray:
        out = cv2.resize(crop, (self.size, self.size), interpolation=REFERENCE_RESIZE)
        if plan.flip:
            out = out[:, ::-1]
        if plan.angle is not None:
            out = rotate(out, plan.angle)
        if plan.blur is not None:
            out = cv2.blur(np.ascontiguousarray(out), (plan.blur, plan.blur))
        if plan.anchors is not None:
            out = affine(out, *plan.anchors)
            out = elastic(out, np.random.default_rng(plan.field_seed), self.elastic_alpha,
                          self.elastic_sigma * self.size / BASE)
        return np.ascontiguousarray(out)


def affine_anchors(size: int) -> np.ndarray:
    """The three anchor points of albumentations' elastic affine part: centre +-(size // 3)."""
    c, d = float(size // 2), float(size // 3)
    return np.array([[c + d, c + d], [c + d, c - d], [c - d, c - d]], dtype=np.float32)


def affine(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Warp ``image`` by the affine map taking the anchor points ``src`` to ``dst``."""
    h, w = image.shape[:2]
    m = cv2.getAffineTransform(np.float32(src), np.float32(dst))
    return cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    return cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def elastic(image: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Warp by a smooth random displacement field (Simard et al. 2003): uniform noise in [-1, 1]
    per pixel, Gaussian-smoothed with ``sigma``, times ``alpha`` pixels."""
    h, w = image.shape[:2]
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(image), xs + dx, ys + dy,
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
