"""AnyDoor's pre- and post-processing, as the published model was trained and is run.

The published code (``datasets/data_utils.py``, ``datasets/base.py`` for training,
``run_gradio_demo.py`` and ``run_inference.py`` for inference) prepares three things:

* the **reference** the ID extractor (DINOv2) sees: the object on a white background,
  cropped to its mask's box, padded by a ratio, padded to a centred square, resized to 224;
* its **high-frequency map** (:func:`high_frequency_map`), the detail the ControlNet gets;
* the **hint**: a square crop of the scene around the expanded target box, with the HF map
  stretched into that box (the "collage") and a mask channel, padded to a square, at 512.

After sampling, the 512 result is resized back, unpadded and put into the crop, and only the
expanded target box goes back into the scene (:func:`paste_result`).

Conventions of the public code, kept here (so that a fixed ratio gives its output exactly):

* Images are **RGB** uint8 (it reads with ``cv2.imread`` and converts BGR to RGB at once;
  nothing downstream depends on channel order but the normalisations of the models).
  Masks are uint8 0/1 (``> 128`` of the file); the reference mask after resizing is 0..255
  with soft edges, and the HF map is given ``mask / 255`` (float64 in [0, 1]).
* Every resize is ``cv2.resize`` with its default ``INTER_LINEAR`` (bilinear), except the
  training/demo mask channel, which is ``INTER_NEAREST``. Values: reference in [0, 1]
  (``/ 255``) for DINOv2; crop and collage in [-1, 1] (``/ 127.5 - 1``).
* Boxes there are ``(y1, y2, x1, x2)``; ``get_bbox_from_mask`` returns the *last* masked row
  and column as ``y2``/``x2`` but everything slices with them as end-exclusive ends, so the
  reference crop and the target box lose one row and one column of the object (reproduced:
  :func:`mask_box`). Here boxes are returned as the project's :class:`~diffcompose.inputs.Box`
  ``(x0, y0, x1, y1)``, end-exclusive, holding the same numbers.
* Random ratios are ``np.random.randint(a, b) / 10`` (upper end excluded): the target box
  ratio ``randint(11, 12) / 10`` is therefore always 1.1. Here every ratio is an argument;
  :func:`draw_ratios` draws them the published way from a seeded ``numpy.random.Generator``.

No torch here: numpy and OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from diffcompose.errors import InputError
from diffcompose.inputs.boxes import Box

#: Side of the ID extractor's input and of the hint, as published.
REFERENCE_SIZE = 224
HINT_SIZE = 512
#: Side at which the Sobel filter runs, and the gradient threshold (8-bit), as published.
HF_SIZE = 256
HF_THRESHOLD = 50
#: Below this many pixels the public ``get_bbox_from_mask`` gives the whole image (:func:`mask_box`).
MIN_MASK_PIXELS = 10

#: Where each published script draws its ratios: ``randint(lo, hi) / 10``, ``hi`` excluded.
#: ``demo`` is also what training (``datasets/base.py``) draws.
RATIO_RANGES: dict[str, dict[str, tuple[int, int]]] = {
    "demo": {"reference": (11, 15), "box": (11, 12), "crop": (13, 30)},
    "inference": {"reference": (12, 13), "box": (11, 12), "crop": (15, 30)},
}

YYXX = tuple[int, int, int, int]


@dataclass(frozen=True)
class Ratios:
    """The three expansion ratios of one run: reference padding, target box, scene crop."""

    reference: float
    box: float
    crop: float


def draw_ratios(rng: np.random.Generator, preset: Literal["demo", "inference"] = "inference") -> Ratios:
    """The published random ratios, drawn from ``rng`` (seeded) instead of the global numpy state.

    ``inference`` (``run_inference.py``): reference 1.2, box 1.1, crop one of 1.5 ... 2.9.
    ``demo`` (``run_gradio_demo.py`` and training): reference 1.1 ... 1.4, box 1.1, crop 1.3 ... 2.9.
    Drawn in that order.
    """
    ranges = RATIO_RANGES[preset]
    draw = {k: int(rng.integers(lo, hi)) / 10 for k, (lo, hi) in ranges.items()}
    return Ratios(draw["reference"], draw["box"], draw["crop"])


# ----------------------------------------------------------------------------- boxes (public conventions)

def mask_box(mask: np.ndarray) -> YYXX:
    """The public ``get_bbox_from_mask``: ``(y1, y2, x1, x2)`` with the last masked row/column as ends.

    Used as end-exclusive (as the public code does), it is one pixel short on each axis; a
    mask of fewer than 10 pixels gives the whole image. One-pixel-thin objects (which would
    give an empty crop there) keep their one row/column.
    """
    h, w = mask.shape[:2]
    if np.count_nonzero(mask) < MIN_MASK_PIXELS:
        return 0, h, 0, w
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return y1, max(y2, y1 + 1), x1, max(x2, x1 + 1)


def expand_box(yyxx: YYXX, ratio: float, shape: tuple[int, ...]) -> YYXX:
    """The public ``expand_bbox`` with a given ratio: ``ratio * (side + 1)`` about the centre,
    ends truncated by ``int()``, clipped to an image of ``shape`` (h, w, ...)."""
    y1, y2, x1, x2 = yyxx
    big_h, big_w = shape[0], shape[1]
    xc, yc = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    h, w = ratio * (y2 - y1 + 1), ratio * (x2 - x1 + 1)
    nx1, nx2 = int(xc - w * 0.5), int(xc + w * 0.5)
    ny1, ny2 = int(yc - h * 0.5), int(yc + h * 0.5)
    return max(0, ny1), min(big_h, ny2), max(0, nx1), min(big_w, nx2)


def default_box_ratio(preset: Literal["demo", "inference"] = "inference") -> float:
    """The target box ratio :func:`draw_ratios` gives: the public range holds one value (1.1)."""
    lo, hi = RATIO_RANGES[preset]["box"]
    assert hi == lo + 1, "a box ratio range of several values has no default"
    return lo / 10


def target_box(target_mask: np.ndarray, box_ratio: float, shape: tuple[int, ...]) -> YYXX:
    """The expanded target box: the box of ``target_mask`` (:func:`mask_box`) grown by ``box_ratio``
    (:func:`expand_box`). What the model redraws, and what the demo pastes back."""
    return expand_box(mask_box(np.asarray(target_mask) > 0), box_ratio, shape)


def square_box(yyxx: YYXX, shape: tuple[int, ...]) -> YYXX:
    """The public ``box2squre``: the short side becomes ``2 * (long // 2)`` about the centre
    (one pixel short for an odd long side), then clipped to the image (so not always square)."""
    y1, y2, x1, x2 = yyxx
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    h, w = y2 - y1, x2 - x1
    if h >= w:
        x1, x2 = cx - h // 2, cx + h // 2
    else:
        y1, y2 = cy - w // 2, cy + w // 2
    return max(0, y1), min(shape[0], y2), max(0, x1), min(shape[1], x2)


def to_box(yyxx: YYXX) -> Box:
    y1, y2, x1, x2 = yyxx
    return Box(int(x1), int(y1), int(x2), int(y2))


def square_padding(h: int, w: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the public ``pad_to_square`` (centred, the odd pixel after)."""
    d = abs(h - w)
    first, second = int(d / 2), d - int(d / 2)
    return (0, 0, first, second) if h > w else (first, second, 0, 0)


def pad_square(a: np.ndarray, value: float) -> np.ndarray:
    """``a`` padded to a centred square with ``value`` (the public ``pad_to_square``, not random)."""
    top, bottom, left, right = square_padding(a.shape[0], a.shape[1])
    if top == bottom == left == right == 0:
        return a
    pad = [(top, bottom), (left, right)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, mode="constant", constant_values=value)


# ----------------------------------------------------------------------------- reference

def _check_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name} must be a uint8 (H, W, 3) RGB array, got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name} is empty")


