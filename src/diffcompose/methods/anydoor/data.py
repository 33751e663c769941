"""AnyDoor training data: object pairs (reference view, target view) and the published sample recipe.

Manifest: JSON lines (``.jsonl``), one **source** per line; relative paths resolve against
``image_root`` (default: the manifest's folder)::

    {"kind": "image", "image": "sal/0001.jpg", "mask": "sal/0001.png"}
    {"kind": "image", "image": "lvis/12.jpg", "mask": "lvis/12_ids.png", "instance": 3}
    {"kind": "video", "instance": 2, "frames": [{"image": "v1/00000.jpg", "mask": "v1/00000.png"},
                                                {"image": "v1/00005.jpg", "mask": "v1/00005.png"}, ...]}
    {"kind": "multiview", "frames": [{"image": "mv/7/000.jpg", "mask": "mv/7/000.png"}, ...]}
    {"kind": "youtube-vos", "root": "ytvos/train"}
    {"preset": "mose", "instance": 1, "frames": [...]}
    {"preset": "vitonhd", "frames": [{"image": "cloth/1.jpg", "mask": "cloth-mask/1.png"},
                                     {"image": "image/1.jpg", "mask": "upper/1.png"}]}

* ``image``: a still image with one object's mask; the same image is reference and target
  (SAM, LVIS, saliency sets). ``kind`` may be left out when ``image`` is given.
* ``video``: frames of one object in time order (YouTube-VOS/VIS, VIPSeg, UVO, MOSE); the
  reference and the target are two frames at least ``len // 10`` apart.
* ``multiview``: views of one object (MVImageNet); two views at least ``len // 8`` apart.
* ``pair``: a reference (the first frame) and one or more targets of the same object, one drawn
  per sample (try-on: VITON-HD, DressCode, FashionTryOn: a garment, and photos of it worn).
* ``youtube-vos``: a YouTube-VOS/VIS-style folder, expanded into one ``video`` source per
  (video, object): ``root/meta.json`` (``{"videos": {VID: {"objects": {OID: {"frames":
  [NAME, ...]}}}}}``), frames ``root/JPEGImages/VID/NAME.jpg`` and palette masks
  ``root/Annotations/VID/NAME.png`` whose pixel value is the object id.

Per source (:class:`Rules`, the public ``datasets/*.py``): the timestep range outside the
uniform share, the least frame gap, the size rule and the largest target box. Each kind has
the rules of most of its public sets (:data:`KIND_RULES`); ``"preset"`` names a public set
whose rules differ (:data:`PRESETS`: ``mose``: video, timesteps [0, 1000), gap ``len // 10``,
a box fails on either side; ``vipseg``: [500, 1000), ``len // 100``, either side; the try-on
sets are ``pair``: [0, 1000), both sides, target box up to the whole image), and
``"timesteps": [lo, hi]``, ``"gap": N``, ``"size_rule": "either"|"both"`` and ``"max_box"``
on the line override both.

A mask is white = object, or, with ``"instance": N``, the pixels whose value (palette index
or grey level) is ``N``. ``"repeat": N`` (any line) lists its sources N times per epoch: the
mixture's weights (the public code weights its sets by their nominal lengths and by listing
the video, try-on and multi-view sets twice).

Sample ``k`` is a function of ``(seed, epoch, index)`` only, ``epoch, index = divmod(k, len)``:
each epoch visits every source once in a seeded order, and every random choice of the item
(frame pair, crop ratios, augmentation, shape mask, timestep) comes from one generator seeded
by ``(seed, epoch, index, attempt)``. A pair the filters refuse is replaced by another
source drawn from the next attempt's generator (the public code redraws at random too).

The recipe (the public ``datasets/base.py``, ``process_pairs``), at ``resolution`` R (512):

* **filters**: both masks cover ``min_area``..``max_area`` (0.01..0.64) of their image; the
  reference mask is one solid part (its largest outer contour holds > 90% of the contour
  area); the reference box is at least 1/10 of the image and the expanded target box at most
  8/10 of it on a side (the source's size rule: still images, MOSE and VIPSeg fail on either
  side; the other videos, multi-view and try-on only on both; try-on allows the whole image).
* **reference**: background set to white, cropped to the mask's box, padded by a random ratio
  in {1.1, 1.2, 1.3, 1.4}, padded to a centred square, resized to 224; then the public
  augmentation: horizontal flip (p 0.5, image and mask together) and brightness/contrast
  (p 0.5, +-0.2 each, the image only, its white background included). The augmented
  reference is both the ID extractor's input and the source of the high-frequency map. The
  public training has no photometric target augmentation: the target varies by its random
  crop and, for video/multi-view, by the other frame.
* **target**: the mask's box expanded 1.1x (the public ``randint(11, 12) / 10``, always 1.1);
  the crop around it expanded by a random ratio in {1.3, ..., 2.9}, made square and clipped
  to the image; the HF map stretched into the box of the crop (the collage); mask channel 1
  in the box, or with p ``shape_p`` (0.7) the **shape mask** (:func:`shape_mask`) of the
  object. Crop and collage padded with 0 to a square, the mask channel with -1 (the public
  training pads it with 2, resizes nearest and maps 2 to -1), resized to R.
* **timestep** (:func:`sample_timestep`): with p ``uniform_t_p`` (0.3) uniform over [0, 1000);
  otherwise the source's range: videos [500, 1000) (MOSE: [0, 1000)), still images [0, 500),
  multi-view and try-on [0, 1000).

The boxes, paddings, resizes and the HF map are those of the inference preprocessing
(:mod:`.preprocess`, with the public code's conventions and quirks, e.g. its one-pixel-short
object box), so the model is trained on exactly what the sampler feeds it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from diffcompose.errors import InputError
from diffcompose.inputs import load_image, load_mask
from diffcompose.training.manifest import json_objects, read_training_manifest

log = logging.getLogger(__name__)

#: Kinds of source: a still image (reference = target), frames of a video, views of one object, and
#: a reference with one or more targets of it (try-on: a garment and photos of it worn).
KINDS = ("image", "video", "multiview", "pair")
NUM_TRAIN_TIMESTEPS = 1000
SIZE_RULES = ("either", "both")


@dataclass(frozen=True)
class Rules:
    """What the public datasets set per source (``datasets/*.py``): the timestep range outside the
    uniform share (their ``dynamic`` 0/1/2: [0, 500), [500, 1000), [0, 1000)), the least frame gap
    as a divisor of the number of frames (``min_interval = len // gap``), the size rule of their
    ``check_region_size`` (``either``: a box fails when either side is out of range; ``both``: only
    when both are) and the largest expanded target box side, as a share of the image's (``max_ratio``)."""

    timesteps: tuple[int, int]
    gap: int = 1
    size_rule: str = "either"
    max_box: float = 0.8


#: Each kind's rules unless the manifest line says otherwise.
KIND_RULES = {
    "image": Rules((0, 500), 1, "either"),           # SAM, LVIS, saliency
    "video": Rules((500, 1000), 10, "both"),         # YouTube-VOS/VIS, UVO
    "multiview": Rules((0, 1000), 8, "both"),        # MVImageNet
    "pair": Rules((0, 1000), 1, "both", 1.0),         # VITON-HD, DressCode, FashionTryOn
}
#: Named public sets whose rules differ from their kind's (``"preset"`` on a manifest line).
PRESETS = {
    "mose": ("video", Rules((0, 1000), 10, "either")),
    "vipseg": ("video", Rules((500, 1000), 100, "either")),
    "youtube-vos": ("video", KIND_RULES["video"]), "youtube-vis": ("video", KIND_RULES["video"]),
    "uvo": ("video", KIND_RULES["video"]), "mvimagenet": ("multiview", KIND_RULES["multiview"]),
    "vitonhd": ("pair", KIND_RULES["pair"]), "dresscode": ("pair", KIND_RULES["pair"]),
    "fashiontryon": ("pair", KIND_RULES["pair"]),
    "sam": ("image", KIND_RULES["image"]), "lvis": ("image", KIND_RULES["image"]),
    "saliency": ("image", KIND_RULES["image"]),
}
SOLIDITY = 0.9
MAX_TRIES = 50


class Rejected(Exception):
    """A pair the filters refuse (another one is drawn)."""


@dataclass(frozen=True)
class Frame:
    image: Path
    mask: Path


@dataclass(frozen=True)
class Source:
    kind: str  # one of KINDS
    frames: tuple[Frame, ...]  # a pair: the reference, then its targets
    instance: int | None = None  # mask pixel value of the object; None: white = object
    rules: Rules | None = None  # None: the kind's (KIND_RULES)

    @property
    def rule(self) -> Rules:
        return self.rules or KIND_RULES[self.kind]


# ----------------------------------------------------------------------------- the manifest

def _frame(entry: Any, root: Path, where: str) -> Frame:
    if not isinstance(entry, dict) or "image" not in entry or "mask" not in entry:
        raise InputError(f"{where}: each frame needs \"image\" and \"mask\"")
    return Frame(root / entry["image"], root / entry["mask"])


def expand_youtube_vos(folder: Path, where: str) -> list[Source]:
    """One ``video`` source per (video, object) of a YouTube-VOS/VIS-style folder (see the module docstring)."""
    meta = folder / "meta.json"
    if not meta.is_file():
        raise InputError(f"{where}: {meta} not found (a YouTube-VOS folder has meta.json, JPEGImages/, Annotations/)")
    sources = []
    try:
        videos = json.loads(meta.read_text(encoding="utf-8"))["videos"]
        for vid in sorted(videos):
            for oid in sorted(videos[vid]["objects"], key=lambda s: int(s)):
                names = videos[vid]["objects"][oid]["frames"]
                frames = tuple(Frame(folder / "JPEGImages" / vid / f"{n}.jpg",
                                     folder / "Annotations" / vid / f"{n}.png") for n in names)
                if frames:
                    sources.append(Source("video", frames, int(oid)))
    except (ValueError, LookupError, TypeError, AttributeError) as exc:  # not JSON, or not this layout
        raise InputError(f"{where}: {meta} is not a YouTube-VOS meta.json ({type(exc).__name__}: {exc})") from None
    return sources


def read_jsonl(path: Path, image_root: Path, min_area: float, max_area: float) -> list[Source]:
    """The sources of a JSON-lines manifest (masks are checked when a sample is drawn, not here)."""
    del min_area, max_area  # video sets are large: the area filter runs per drawn pair
    sources: list[Source] = []
    for where, entry in json_objects(path):
        preset = entry.get("preset")
        if preset is not None and preset not in PRESETS:
            raise InputError(f"{where}: unknown preset {preset!r} ({', '.join(PRESETS)})")
        kind = entry.get("kind", PRESETS[preset][0] if preset else "image" if "image" in entry else None)
        instance, repeat = entry.get("instance"), entry.get("repeat", 1)
        if instance is not None and (not isinstance(instance, int) or isinstance(instance, bool) or instance < 0):
            raise InputError(f"{where}: \"instance\" must be a non-negative integer (the object's mask value)")
        if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= 10**6:
            raise InputError(f"{where}: \"repeat\" must be a whole number from 1 (times per epoch)")
        if kind == "image":
            found = [Source("image", (_frame(entry, image_root, where),), instance)]
        elif kind in ("video", "multiview", "pair"):
            frames = entry.get("frames")
            if not isinstance(frames, list) or len(frames) < 2:
                raise InputError(f"{where}: a {kind} source needs \"frames\": a list of at least 2 "
                                 "{\"image\", \"mask\"} objects")
            found = [Source(kind, tuple(_frame(f, image_root, where) for f in frames), instance)]
        elif kind == "youtube-vos":
            if "root" not in entry:
                raise InputError(f"{where}: a youtube-vos source needs \"root\"")
            found = expand_youtube_vos(image_root / entry["root"], where)
        else:
            raise InputError(f"{where}: unknown kind {kind!r} (image, video, multiview, pair, youtube-vos)")
        rules = _rules(entry, found[0].kind if found else "video", preset, where)
        sources.extend([dataclasses.replace(s, rules=rules) for s in found] * repeat)
    return sources


def _rules(entry: dict, kind: str, preset: str | None, where: str) -> Rules:
    """The line's rules: its preset's (else its kind's), with ``timesteps``, ``gap``, ``size_rule`` and
    ``max_box`` given on the line taking precedence."""
    base = PRESETS[preset][1] if preset else KIND_RULES[kind]
    ts = entry.get("timesteps", list(base.timesteps))
    if (not isinstance(ts, list) or len(ts) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in ts)
            or not 0 <= ts[0] < ts[1] <= NUM_TRAIN_TIMESTEPS):
        raise InputError(f"{where}: \"timesteps\" must be [low, high] with 0 <= low < high <= "
                         f"{NUM_TRAIN_TIMESTEPS} (high excluded)")
    gap = entry.get("gap", base.gap)
    if not isinstance(gap, int) or isinstance(gap, bool) or gap < 1:
        raise InputError(f"{where}: \"gap\" must be a whole number from 1 (least frame gap = frames // gap)")
    size_rule = entry.get("size_rule", base.size_rule)
    if size_rule not in SIZE_RULES:
        raise InputError(f"{where}: \"size_rule\" must be either or both")
    max_box = entry.get("max_box", base.max_box)
    if isinstance(max_box, bool) or not isinstance(max_box, (int, float)) or not 0 < max_box <= 1:
        raise InputError(f"{where}: \"max_box\" must be in (0, 1] (the expanded box's largest side share)")
    return Rules((ts[0], ts[1]), gap, size_rule, float(max_box))


def _no_coco(path: Path, *_: Any) -> list[Source]:
    raise InputError(f"{path}: AnyDoor training reads a .jsonl manifest (see methods/anydoor/data.py)")


def read_sources(manifest: Path, image_root: Path | None = None) -> list[Source]:
    """The sources of ``manifest`` (through the shared reader: malformed entries are one-line errors)."""
    sources = read_training_manifest(manifest, image_root, (_no_coco, read_jsonl), 0.0, 1.0)
    if not sources:
        raise InputError(f"{manifest}: no sources")
    counts = {k: sum(s.kind == k for s in sources) for k in KINDS}
    log.info("%s: %s", manifest, ", ".join(f"{v} {k}" for k, v in counts.items()))
    return sources


def read_instance_mask(path: Path, instance: int | None, size: tuple[int, int]) -> np.ndarray:
    """The object's bool mask: white = object, or pixel value (palette index / grey) == ``instance``."""
    from PIL import Image

    if instance is None:
        return load_mask(path, size, name=str(path), allow_empty=True, max_pixels=None)
    with Image.open(path) as im:
        arr = np.asarray(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L"))
    if arr.shape != (size[1], size[0]):
        raise InputError(f"{path} is {arr.shape[1]}x{arr.shape[0]} but its image is {size[0]}x{size[1]}")
    return arr == instance


# ----------------------------------------------------------------------------- filters and draws

def mask_area_ok(mask: np.ndarray, min_area: float = 0.01, max_area: float = 0.64) -> bool:
    """The object covers ``min_area``..``max_area`` of the image (the public 0.1^2..0.8^2)."""
    share = float(np.count_nonzero(mask)) / mask.size
    return min_area <= share <= max_area


def mask_solidity(mask: np.ndarray) -> float:
    """The largest outer contour's share of all outer contours' area (holes do not count): 1 = one part."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if m.sum() < 10:
        return 0.0
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    areas = [cv2.contourArea(c) for c in contours]
    total = sum(areas)
    return max(areas) / total if total > 0 else 0.0


def mask_ok(mask: np.ndarray, min_area: float = 0.01, max_area: float = 0.64) -> bool:
    """Both filters of the published data: area in range and one solid connected part."""
    return mask_area_ok(mask, min_area, max_area) and mask_solidity(mask) > SOLIDITY


def pick_pair(n: int, kind: str, rng: np.random.Generator, gap: int | None = None) -> tuple[int, int]:
    """Reference and target frame indices: the same for a still image; a pair's reference (0) and
    one of its targets; else ``j - i >= n // gap`` (the kind's gap unless given)."""
    if kind == "image" or n == 1:
        return 0, 0
    if kind == "pair":
        return 0, int(rng.integers(1, n))
    least = n // (gap or KIND_RULES[kind].gap)
    i = int(rng.integers(0, n - least))
    return i, i + int(rng.integers(least, n - i))  # at most n - 1


def sample_timestep(rng: np.random.Generator, span: tuple[int, int] | str, uniform_p: float = 0.3,
                    steps: int = NUM_TRAIN_TIMESTEPS) -> int:
    """Adaptive timestep: with p ``uniform_p`` uniform over [0, T); otherwise from the source's
    ``span`` (or its kind's, given a kind): videos [T/2, T) (large motion: learn the coarse
    layout), still images [0, T/2) (the same object: learn the details), multi-view and
    try-on [0, T)."""
    lo, hi = KIND_RULES[span].timesteps if isinstance(span, str) else span
    if rng.random() < uniform_p:
        return int(rng.integers(0, steps))
    return int(rng.integers(lo, hi))


def _structure(rng: np.random.Generator, size: int) -> np.ndarray:
    shape = int(rng.integers(4))
    if shape == 0:
        return cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    dims = [(size, size), (size, max(1, size // 2)), (max(1, size // 2), size)][shape - 1]
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, dims)


def shape_mask(mask: np.ndarray, rng: np.random.Generator, rounds: int = 250) -> np.ndarray:
    """A coarse object-shaped mask from the ground truth ``mask``: the user's rough shape at training time.

    As the public ``perturb_mask``, at the mask's own pixels (the public code works on the
    scene crop as it is, not downsampled): per round four random sub-rectangles are dilated
    or eroded (p 1/2 each) by a random rectangle/ellipse of 3..9 px, a random pixel is set or
    cleared now and then (p 0.1), and the ground truth is put back (the result always covers
    it), until the IoU with the ground truth drops below a target drawn from [0.3, 0.99); the
    largest connected part is kept.
    """
    gh, gw = mask.shape
    gt = mask.astype(np.uint8)
    seg = gt.copy()
    if gh > 2 and gw > 2 and gt.any():
        target = rng.uniform(0.3, 0.99)
        for _ in range(rounds):
            for _ in range(4):
                x0, y0 = int(rng.integers(gw)), int(rng.integers(gh))
                x1, y1 = int(rng.integers(x0 + 1, gw + 1)), int(rng.integers(y0 + 1, gh + 1))
                if rng.random() < 0.1:
                    seg[(y0 + y1) // 2, (x0 + x1) // 2] = int(rng.integers(2))
                op = cv2.dilate if rng.random() < 0.5 else cv2.erode
                kernel = _structure(rng, int(rng.integers(3, 10)))
                seg[y0:y1, x0:x1] = op(np.ascontiguousarray(seg[y0:y1, x0:x1]), kernel)
                seg |= gt
            inter, union = np.count_nonzero(seg & gt), np.count_nonzero(seg | gt)
            if inter / max(union, 1) < target:
                break
        seg = largest_part(seg)
    return seg.astype(bool)


def largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part of a binary mask (uint8 0/1)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(np.uint8)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == best).astype(np.uint8)


def brightness_contrast(image: np.ndarray, rng: np.random.Generator, limit: float = 0.2) -> np.ndarray:
    """The public ``RandomBrightnessContrast`` defaults: ``image * (1 + c) + 255 * b``, ``b, c ~ U(-0.2, 0.2)``."""
    contrast, brightness = 1.0 + rng.uniform(-limit, limit), rng.uniform(-limit, limit)
    lut = np.clip(np.arange(256, dtype=np.float32) * contrast + 255.0 * brightness, 0, 255).astype(np.uint8)
    return lut[image]


def augment_reference(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The public reference augmentation: flip (p 0.5, image and mask) and brightness/contrast (p 0.5, image)."""
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image = brightness_contrast(image, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def _side_check(yyxx: tuple[int, int, int, int], shape: tuple[int, ...], ratio: float, mode: str,
                both: bool) -> bool:
    """The public ``check_region_size`` of a ``(y1, y2, x1, x2)`` box: ``min``: sides at least ``ratio``
    of the image's, ``max``: at most; still images fail on either side, videos only on both."""
    y1, y2, x1, x2 = yyxx
    lim_h, lim_w = shape[0] * ratio, shape[1] * ratio
    h, w = y2 - y1, x2 - x1
    bad = (h < lim_h, w < lim_w) if mode == "min" else (h > lim_h, w > lim_w)
    return not (all(bad) if both else any(bad))


# ----------------------------------------------------------------------------- one sample

@dataclass
class Sample:
    reference: np.ndarray  # uint8 (224, 224, 3): the augmented reference on white (ID extractor input)
    target: np.ndarray  # uint8 (R, R, 3): the target crop, padded square
    hint: np.ndarray  # float32 (R, R, 4): collage in [-1, 1] + mask channel (1 region, 0 outside, -1 padding)
    timestep: int
    kind: str
    pair: tuple[int, int]  # reference and target frame indices
    shaped: bool  # the mask channel is the shape mask (else the box)


def process_pair(ref_image: np.ndarray, ref_mask: np.ndarray, tar_image: np.ndarray, tar_mask: np.ndarray,
                 rng: np.random.Generator, *, kind: str = "image", resolution: int = 512, shape_p: float = 0.7,
                 min_area: float = 0.01, max_area: float = 0.64, rules: Rules | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(reference, target crop, hint, shaped) of one pair, or :class:`Rejected` (see the module docstring).

    The geometry is the inference preprocessing's (:mod:`.preprocess`, public conventions:
    the same boxes, paddings and resizes); what is training-only lives here: the ratios drawn
    as the public training draws them, the filters, the augmentation, the shape mask.
    """
    from diffcompose.methods.anydoor import preprocess as pp

    if not mask_ok(ref_mask, min_area, max_area) or not mask_area_ok(tar_mask, min_area, max_area):
        raise Rejected("mask area or solidity")
    rule = rules or KIND_RULES[kind]
    relaxed = rule.size_rule == "both"
    if not _side_check(pp.mask_box(ref_mask), ref_mask.shape, 0.1, "min", relaxed):
        raise Rejected("reference object too small")
    ratios = pp.draw_ratios(rng, "demo")  # training draws as the demo: reference 1.1-1.4, box 1.1, crop 1.3-2.9
    target = pp.expand_box(pp.mask_box(tar_mask), ratios.box, tar_mask.shape)
    if not _side_check(target, tar_mask.shape, rule.max_box, "max", relaxed):
        raise Rejected("target object too large")
    prepared = pp.prepare_reference(ref_image, ref_mask, ratios.reference)
    ref, ref_m = augment_reference(prepared.image, prepared.mask, rng)
    hf = pp.high_frequency_map(ref, ref_m / 255.0)
    shaped = bool(rng.random() < shape_p)
    coarse = None
    if shaped:  # the public code perturbs the object's mask inside the scene crop
        y1, y2, x1, x2 = pp.square_box(pp.expand_box(target, ratios.crop, tar_mask.shape), tar_mask.shape)
        coarse = np.zeros(tar_mask.shape, bool)
        coarse[y1:y2, x1:x2] = shape_mask(tar_mask[y1:y2, x1:x2], rng)
    hint = pp.build_hint(tar_image, tar_mask, hf, box_ratio=ratios.box, crop_ratio=ratios.crop, shape_mask=coarse,
                         size=resolution, mask_padding="train")
    return ref, hint.scene, hint.hint, shaped


class AnyDoorDataset(torch.utils.data.Dataset):
    """Sample ``k`` -> ``{"reference": (3,224,224) in [0,1], "image": (3,R,R) in [-1,1], "hint": (4,R,R),
    "timestep": int64}`` (see the module docstring for the recipe and the seeding)."""

    def __init__(self, sources: list[Source], *, resolution: int = 512, seed: int = 0, shape_p: float = 0.7,
                 uniform_t_p: float = 0.3, min_area: float = 0.01, max_area: float = 0.64) -> None:
        if not sources:
            raise InputError("AnyDoor dataset: no sources")
        self.sources, self.resolution, self.seed = sources, resolution, seed
        self.shape_p, self.uniform_t_p, self.min_area, self.max_area = shape_p, uniform_t_p, min_area, max_area
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:  # one epoch: every source once (the trainer's sample ids run on past it)
        return len(self.sources)

    def _source_at(self, epoch: int, index: int) -> Source:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.sources)))
        return self.sources[int(self._order[1][index])]

    def sample(self, k: int) -> Sample:
        epoch, index = divmod(int(k), len(self.sources))
        for attempt in range(MAX_TRIES):
            rng = np.random.default_rng([self.seed, epoch, index, attempt])
            src = self._source_at(epoch, index) if attempt == 0 else self.sources[int(rng.integers(len(self.sources)))]
            try:
                return self._make(src, rng)
            except Rejected as why:
                log.debug("sample %d attempt %d: %s (%s)", k, attempt, why, src.frames[0].image)
        raise InputError(f"AnyDoor dataset: {MAX_TRIES} pairs in a row failed the filters (mask area "
                         f"{self.min_area}-{self.max_area}, one solid part, object box 1/10..8/10 of "
                         "the image); check the manifest's masks")

    def _make(self, src: Source, rng: np.random.Generator) -> Sample:
        i, j = pick_pair(len(src.frames), src.kind, rng, src.rule.gap)
        ref_image, ref_mask = self._read(src, i)
        tar_image, tar_mask = (ref_image, ref_mask) if i == j else self._read(src, j)
        ref, target, hint, shaped = process_pair(
            ref_image, ref_mask, tar_image, tar_mask, rng, kind=src.kind, resolution=self.resolution,
            shape_p=self.shape_p, min_area=self.min_area, max_area=self.max_area, rules=src.rule)
        t = sample_timestep(rng, src.rule.timesteps, self.uniform_t_p)
        return Sample(ref, target, hint, t, src.kind, (i, j), shaped)

    @staticmethod
    def _read(src: Source, i: int) -> tuple[np.ndarray, np.ndarray]:
        frame = src.frames[i]
        image = load_image(frame.image, "training image", max_pixels=None)
        mask = read_instance_mask(frame.mask, src.instance, (image.shape[1], image.shape[0]))
        if not mask.any():
            raise Rejected("empty mask")
        return image, mask

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        s = self.sample(k)
        return {"reference": torch.from_numpy(s.reference).permute(2, 0, 1).float() / 255.0,
                "image": torch.from_numpy(s.target).permute(2, 0, 1).float() / 127.5 - 1.0,
                "hint": torch.from_numpy(np.ascontiguousarray(s.hint)).permute(2, 0, 1),
                "timestep": torch.tensor(s.timestep, dtype=torch.int64)}
