"""ObjectStitch training data: self-supervised samples, and MureObjectStitch's few-shot folder.

Self-supervised (the public ``OpenImageDataset``): each JSON-lines record is a photo with the
mask of one object::

    {"image": "photos/0001.jpg", "mask": "masks/0001.png"}

A sample: the photo (long side at most 1024, as ``rescale_image_with_bbox``), the object's
box from its mask, padded by 10 px (``crop_foreground_by_bbox``); the object crop and its mask
augmented, the background perhaps cropped (:mod:`.augment`); the photo stretched to the
training square is the target, the box the hole, and the object black outside its
(augmented) mask, stretched to CLIP's square, the condition.

Few-shot (the public ``MureComDataset``): a folder of ``N.jpg`` photos of one object with
their masks ``N.png`` (mask above 0 = object), the first ``few_shot_images`` in name order.
Sample ``k`` is photo ``k mod N`` as above, and the condition is **every** photo's object,
each augmented on its own: their adaptor tokens are concatenated (``fg_img_list``).

Sample ``k`` is drawn from a generator seeded by ``(seed, k)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffcompose.errors import InputError
from diffcompose.inputs import load_image, load_mask, mask_to_box
from diffcompose.methods.objectstitch.augment import ObjectAugment
from diffcompose.methods.objectstitch.preprocess import prepare_object
from diffcompose.training.manifest import json_objects, read_training_manifest

PAD = 10  # ``crop_foreground_by_bbox``'s pad_bbox
LONG_SIDE = 1024  # ``rescale_image_with_bbox``'s long_size


@dataclass(frozen=True)
class Record:
    image: Path
    mask: Path


def read_jsonl(path: Path, image_root: Path, min_area: float, max_area: float) -> list[Record]:
    records = []
    for where, entry in json_objects(path):
        if not isinstance(entry.get("image"), str) or not isinstance(entry.get("mask"), str):
            raise InputError(f"{where}: ObjectStitch needs the object's mask: {{\"image\": ..., \"mask\": ...}}")
        records.append(Record(image_root / entry["image"], image_root / entry["mask"]))
    return records


def _no_coco(path: Path, *_: object) -> list[Record]:
    raise InputError(f"{path}: ObjectStitch trains on object masks; give a .jsonl manifest of "
                     "{\"image\": ..., \"mask\": ...} lines")


def read_records(manifest: Path, image_root: Path | None, min_area: float, max_area: float) -> list[Record]:
    records = read_training_manifest(manifest, image_root, (_no_coco, read_jsonl), min_area, max_area)
    if not records:
        raise InputError(f"{manifest}: no records")
    return records


def few_shot_records(folder: Path, limit: int) -> list[Record]:
    """The first ``limit`` photos ``N.jpg`` of ``folder`` (name order) that have a mask ``N.png``."""
    photos = sorted(p for p in Path(folder).glob("*.jpg") if p.with_suffix(".png").is_file())
    if not photos:
        raise InputError(f"few-shot folder {folder} holds no photo N.jpg with its mask N.png")
    return [Record(p, p.with_suffix(".png")) for p in photos[:limit]]


def rescale(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Long side at most :data:`LONG_SIDE` (``rescale_image_with_bbox``: Pillow's default filter, int sizes)."""
    h, w = image.shape[:2]
    if max(w, h) <= LONG_SIDE:
        return image, mask
    s = LONG_SIDE / max(w, h)
    size = (int(s * w), int(s * h))
    return (np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC)),
            np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST)))


def pad_box(box: tuple[int, int, int, int], size: tuple[int, int], pad: int = PAD) -> tuple[int, int, int, int]:
    """``constant_pad_bbox``: each side out by ``pad`` px, at most to the border."""
    w, h = size
    x0, y0, x1, y1 = box
    return max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)


def to_pixels(image: np.ndarray, size: int) -> torch.Tensor:
    """``get_tensor``: Pillow bilinear to the square, [-1, 1], (3, size, size)."""
    x = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)).astype(np.float32) / 255.0
    return torch.from_numpy(x).permute(2, 0, 1) * 2 - 1


def box_to_mask(box: tuple[int, int, int, int], shape: tuple[int, int], size: int) -> torch.Tensor:
    """``bbox2mask`` then ``get_tensor(normalize=False)`` (bilinear) and ``> 0.5``: (1, size, size), 1 = hole."""
    m = np.zeros(shape, dtype=np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    x = np.asarray(Image.fromarray(m).resize((size, size), Image.BILINEAR)).astype(np.float32) / 255.0
    return torch.from_numpy((x > 0.5).astype(np.float32))[None]


class ObjectStitchDataset(torch.utils.data.Dataset):
    """Sample ``k`` -> ``{"image": (3,R,R) [-1,1], "mask": (1,R,R) 1 = box, "reference": (N,3,S,S) CLIP}``.

    ``N`` is 1 (self-supervised: the photo's own object) or every few-shot photo (``few_shot``).
    """

    def __init__(self, records: list[Record], *, resolution: int = 512, object_size: int = 224, seed: int = 0,
                 few_shot: bool = False, augment: ObjectAugment | None = None) -> None:
        self.records = records
        self.resolution = resolution
        self.object_size = object_size
        self.seed = seed
        self.few_shot = few_shot
        self.augment = augment or ObjectAugment()

    def __len__(self) -> int:
        return 1 << 30  # sampled by index; the loop decides how many

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(k)])
        index = int(k) % len(self.records) if self.few_shot else int(rng.integers(len(self.records)))
        image, box, mask, obj, obj_mask = self._read(self.records[index])
        plan = self.augment.draw(rng)
        if plan.crop is not None:
            image, box, mask = self.augment.crop_background(image, box, mask, plan.crop)
        target = to_pixels(image, self.resolution)
        hole = box_to_mask(box, image.shape[:2], self.resolution)
        if self.few_shot:  # every photo's object, each augmented on its own draw (``fg_img_list``)
            objects = []
            for rec in self.records:
                _, _, _, o, om = self._read(rec)
                objects.append(self._object(o, om, self.augment.draw(rng)))
        else:
            objects = [self._object(obj, obj_mask, plan)]
        return {"image": target, "mask": hole, "reference": torch.stack(objects)}

    def _object(self, obj: np.ndarray, obj_mask: np.ndarray, plan) -> torch.Tensor:
        o, om = self.augment.apply_object(obj, obj_mask, plan)
        # the public ``fg_img * (fg_mask > 0.5)`` on the uint8 mask: any non-zero pixel is the object
        return torch.from_numpy(prepare_object(o, om > 0, size=self.object_size))

    def _read(self, rec: Record):
        """(photo, padded object box, object mask at photo size (uint8), object crop, its mask crop)."""
        image = load_image(rec.image, "training image", max_pixels=None)
        mask = load_mask(rec.mask, (image.shape[1], image.shape[0]), name="training mask", max_pixels=None,
                         allow_empty=True)
        if not mask.any():
            raise InputError(f"{rec.mask}: the object mask is empty")
        image, mask = rescale(image, mask.astype(np.uint8) * 255)
        b = mask_to_box(mask > 127)
        box = pad_box((b.x0, b.y0, b.x1, b.y1), (image.shape[1], image.shape[0]))
        x0, y0, x1, y1 = box
        return image, box, mask, image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