def _check_mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(mask, np.ndarray) or mask.shape != shape[:2]:
        raise InputError(f"{name} must be an array of shape {shape[:2]}, got {getattr(mask, 'shape', type(mask))}")


def high_frequency_map(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The published high-frequency map (``sobel`` in ``datasets/data_utils.py``) of an object.

    ``image``: uint8 (H, W, 3) RGB, the 224 reference on white. ``mask``: (H, W) float in
    [0, 1] with soft edges (the public code passes its resized 0..255 mask ``/ 255``).
    Returns uint8 (H, W, 3): the image's pixels where its edges are strong, black elsewhere.

    Steps, all at 256 x 256: bilinear resize of image and mask; mask ``> 0.5`` eroded twice
    by a 5 x 5 square (so the object's outline does not count as detail); ``|Sobel x|`` and
    ``|Sobel y|`` (3 x 3, float64, then 8-bit with ``convertScaleAbs``: rounded and
    saturated) blended 0.5/0.5 (8-bit); the largest of the three channels, times the mask;
    values below 50 set to 0; then ``uint8(g / 255 * image)`` (float32, truncated); bilinear
    resize back to (H, W).
    """
    _check_image(image, "image")
    _check_mask(mask, image.shape, "mask")
    m = np.asarray(mask, dtype=np.float64)
    if not np.isfinite(m).all() or m.min() < 0.0 or m.max() > 1.0:
        raise InputError("mask must hold finite values in [0, 1]")
    h, w = image.shape[:2]
    img = cv2.resize(image, (HF_SIZE, HF_SIZE))
    keep = (cv2.resize(m, (HF_SIZE, HF_SIZE)) > 0.5).astype(np.uint8)
    keep = cv2.erode(keep, np.ones((5, 5), np.uint8), iterations=2)
    gx = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3))
    gy = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3))
    g = cv2.addWeighted(gx, 0.5, gy, 0.5, 0).max(axis=-1) * keep
    g[g < HF_THRESHOLD] = 0
    hf = (g[..., None].astype(np.float32) / 255 * img.astype(np.float32)).astype(np.uint8)
    return cv2.resize(hf, (w, h))


@dataclass(frozen=True)
class PreparedReference:
    """The reference as the ID extractor and the detail extractor get it.

    ``image``: uint8 (224, 224, 3) RGB, the object on white; DINOv2's input is ``image / 255``
    (ImageNet normalisation is the model's business). ``mask``: uint8 (224, 224), 0..255 with
    soft edges (bilinear). ``hf_map``: uint8 (224, 224, 3), :func:`high_frequency_map` of them.
    ``box``: the crop taken from the reference (public convention, see :func:`mask_box`);
    ``ratio``: the padding ratio used.
    """

    image: np.ndarray
    mask: np.ndarray
    hf_map: np.ndarray
    box: Box
    ratio: float


def prepare_reference(image: np.ndarray, mask: np.ndarray, ratio: float = 1.2,
                      size: int = REFERENCE_SIZE) -> PreparedReference:
    """The published reference preparation (``process_pairs``, "Reference").

    ``mask``: the object (bool, or anything non-zero = object) of ``image``'s size. The
    background becomes white (``image * m + 255 * (1 - m)``); crop to :func:`mask_box`;
    pad to ``int(h * ratio) x int(w * ratio)`` centred (image 255, mask 0); pad to a centred
    square (image 255, mask 0); bilinear resize to ``size``. The mask goes through the same
    steps as 0/255 and stays soft after the resize.
    """
    _check_image(image, "reference")
    _check_mask(mask, image.shape, "reference mask")
    if not np.isfinite(ratio) or ratio < 1.0:
        raise InputError(f"reference ratio must be at least 1, got {ratio!r}")
    m = (np.asarray(mask) > 0).astype(np.uint8)
    yyxx = mask_box(m)
    y1, y2, x1, x2 = yyxx
    on_white = np.where(m[..., None] > 0, image, np.uint8(255))[y1:y2, x1:x2]
    m = m[y1:y2, x1:x2]
    h, w = m.shape
    big_h, big_w = int(h * ratio), int(w * ratio)
    top, left = (big_h - h) // 2, (big_w - w) // 2
    pads = ((top, big_h - h - top), (left, big_w - w - left))
    on_white = np.pad(on_white, pads + ((0, 0),), mode="constant", constant_values=255)
    m = np.pad(m, pads, mode="constant", constant_values=0)
    ref = cv2.resize(pad_square(on_white, 255), (size, size))
    ref_mask = cv2.resize(pad_square(m * np.uint8(255), 0), (size, size))
    hf = high_frequency_map(ref, ref_mask / 255)
    return PreparedReference(ref, ref_mask, hf, to_box(yyxx), float(ratio))


# ----------------------------------------------------------------------------- target: the hint

@dataclass(frozen=True)
class Hint:
    """The detail extractor's input for one scene, and where it came from (for :func:`paste_result`).

    ``hint``: float32 (size, size, 4): ``collage / 127.5 - 1`` and the mask channel (1 in the
    target box or the shape mask, 0 elsewhere, and in the square padding -1 (``train``) or 1
    (``inference``: see :func:`build_hint`)). ``collage``, ``scene``: uint8 (size, size, 3),
    the collage and the plain scene crop (the training target) after padding and resizing.
    ``crop_box`` and ``target_box`` (the expanded target box) are in scene pixels;
    ``box_in_crop`` is the target box in crop pixels; ``crop_size`` ``(H1, W1)`` before and
    ``padded_size`` ``(H2, W2)`` after the square padding; ``padding`` ``(top, bottom, left, right)``.
    """

    hint: np.ndarray
    collage: np.ndarray
    scene: np.ndarray
    crop_box: Box
    target_box: Box
    box_in_crop: Box
    crop_size: tuple[int, int]
    padded_size: tuple[int, int]
    padding: tuple[int, int, int, int]
    ratios: tuple[float, float]  # (box, crop)


def build_hint(scene: np.ndarray, target_mask: np.ndarray, hf_map: np.ndarray, *, box_ratio: float = 1.1,
               crop_ratio: float = 2.0, shape_mask: np.ndarray | None = None, size: int = HINT_SIZE,
               mask_padding: Literal["train", "inference"] = "train") -> Hint:
    """The published target processing (``process_pairs``, "Target") around ``target_mask``.

    Box of ``target_mask`` (:func:`mask_box`) expanded by ``box_ratio`` (:func:`expand_box`);
    the scene crop around it expanded by ``crop_ratio`` (of the expanded box, with the
    public ``+1``), made square and clipped (:func:`square_box`); ``hf_map`` stretched
    (bilinear) into the box of the crop: the collage; mask channel 1 in the box, or
    ``shape_mask`` (scene-sized, bool: shape control, as the demo's ``enable_shape_control``)
    cropped. Crop and collage are padded to a square with 0 and resized (bilinear) to ``size``.

    The mask channel's square padding (the area outside the scene) differs between the
    public scripts, and ``mask_padding`` picks one:

    * ``train`` (default): what the model was trained with (``datasets/base.py``; also
      ``run_gradio_demo.py`` and ``predict.py``): padded with 2, cast to uint8, resized
      *nearest*, 2 mapped to -1. Padding reads -1.
    * ``inference``: ``run_inference.py`` pads with -1 and casts to uint8, which wraps -1 to
      255 (numpy's float-to-uint8 cast of a negative value; written out as 255 here so it does
      not depend on the platform), then resizes *bilinearly* and thresholds ``> 0.5``: the
      padding reads **1** (like the box), grown by the bilinear blur at its edge, and the
      box's own edges move by the rounding of the 0/1 bilinear resize. Reproduced for
      parity with that script; not what the model learned.
    """
    _check_image(scene, "scene")
    _check_mask(target_mask, scene.shape, "target mask")
    _check_image(hf_map, "high-frequency map")
    if shape_mask is not None:
        _check_mask(shape_mask, scene.shape, "shape mask")
    for name, r in (("box ratio", box_ratio), ("crop ratio", crop_ratio)):
        if not np.isfinite(r) or r < 1.0:
            raise InputError(f"{name} must be at least 1, got {r!r}")
    if mask_padding not in ("train", "inference"):
        raise InputError(f"mask_padding must be train or inference, got {mask_padding!r}")
    target = target_box(target_mask, box_ratio, scene.shape)
    crop = square_box(expand_box(target, crop_ratio, scene.shape), scene.shape)
    cy1, cy2, cx1, cx2 = crop
    ty1, ty2, tx1, tx2 = target
    inner = Box(tx1 - cx1, ty1 - cy1, tx2 - cx1, ty2 - cy1)
    if inner.width < 1 or inner.height < 1:
        raise InputError("the target region is empty after expansion")
    cropped = scene[cy1:cy2, cx1:cx2]
    collage = cropped.copy()
    collage[inner.slices] = cv2.resize(hf_map, (inner.width, inner.height))
    if shape_mask is not None:
        channel = (np.asarray(shape_mask)[cy1:cy2, cx1:cx2] > 0).astype(np.uint8)
    else:
        channel = np.zeros(cropped.shape[:2], np.uint8)
        channel[inner.slices] = 1
    h1, w1 = cropped.shape[:2]
    padding = square_padding(h1, w1)
    padded_crop = pad_square(cropped, 0)
    h2, w2 = padded_crop.shape[:2]
    out_size = (size, size)
    scene_out = cv2.resize(padded_crop, out_size)
    collage_out = cv2.resize(pad_square(collage, 0), out_size)
    if mask_padding == "train":
        m = cv2.resize(pad_square(channel, 2), out_size, interpolation=cv2.INTER_NEAREST).astype(np.float32)
        m[m == 2] = -1.0
    else:  # run_inference.py's quirk: -1 wrapped to 255 by the uint8 cast, bilinear, > 0.5
        m = (cv2.resize(pad_square(channel, 255), out_size) > 0.5).astype(np.float32)
    hint = np.concatenate([collage_out.astype(np.float32) / 127.5 - 1.0, m[..., None]], axis=-1)
    return Hint(hint, collage_out, scene_out, to_box(crop), to_box(target), inner, (h1, w1), (h2, w2), padding,
                (float(box_ratio), float(crop_ratio)))


# ----------------------------------------------------------------------------- post-processing

def paste_result(result: np.ndarray, scene: np.ndarray, hint: Hint, *, margin: int = 3,
                 exact_public: bool = False) -> np.ndarray:
    """The scene with the sampled ``result`` put back: only the expanded target box changes.

    ``result``: (size, size, 3) uint8, or float in 0..255, the decoded sample of ``hint``.
    Bilinear resize to the padded crop size, square padding removed, the crop less
    ``margin`` pixels on each side replaced (the public ``crop_back``: ``m`` is 3 in the demo,
    5 in ``run_inference.py``), then only the expanded target box copied into ``scene``
    (the demo's "keep background unchanged"); every other pixel is ``scene``'s, bit for bit.

    Two steps of the public code are after the model and not learned, so they are not
    reproduced unless ``exact_public``: it drops the first row of the 512 result before
    resizing (``pred[1:, :, :]``, a 1/512 vertical stretch), and stores floats into uint8
    by truncation (here: rounded).
    """
    _check_image(scene, "scene")
    if result.ndim != 3 or result.shape[2] != 3:
        raise InputError(f"result must be (H, W, 3), got {result.shape}")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise InputError(f"margin must be a whole number of pixels >= 0, got {margin!r}")
    pred = np.clip(result.astype(np.float32), 0, 255)
    if exact_public:
        pred = pred[1:]
    h1, w1 = hint.crop_size
    h2, w2 = hint.padded_size
    pred = cv2.resize(pred, (w2, h2))
    top, _, left, _ = hint.padding
    pred = pred[top:top + h1, left:left + w1]
    pred = pred.astype(np.uint8) if exact_public else np.clip(np.rint(pred), 0, 255).astype(np.uint8)
    crop = hint.crop_box
    generated = scene.copy()
    m = int(margin)
    if h1 > 2 * m and w1 > 2 * m:
        generated[crop.y0 + m:crop.y1 - m, crop.x0 + m:crop.x1 - m] = pred[m:h1 - m, m:w1 - m]
    out = scene.copy()
    out[hint.target_box.slices] = generated[hint.target_box.slices]
    return out
