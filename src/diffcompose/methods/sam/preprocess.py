"""SAM's input and output geometry, written out (``SamProcessor`` needs torchvision here).

The image is resized so its longer side is the model's input size (1024 for the published
checkpoints), normalised with ImageNet statistics and zero-padded at the bottom and right to
a square; prompts (points, boxes) are scaled by the same per-axis factors. The mask decoder's
low-resolution logits (a quarter of the input size) are upsampled to the padded square, cut
to the resized image, resized to the original image and thresholded. These are the steps of
the reference ``SamImageProcessor`` (resize longest side, rescale 1/255, normalise, pad;
post-process: upsample, crop, upsample, threshold).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from diffcompose.models.hub import read_json

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Geometry:
    """How an image of ``size`` (w, h) maps to the model's padded ``square`` input."""

    size: tuple[int, int]
    resized: tuple[int, int]  # (w, h) inside the square
    square: int

    @classmethod
    def of(cls, size: tuple[int, int], square: int) -> "Geometry":
        w, h = size
        s = square / max(w, h)
        return cls(size, (max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5))), square)

    @property
    def scale(self) -> tuple[float, float]:
        return self.resized[0] / self.size[0], self.resized[1] / self.size[1]

    def points(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` image coordinates -> model coordinates."""
        return np.asarray(xy, dtype=np.float64) * np.array(self.scale)

    def box(self, box: Any) -> np.ndarray:
        sx, sy = self.scale
        return np.array([box.x0 * sx, box.y0 * sy, box.x1 * sx, box.y1 * sy], dtype=np.float64)


@dataclass(frozen=True)
class Preprocessor:
    square: int = 1024
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_dir(cls, root: Path, square: int) -> "Preprocessor":
        """``preprocessor_config.json`` of a checkpoint (its mean, std and longest edge), else the defaults."""
        path = Path(root) / "preprocessor_config.json"
        if not path.is_file():
            return cls(square)
        cfg = read_json(path, "SAM preprocessor config")
        size = cfg.get("size") or {}
        edge = size.get("longest_edge", square) if isinstance(size, dict) else square
        return cls(int(edge), tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD)))

    def pixels(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """uint8 ``(H, W, 3)`` -> float32 ``(3, S, S)`` normalised and padded, with its geometry."""
        geo = Geometry.of((image.shape[1], image.shape[0]), self.square)
        rw, rh = geo.resized
        # PIL's bilinear (antialiased when shrinking): the resampling SAM was trained and is served with
        resized = np.asarray(Image.fromarray(image).resize((rw, rh), Image.Resampling.BILINEAR))
        x = (resized.astype(np.float32) / 255.0 - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        out = np.zeros((self.square, self.square, 3), np.float32)
        out[:rh, :rw] = x
        return np.ascontiguousarray(out.transpose(2, 0, 1)), geo


def logits_to_mask(low_res: np.ndarray, geo: Geometry, threshold: float) -> np.ndarray:
    """float ``(h', w')`` decoder logits -> bool ``(H, W)`` mask of the original image."""
    up = cv2.resize(low_res.astype(np.float32), (geo.square, geo.square), interpolation=cv2.INTER_LINEAR)
    rw, rh = geo.resized
    full = cv2.resize(up[:rh, :rw], geo.size, interpolation=cv2.INTER_LINEAR)
    return full > threshold
