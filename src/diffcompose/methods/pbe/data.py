"""Paint-by-Example training data, the self-reference dataset: an image, one of its object boxes,
and that object as reference.

Sources: a COCO-style ``instances.json`` (``images`` + ``annotations`` with ``bbox`` as
x, y, w, h) or a JSON-lines manifest, one image per line::

    {"image": "photos/0001.jpg", "boxes": [[x0, y0, x1, y1], ...]}
    {"image": "photos/0002.jpg", "mask": "masks/0002.png"}

(relative paths are resolved against ``image_root``, default the manifest's folder; a
mask gives its bounding box). Boxes whose area is outside ``[min_area, max_area]`` of the
image are skipped, as in the original recipe.

Sample ``k`` is drawn from a generator seeded by ``(seed, k)``: the same ``k`` always gives
the same sample, whatever the worker, process or resume point.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from diffcompose.errors import InputError
from diffcompose.inputs import (
    Box,
    load_image,
    load_mask,
    mask_to_box,
    parse_box,
    resize_mask,
)
from diffcompose.methods.pbe.augment import ReferenceAugment
from diffcompose.methods.pbe.masks import bezier_mask, box_mask, extend_box
from diffcompose.methods.pbe.reference import normalize
from diffcompose.models import codec
from diffcompose.training.manifest import json_objects, read_training_manifest

log = logging.getLogger(__name__)


@dataclass
class Record:
    image: Path
    boxes: list[Box] = field(default_factory=list)


def _box_ok(box: Box, size: tuple[int, int], min_area: float, max_area: float) -> bool:
    share = box.width * box.height / float(size[0] * size[1])
    return box.width >= 2 and box.height >= 2 and min_area <= share <= max_area


def read_coco(path: Path, image_root: Path, min_area: float, max_area: float) -> list[Record]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InputError(f"{path}: a COCO manifest is a JSON object with images and annotations")
    images = {im["id"]: im for im in data.get("images", [])}
    records: dict[int, Record] = {}
    for ann in data.get("annotations", []):
        im = images.get(ann["image_id"])
        if im is None or ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        box = Box(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
        if _box_ok(box, (im["width"], im["height"]), min_area, max_area):
            records.setdefault(im["id"], Record(image_root / im["file_name"])).boxes.append(box)
    return list(records.values())


def read_jsonl(path: Path, image_root: Path, min_area: float, max_area: float) -> list[Record]:
    from PIL import Image

    records = []
    for where, entry in json_objects(path):
        try:
            image = image_root / entry["image"]
        except (KeyError, TypeError):
            raise InputError(f"{where}: expected a JSON object with an \"image\" key") from None
        try:
            with Image.open(image) as im:
                size = im.size
        except FileNotFoundError:
            raise InputError(f"{where}: image not found: {image}") from None
        except OSError:
            raise InputError(f"{where}: cannot read image {image}") from None
        if "mask" in entry:
            boxes = [mask_to_box(load_mask(image_root / entry["mask"], size, name=f"{where} mask"))]
        else:
            raw = entry.get("boxes", [entry["box"]] if "box" in entry else [])
            if not isinstance(raw, list):
                raise InputError(f"{where}: \"boxes\" must be a list of [x0, y0, x1, y1]")
            boxes = [parse_box(b, size, name=f"{where} box") for b in raw]
        boxes = [b for b in boxes if _box_ok(b, size, min_area, max_area)]
        if boxes:
            records.append(Record(image, boxes))
    return records


def read_records(manifest: Path, image_root: Path | None = None, min_area: float = 0.02,
                 max_area: float = 0.8) -> list[Record]:
    """Images with their usable boxes, from a COCO json or a jsonl manifest."""
    records = read_training_manifest(manifest, image_root, (read_coco, read_jsonl), min_area, max_area)
    if not records:
        raise InputError(f"{manifest}: no image has a box with relative area in [{min_area}, {max_area}]")
    log.info("%s: %d images, %d boxes", manifest, len(records), sum(len(r.boxes) for r in records))
    return records


class SelfReferenceDataset(torch.utils.data.Dataset):
    """Sample ``k`` -> ``{"image": (3,R,R) in [-1,1], "mask": (1,R,R) soft, 1 = hole, "reference": (3,S,S) CLIP}``.

    The recipe of the original (``ldm/data/open-images.py``): the reference is the object's
    box padded by exactly ``pad`` px (clamped at the border), augmented
    (:class:`~.augment.ReferenceAugment`); the hole is the box extended by up to
    ``max_extend`` of the free space on each side, or with probability ``bezier_p`` the
    irregular outline of :func:`~.masks.bezier_mask`; the crop is :func:`square_crop`,
    resized to ``resolution``. The hole mask is resized with the image (area-averaged when
    shrinking, bilinear when growing), so it is soft at its edge, as the original's bilinear
    resize; the trainer builds the masked image and the latent mask from it with the same
    function as the sampler (:func:`~diffcompose.methods.pbe.components.masked_condition`).
    """

    def __init__(self, records: list[Record], *, resolution: int = 512, reference_size: int = 224, seed: int = 0,
                 max_extend: float = 0.4, bezier_p: float = 0.5, pad: int = 10,
                 augment: ReferenceAugment | None = None) -> None:
        self.records = records
        self.resolution = resolution
        self.seed = seed
        self.max_extend = max_extend
        self.bezier_p = bezier_p
        self.pad = pad
        self.augment = augment or ReferenceAugment(size=reference_size)
        if self.augment.size != reference_size:
            raise ValueError("augment size and reference_size differ")

    def __len__(self) -> int:  # samples are indexed by an unbounded counter; this is one pass over the boxes
        return sum(len(r.boxes) for r in self.records)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return self.tensors(*self.sample(k))

    @staticmethod
    def tensors(image: np.ndarray, hole: np.ndarray, reference: np.ndarray) -> dict[str, torch.Tensor]:
        """A sample's arrays as the trainer's tensors."""
        return {"image": codec.images_to_tensor(image)[0], "mask": codec.mask_to_tensor(hole)[0],
                "reference": torch.from_numpy(normalize(reference))}

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 image (R,R,3), float32 hole in [0, 1] (R,R), uint8 augmented reference (S,S,3) for sample ``k``."""
        return self.draw(k)[:3]

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Box, Path]:
        """:meth:`sample`'s three arrays, then the full training image, the crop taken of it and its file (so
        a trainer that extends the recipe, as Paint-by-Sketch's, can cut its own maps along with the image)."""
        rng = np.random.default_rng([self.seed, int(k)])
        rec = self.records[int(rng.integers(len(self.records)))]
        box = rec.boxes[int(rng.integers(len(rec.boxes)))]
        image = load_image(rec.image, "training image", max_pixels=None)
        h, w = image.shape[:2]
        box = Box(max(0, box.x0), max(0, box.y0), min(w, box.x1), min(h, box.y1))

        reference = self.augment(image[pad_box(box, (w, h), self.pad).slices], rng)
        hole, crop = hole_and_crop(box, (w, h), rng, self.max_extend, self.bezier_p)
        shrinking = crop.width * crop.height > self.resolution ** 2
        full = image
        image = cv2.resize(image[crop.slices], (self.resolution,) * 2,
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
        hole = resize_mask(hole[crop.slices], (self.resolution, self.resolution), soft=True)
        return image, hole, reference, full, crop, rec.image


def pad_box(box: Box, size: tuple[int, int], pad: int) -> Box:
    """``box`` grown by ``pad`` px on every side, clamped at the image border."""
    w, h = size
    return Box(max(0, box.x0 - pad), max(0, box.y0 - pad), min(w, box.x1 + pad), min(h, box.y1 + pad))


def hole_and_crop(box: Box, size: tuple[int, int], rng: np.random.Generator, max_extend: float = 0.4,
                  bezier_p: float = 0.5) -> tuple[np.ndarray, Box]:
    """The bool hole (full image size) of an object ``box`` and the square crop around it."""
    w, h = size
    ext = extend_box(box, size, rng, max_extend)
    hole = bezier_mask(box, ext, (h, w), rng) if rng.random() < bezier_p else box_mask(ext, (h, w))
    return hole, square_crop(ext, size, rng)


def square_crop(inner: Box, size: tuple[int, int], rng: np.random.Generator) -> Box:
    """The original's crop around the extended box ``inner``.

    A short-side square placed at random along the long side so that it contains
    ``inner``, then shrunk on every side by a random amount up to 60% of the smallest
    margin between ``inner`` and the square's edges. When no such square exists (``inner``
    is wider than the short side allows) or the image is already square, the whole image
    (resized to a square later, as the original does).
    """
    w, h = size
    if w == h:
        return Box(0, 0, w, h)
    if w > h:  # slide along x
        lo, hi = max(inner.x1 - h, 0), min(inner.x0 + h, w) - h
        if hi <= lo:
            return Box(0, 0, w, h)
        pos = int(rng.integers(lo, hi + 1))
        free = min(inner.y0, inner.x0 - pos, pos + h - inner.x1, h - inner.y1)
        r = int(rng.integers(0, int(0.6 * free) + 1))
        return Box(pos + r, r, pos + h - r, h - r)
    lo, hi = max(inner.y1 - w, 0), min(inner.y0 + w, h) - w
    if hi <= lo:
        return Box(0, 0, w, h)
    pos = int(rng.integers(lo, hi + 1))
    free = min(inner.y0 - pos, inner.x0, w - inner.x1, pos + w - inner.y1)
    r = int(rng.integers(0, int(0.6 * free) + 1))
    return Box(r, pos + r, w - r, pos + w - r)
