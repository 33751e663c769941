"""Paint-by-Sketch training: Paint-by-Example's self-reference trainer with the target's sketch as input.

The public recipe is Paint-by-Example's (same config, loss, condition dropout and optimiser; its
``cartoon_train.sh`` starts from Paint-by-Example's weights with the 3 new input channels at zero)
plus the sketch of the training image (:mod:`.extract`), cut and resized with the image and kept
only inside the hole (:func:`~.sketch.sketch_pixels`, the sampler's own function), resized to the
latent grid as the keep mask. So this module is a :class:`~diffcompose.methods.pbe.train.Variant`
of :func:`diffcompose.methods.pbe.train.train`: its dataset and its three extra channels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from diffcompose.methods.pbe.data import SelfReferenceDataset
from diffcompose.methods.pbe.train import Variant
from diffcompose.methods.pbe.train import train as train_pbe
from diffcompose.methods.pbsketch.config import TrainConfig
from diffcompose.methods.pbsketch.extract import training_sketch
from diffcompose.methods.pbsketch.sketch import SKETCH_CHANNELS, sketch_pixels
from diffcompose.progress import CancelToken, ProgressCallback


class SketchDataset(SelfReferenceDataset):
    """Paint-by-Example's samples, plus ``"extra"``: the sketch channels ``(3, R, R)`` in [-1, 1]."""

    def __init__(self, records: list, cfg: TrainConfig, reference_size: int) -> None:
        super().__init__(records, resolution=cfg.resolution, reference_size=reference_size, seed=cfg.seed,
                         max_extend=cfg.max_extend, bezier_p=cfg.bezier_p)
        self.cfg = cfg

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        image, hole, reference, full, crop, path = self.draw(k)
        item = self.tensors(image, hole, reference)
        item["extra"] = torch.from_numpy(sketch_pixels(self.sketch(full, path, crop), hole))
        return item

    def sketch(self, full: np.ndarray, path: Path, crop) -> np.ndarray:
        """The image's strokes, cut and resized with it (bilinear: the public torchvision ``Resize``)."""
        c = self.cfg
        strokes = training_sketch(full, path, sketch_dir=c.sketch_dir, threshold=c.sketch_threshold,
                                  canny_low=c.canny_low, canny_high=c.canny_high, dilate=c.sketch_dilate)
        return cv2.resize(strokes[crop.slices], (self.resolution,) * 2, interpolation=cv2.INTER_LINEAR)


VARIANT = Variant(task="train pbsketch", engine="pbsketch", extra_channels=SKETCH_CHANNELS, dataset=SketchDataset)


def train(cfg: TrainConfig, *, on_progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None) -> list[float]:
    """Run (or resume) training (Paint-by-Example's :func:`~diffcompose.methods.pbe.train.train`)."""
    return train_pbe(cfg, on_progress=on_progress, cancel=cancel, variant=VARIANT)
