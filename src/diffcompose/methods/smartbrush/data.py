"""SmartBrush training data: object instances (image, exact mask, text) and the sample recipe.

Sources (relative paths resolve against ``image_root``, default the manifest's folder):

* **COCO instances JSON** (``.json``): ``images`` (``id``, ``file_name``, ``width``,
  ``height``), ``annotations`` (``image_id``, ``category_id``, ``segmentation`` as polygons
  ``[[x0, y0, x1, y1, ...], ...]`` or RLE ``{"size": [h, w], "counts": ...}``, compressed
  string or list of run lengths; ``iscrowd`` ones are skipped) and ``categories`` (``id``,
  ``name``: the label). An annotation may carry a ``"caption"`` of its segment (e.g. from
  BLIP), which COCO itself does not have.
  A COCO **captions** JSON (``captions_*.json``: annotations with ``image_id`` and ``caption``
  and no ``segmentation``) gives **image–caption pairs** instead.
* **JSON lines** (any other suffix), one instance or one image–caption pair per line::

      {"image": "a.jpg", "mask": "a_dog.png", "label": "dog", "caption": "a brown dog lying down"}
      {"image": "b.jpg", "polygons": [[10, 10, 90, 12, 50, 80]], "label": "kite"}
      {"image": "c.jpg", "rle": {"size": [480, 640], "counts": "..."}, "caption": "a red car"}
      {"image": "d.jpg", "caption": "a busy street market at dusk"}

  an instance with its mask as a file (white = object), polygons or RLE, and at least one
  of ``label`` and ``caption``; a line without a mask is an image–caption pair.

Instances whose mask covers less than ``min_area`` or more than ``max_area`` of their image
are skipped. A second manifest (``captions`` in the config, e.g. COCO's captions file next
to its instances file) is read the same way, with the same ``image_root``.

Sample ``k`` is a function of ``(seed, k)`` only (so a resumed run sees the same data).
With probability ``inpaint_share`` (0.8) it is an **inpainting** sample: an instance is
drawn, a square crop of its image's short side containing the object's box (where it fits)
is resized to ``resolution``, a precision level ``s`` is drawn uniformly from 0..S and the
coarse mask at that level (:mod:`.precision`) is the region, the exact mask the mask head's
target; the text is the label or the caption, half each when both exist. Otherwise it is a
**text-to-image** sample: the whole image is the region and the target (``s = S``). Its
source (``text_to_image``) is an image–caption pair, as the paper does (``captions``:
a centre square crop of the short side, the pair's caption), or an instance's image with
the instance's text (``instances``: the inpainting crop, without the mask); ``auto`` takes
the pairs when the data has any. With probability ``text_dropout`` the text is empty (for
classifier-free guidance). (An inpainting draw whose crop lost the object becomes a
text-to-image sample of that instance.)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from diffcompose.errors import InputError
from diffcompose.inputs import load_image, load_mask, resize_mask
from diffcompose.methods.smartbrush.precision import PRECISION_LEVELS, precision_mask
from diffcompose.models import codec
from diffcompose.training.manifest import json_objects, read_training_manifest

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- mask encodings

def rle_counts_from_string(text: str) -> list[int]:
    """Run lengths of COCO's compressed RLE string.

    Each number is written in 5-bit groups, least significant first, one character per
    group (``chr(48 + group)``, bit 0x20 = more groups follow; the last group's bit 0x10 is
    the sign). From the third number on, a number is stored as its difference from the
    number two places before it.
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = ord(text[pos]) - 48
            pos += 1
            value |= (group & 0x1F) << shift
            shift += 5
            more = bool(group & 0x20)
            if not more and group & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_string_from_counts(counts: list[int]) -> str:
    """The compressed RLE string of run lengths (the inverse of :func:`rle_counts_from_string`)."""
    chars = []
    for i, c in enumerate(counts):
        value = c - counts[i - 2] if i > 2 else c
        while True:
            group = value & 0x1F
            value >>= 5
            more = not ((value == 0 and not group & 0x10) or (value == -1 and group & 0x10))
            chars.append(chr(48 + (group | (0x20 if more else 0))))
            if not more:
                break
    return "".join(chars)


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A bool ``(h, w)`` mask from COCO RLE (runs alternate 0s and 1s, starting with 0s, column by column)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        counts = rle_counts_from_string(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE runs add up to {int(counts.sum())}, not {h}x{w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((w, h)).T.copy()


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE (compressed string) of a bool ``(h, w)`` mask."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_string_from_counts(runs)}


def rasterize_polygons(polygons: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    """A bool ``shape`` mask of COCO polygons (flat ``[x0, y0, x1, y1, ...]`` lists, pixel coordinates)."""
    canvas = np.zeros(shape, dtype=np.uint8)
    pts = []
    for poly in polygons:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(xy) >= 3:
            pts.append(np.round(xy * 8).astype(np.int32))  # 3 fractional bits: sub-pixel vertices
    if pts:
        cv2.fillPoly(canvas, pts, 1, lineType=cv2.LINE_8, shift=3)
    return canvas.astype(bool)


# ----------------------------------------------------------------------------- instances

@dataclass
class Instance:
    """One object: its image, how to get its exact mask, and its texts."""

    image: Path
    size: tuple[int, int]  # (width, height)
    label: str | None = None
    caption: str | None = None
    mask_file: Path | None = None
    polygons: list[list[float]] | None = None
    rle: dict[str, Any] | None = None

    def mask(self) -> np.ndarray:
        """The exact bool mask at the image's size."""
        w, h = self.size
        if self.mask_file is not None:
            return load_mask(self.mask_file, (w, h), name=f"mask {self.mask_file}", max_pixels=None)
        if self.polygons is not None:
            return rasterize_polygons(self.polygons, (h, w))
        m = decode_rle(self.rle or {})
        if m.shape != (h, w):
            raise InputError(f"RLE of {self.image} is {m.shape[1]}x{m.shape[0]}, the image {w}x{h}")
        return m

    def texts(self) -> list[str]:
        return [t for t in (self.label, self.caption) if t]


@dataclass
class CaptionPair:
    """An image and a caption of the whole of it: the source of the paper's text-to-image samples."""

    image: Path
    caption: str




def _area_ok(area: float, size: tuple[int, int], min_area: float, max_area: float) -> bool:
    return min_area <= area / float(size[0] * size[1]) <= max_area


def read_coco(path: Path, root: Path, min_area: float, max_area: float) -> list[Instance | CaptionPair]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise InputError(f"{path}: a COCO manifest is a JSON object with images and annotations")
    images = {im["id"]: im for im in data["images"]}
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    out: list[Instance | CaptionPair] = []
    for ann in data["annotations"]:
        im = images.get(ann["image_id"])
        seg = ann.get("segmentation")
        if im is not None and "segmentation" not in ann and str(ann.get("caption") or "").strip():
            out.append(CaptionPair(root / im["file_name"], ann["caption"].strip()))  # COCO captions file
            continue
        if im is None or ann.get("iscrowd", 0) or not seg:
            continue
        size = (int(im["width"]), int(im["height"]))
        inst = Instance(root / im["file_name"], size, label=names.get(ann.get("category_id")),
                        caption=ann.get("caption") or None)
        if isinstance(seg, list):
            inst.polygons = [list(map(float, p)) for p in seg]
        elif isinstance(seg, dict):
            inst.rle = seg
        else:
            raise ValueError(f"annotation {ann.get('id')}: segmentation must be polygons or RLE")
        if not inst.texts():
            continue
        area = float(ann["area"]) if "area" in ann else float(inst.mask().sum())
        if _area_ok(area, size, min_area, max_area):
            out.append(inst)
    return out


def image_size(image: Path, where: str) -> tuple[int, int]:
    """``(width, height)`` of a training image, read from its header (one-line errors)."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            return im.size
    except FileNotFoundError:
        raise InputError(f"{where}: image not found: {image}") from None
    except OSError:
        raise InputError(f"{where}: cannot read image {image}") from None


def read_jsonl(path: Path, root: Path, min_area: float, max_area: float) -> list[Instance | CaptionPair]:
    out: list[Instance | CaptionPair] = []
    for where, entry in json_objects(path):
        try:
            image = root / entry["image"]
        except (KeyError, TypeError):
            raise InputError(f"{where}: expected a JSON object with an \"image\" key") from None
        kinds = [k for k in ("mask", "polygons", "rle") if k in entry]
        texts = {k: entry.get(k) for k in ("label", "caption")}
        if not kinds and "label" not in entry and isinstance(texts["caption"], str) and texts["caption"].strip():
            image_size(image, where)  # the image is there and readable
            out.append(CaptionPair(image, texts["caption"].strip()))
            continue
        if len(kinds) != 1:
            raise InputError(f"{where}: give the object's mask as exactly one of \"mask\" (a file), \"polygons\" "
                             "or \"rle\" (or only \"image\" and \"caption\": an image-caption pair)")
        if not any(isinstance(v, str) and v.strip() for v in texts.values()):
            raise InputError(f"{where}: needs a \"label\" or a \"caption\" (the text of the object)")
        size = image_size(image, where)
        inst = Instance(image, size, label=(texts["label"] or "").strip() or None,
                        caption=(texts["caption"] or "").strip() or None)
        if kinds[0] == "mask":
            inst.mask_file = root / entry["mask"]
        elif kinds[0] == "polygons":
            inst.polygons = [list(map(float, p)) for p in entry["polygons"]]
        else:
            inst.rle = entry["rle"]
        try:
            area = float(inst.mask().sum())
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{where}: bad {kinds[0]} ({exc})") from None
        if _area_ok(area, size, min_area, max_area):
            out.append(inst)
    return out


def read_instances(manifest: Path, image_root: Path | None = None, min_area: float = 0.01,
                   max_area: float = 0.9) -> list[Instance]:
    """The usable instances of a COCO ``.json`` or a ``.jsonl`` manifest (one-line errors)."""
    return read_training_data(manifest, image_root, min_area, max_area)[0]


def read_training_data(manifest: Path, image_root: Path | None = None, min_area: float = 0.01, max_area: float = 0.9,
                       captions: Path | None = None) -> tuple[list[Instance], list[CaptionPair]]:
    """``(instances, image-caption pairs)`` of ``manifest`` and of the optional second manifest
    ``captions`` (COCO ``.json`` or ``.jsonl``, images under the same ``image_root``; one-line errors)."""
    entries = read_training_manifest(manifest, image_root, (read_coco, read_jsonl), min_area, max_area)
    if captions is not None:
        entries += read_training_manifest(captions, image_root or manifest.parent, (read_coco, read_jsonl),
                                          min_area, max_area)
    instances = [e for e in entries if isinstance(e, Instance)]
    pairs = [e for e in entries if isinstance(e, CaptionPair)]
    if not instances:
        raise InputError(f"{manifest}: no object with a text and a mask covering {min_area}..{max_area} of its image")
    log.info("%s: %d instances in %d images, %d image-caption pairs", manifest, len(instances),
             len({i.image for i in instances}), len(pairs))
    return instances, pairs


def text_to_image_pairs(source: str, pairs: list[CaptionPair]) -> list[CaptionPair]:
    """The pairs text-to-image samples are drawn from (``[]``: from the instances) for config ``text_to_image``."""
    if source == "captions" and not pairs:
        raise InputError("text_to_image: captions needs image-caption pairs (jsonl lines with only \"image\" and "
                         "\"caption\", or a COCO captions file as data.captions); or set text_to_image: instances")
    if source == "instances":
        return []
    if not pairs:
        log.warning("no image-caption pairs: text-to-image samples use the instances' images and texts "
                    "(the paper uses image-caption pairs; see data.captions)")
    return pairs


# ----------------------------------------------------------------------------- samples

def object_crop(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of a square of the image's short side containing the mask's box where it fits
    (placed at random along the long side), else centred on the box."""
    h, w = mask.shape
    side, length = min(h, w), max(h, w)
    if not mask.any():
        pos = (length - side) // 2
    else:
        ys, xs = np.nonzero(mask)
        along = xs if w > h else ys
        a0, a1 = int(along.min()), int(along.max()) + 1
        lo, hi = max(0, a1 - side), min(a0, length - side)
        pos = int(rng.integers(lo, hi + 1)) if hi >= lo else int(np.clip((a0 + a1 - side) // 2, 0, length - side))
    return (pos, 0, side) if w > h else (0, pos, side)


class SmartBrushDataset(torch.utils.data.Dataset):
    """Sample ``k`` -> ``{"image": (3,R,R) in [-1,1], "mask": (1,R,R) coarse, 1 = region, "target": (1,R,R)
    exact object mask, "level": int, "text": str}`` (see the module docstring).

    ``pairs``: the image-caption pairs text-to-image samples are drawn from; empty, they come
    from the instances (:func:`text_to_image_pairs` decides from the config).
    """

    def __init__(self, instances: list[Instance], *, resolution: int = 512, seed: int = 0,
                 inpaint_share: float = 0.8, text_dropout: float = 0.1, pairs: list[CaptionPair] | None = None) -> None:
        self.instances = instances
        self.pairs = list(pairs or [])
        self.resolution = resolution
        self.seed = seed
        self.inpaint_share = inpaint_share
        self.text_dropout = text_dropout

    def __len__(self) -> int:  # samples are indexed by an unbounded counter; this is one pass over the instances
        return len(self.instances)

    def __getitem__(self, k: int) -> dict[str, Any]:
        image, coarse, target, level, text = self.sample(k)
        return {"image": codec.images_to_tensor(image)[0], "mask": codec.mask_to_tensor(coarse)[0],
                "target": codec.mask_to_tensor(target)[0], "level": torch.tensor(level), "text": text}

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, str]:
        """uint8 image (R,R,3), bool coarse mask, bool target mask, level, text of sample ``k``."""
        rng = np.random.default_rng([self.seed, int(k)])
        inpaint = rng.random() < self.inpaint_share
        if not inpaint and self.pairs:
            image, text = self._caption_sample(rng)
            whole = np.ones(image.shape[:2], dtype=bool)
            return image, whole, whole, PRECISION_LEVELS, self._dropped(text, rng)
        inst = self.instances[int(rng.integers(len(self.instances)))]
        image = load_image(inst.image, "training image", max_pixels=None)
        exact = inst.mask()
        if exact.shape != image.shape[:2]:
            raise InputError(f"the mask of {inst.image} is {exact.shape[1]}x{exact.shape[0]}, the image "
                             f"{image.shape[1]}x{image.shape[0]}")
        x0, y0, side = object_crop(exact, rng)
        image = self._square(image[y0:y0 + side, x0:x0 + side])
        r = self.resolution
        exact = resize_mask(exact[y0:y0 + side, x0:x0 + side], (r, r))
        if inpaint and exact.any():
            level = int(rng.integers(0, PRECISION_LEVELS + 1))
            coarse, target = precision_mask(exact, level), exact
        else:  # text-to-image from an instance: the whole image is the region and the "object"
            level = PRECISION_LEVELS
            coarse = target = np.ones((r, r), dtype=bool)
        texts = inst.texts()
        text = texts[int(rng.integers(len(texts)))]
        return image, coarse, target, level, self._dropped(text, rng)

    def _caption_sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A centre square crop of the short side of a drawn pair's image, at ``resolution``, and its caption."""
        pair = self.pairs[int(rng.integers(len(self.pairs)))]
        image = load_image(pair.image, "training image", max_pixels=None)
        h, w = image.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        return self._square(image[y0:y0 + side, x0:x0 + side]), pair.caption

    def _square(self, crop: np.ndarray) -> np.ndarray:
        r = self.resolution
        return cv2.resize(crop, (r, r), interpolation=cv2.INTER_AREA if crop.shape[0] > r else cv2.INTER_CUBIC)

    def _dropped(self, text: str, rng: np.random.Generator) -> str:
        """``text``, or with probability ``text_dropout`` the empty text (for classifier-free guidance)."""
        return "" if rng.random() < self.text_dropout else text
