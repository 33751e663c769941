"""ObjectStitch's training augmentations (the public ``DataAugmentation``), OpenCV/numpy, seeded.

Self-supervised training cuts the object out of its own photo and asks the model to put it
back into its box. The object is changed first, so the model learns to re-light and re-pose
it rather than copy pixels; the background is sometimes cropped, so boxes appear at other
places and scales. The recipe, from ``ldm/data/open_images.py`` (albumentations):

* background, with probability 0.5: a random crop that keeps the object's box
  (``random_crop_background``: when the box is narrower than 0.8 of the image, left and right
  edges move in by up to ``width - box_w / 0.8`` each, capped by the free space on that side;
  vertically the same with half that amount);
* object colour, always: ``ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05)``,
  the four in a random order;
* object geometry: ``HorizontalFlip(p=0.5)``, then ``Rotate(limit=20)`` always (grey 127 border,
  mask border 0), then ``Perspective(scale=(0.01, 0.1))`` with p=0.5 (grey 127 border, mask
  border 0, same size out).

The public class also builds ``A.Blur(p=0.3)`` but never applies it; neither do we. These are
our own implementations of those transforms with the same families, ranges and probabilities
(no albumentations here), so a draw is not bit-identical to albumentations' for a seed.
A draw is a :class:`Plan`, made before any pixel is touched, so the tests check the recipe's
statistics directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

GREY = 127  # the public border value of the rotation and the perspective warp


@dataclass(frozen=True)
class Plan:
    crop: tuple[float, float, float, float] | None  # background crop: shares of the allowed left/right/top/bottom cut
    jitter: tuple[tuple[str, float], ...]  # colour ops in their random order: (name, factor or hue shift)
    flip: bool
    angle: float  # degrees
    perspective: np.ndarray | None  # (4, 2) corner moves as shares of (w, h), None: no warp


@dataclass(frozen=True)
class ObjectAugment:
    crop_bg_p: float = 0.5
    bbox_maxlen: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    flip_p: float = 0.5
    rotate_limit: float = 20.0
    perspective_p: float = 0.5
    perspective_scale: tuple[float, float] = (0.01, 0.1)

    def draw(self, rng: np.random.Generator) -> Plan:
        """Every random choice of one augmentation, in a fixed order."""
        crop = tuple(float(v) for v in rng.random(4)) if rng.random() < self.crop_bg_p else None
        ops = [("brightness", float(rng.uniform(1 - self.brightness, 1 + self.brightness))),
               ("contrast", float(rng.uniform(1 - self.contrast, 1 + self.contrast))),
               ("saturation", float(rng.uniform(1 - self.saturation, 1 + self.saturation))),
               ("hue", float(rng.uniform(-self.hue, self.hue)))]
        order = rng.permutation(len(ops))
        flip = bool(rng.random() < self.flip_p)
        angle = float(rng.uniform(-self.rotate_limit, self.rotate_limit))
        persp = None
        if rng.random() < self.perspective_p:
            scale = float(rng.uniform(*self.perspective_scale))
            persp = np.abs(rng.normal(0.0, scale, size=(4, 2)))
        return Plan(crop, tuple(ops[i] for i in order), flip, angle, persp)

    # ------------------------------------------------------------------ background
    def crop_background(self, image: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray,
                        shares: tuple[float, float, float, float]) -> tuple[np.ndarray, tuple[int, int, int, int],
                                                                           np.ndarray]:
        """``random_crop_background`` with its four random numbers given (``shares``)."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        bw, bh = (x1 - x0) / w, (y1 - y0) / h
        left, right, top, down = 0, w, 0, h
        if bw < self.bbox_maxlen:
            maxcrop = w - bw * w / self.bbox_maxlen
            left = int(shares[0] * min(maxcrop, x0))
            right = w - int(shares[1] * min(maxcrop, w - x1))
        if bh < self.bbox_maxlen:
            maxcrop = (h - bh * h / self.bbox_maxlen) / 2
            top = int(shares[2] * min(maxcrop, y0))
            down = h - int(shares[3] * min(maxcrop, h - y1))
        return (image[top:down, left:right], (x0 - left, y0 - top, x1 - left, y1 - top), mask[top:down, left:right])

    # ------------------------------------------------------------------ object
    def apply_object(self, obj: np.ndarray, mask: np.ndarray, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
        """Colour jitter, then flip, rotation and perspective of the object crop and its mask (uint8 0/255)."""
        out = obj
        for name, value in plan.jitter:
            out = JITTER[name](out, value)
        m = mask
        if plan.flip:
            out, m = out[:, ::-1], m[:, ::-1]
        out, m = rotate(out, plan.angle), rotate(m, plan.angle, mask=True)
        if plan.perspective is not None:
            out, m = perspective(out, plan.perspective), perspective(m, plan.perspective, mask=True)
        return np.ascontiguousarray(out), np.ascontiguousarray(m)


def _blend(a: np.ndarray, b: np.ndarray | float, factor: float) -> np.ndarray:
    return np.clip(a.astype(np.float32) * factor + np.asarray(b, dtype=np.float32) * (1 - factor), 0, 255).astype(
        np.uint8)


def brightness(img: np.ndarray, factor: float) -> np.ndarray:
    return _blend(img, 0.0, factor)


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    return _blend(img, float(grey.mean()), factor)


def saturation(img: np.ndarray, factor: float) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)[..., None]
    return _blend(img, grey, factor)


def hue(img: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue by ``shift`` of a full turn (OpenCV's uint8 hue runs 0..179)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(round(shift * 180))) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


JITTER = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}


def rotate(img: np.ndarray, degrees: float, *, mask: bool = False) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    fill = 0 if mask else (GREY,) * 3
    return cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_NEAREST if mask else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def perspective(img: np.ndarray, moves: np.ndarray, *, mask: bool = False) -> np.ndarray:
    """Move each corner inwards by ``moves`` (shares of the width and height), warp back to the same size."""
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    sign = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    dst = src + sign * moves.astype(np.float32) * np.float32([w, h])
    m = cv2.getPerspectiveTransform(dst, src)  # the moved quadrilateral is stretched back to the frame
    fill = 0 if mask else (GREY,) * 3
    return cv2.warpPerspective(np.ascontiguousarray(img), m, (w, h),
                               flags=cv2.INTER_NEAREST if mask else cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
