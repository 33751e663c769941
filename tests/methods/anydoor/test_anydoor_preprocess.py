"""AnyDoor's pre- and post-processing equal the published formulas, step by step.

The ``public_*`` functions below are the published computation written out in the public
code's own terms ((y1, y2, x1, x2) boxes, 3-channel masks, float masks cast to uint8, the
literal ``-1`` cast), with cv2/numpy only and nothing from the module under test. They run
on real photos from ``../shared/testdata`` (skipped when absent: subjects with saliency
masks, AnyDoor's RGBA objects, AnyDoor and Paint-by-Example scenes with masks), cut to odd
sizes and with non-square target boxes, and on synthetic cases that always run. If the
module drifts from the published recipe (a resize mode, a threshold, an off-by-one, the
padding of the mask channel), an equality below fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from diffcompose.methods import anydoor
from diffcompose.methods.anydoor.preprocess import (
    RATIO_RANGES, build_hint, draw_ratios, expand_box, high_frequency_map, mask_box, paste_result, prepare_reference,
)
from conftest import TESTDATA

# --------------------------------------------------------------------------- the published formulas


def public_bbox(mask):
    h, w = mask.shape[0], mask.shape[1]
    if mask.sum() < 10:
        return 0, h, 0, w
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    y1, y2 = np.where(rows)[0][[0, -1]]
    x1, x2 = np.where(cols)[0][[0, -1]]
    return y1, y2, x1, x2


def public_expand_bbox(shape, yyxx, ratio):
    y1, y2, x1, x2 = yyxx
    H, W = shape[0], shape[1]
    xc, yc = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    h, w = ratio * (y2 - y1 + 1), ratio * (x2 - x1 + 1)
    x1, x2, y1, y2 = int(xc - w * 0.5), int(xc + w * 0.5), int(yc - h * 0.5), int(yc + h * 0.5)
    return max(0, y1), min(H, y2), max(0, x1), min(W, x2)


def public_box2square(shape, yyxx):
    y1, y2, x1, x2 = yyxx
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    h, w = y2 - y1, x2 - x1
    if h >= w:
        x1, x2 = cx - h // 2, cx + h // 2
    else:
        y1, y2 = cy - w // 2, cy + w // 2
    return max(0, y1), min(shape[0], y2), max(0, x1), min(shape[1], x2)


def public_pad_to_square(image, pad_value):
    H, W = image.shape[0], image.shape[1]
    if H == W:
        return image
    padd = abs(H - W)
    padd_1 = int(padd / 2)
    padd_2 = padd - padd_1
    pad_param = ((0, 0), (padd_1, padd_2), (0, 0)) if H > W else ((padd_1, padd_2), (0, 0), (0, 0))
    return np.pad(image, pad_param, "constant", constant_values=pad_value)


def public_sobel(img, mask, thresh=50):
    H, W = img.shape[0], img.shape[1]
    img = cv2.resize(img, (256, 256))
    mask = (cv2.resize(mask, (256, 256)) > 0.5).astype(np.uint8)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8), iterations=2)
    sobel_x = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3))
    sobel_y = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3))
    scharr = cv2.addWeighted(sobel_x, 0.5, sobel_y, 0.5, 0)
    scharr = np.max(scharr, -1) * mask
    scharr[scharr < thresh] = 0.0
    scharr = np.stack([scharr, scharr, scharr], -1)
    scharr = (scharr.astype(np.float32) / 255 * img.astype(np.float32)).astype(np.uint8)
    return cv2.resize(scharr, (W, H))


def public_reference(ref_image, ref_mask, ratio):
    """(224 reference, 224 mask, HF map) as ``process_pairs`` makes them (ref_mask: uint8 0/1)."""
    y1, y2, x1, x2 = public_bbox(ref_mask)
    ref_mask_3 = np.stack([ref_mask, ref_mask, ref_mask], -1)
    masked = ref_image * ref_mask_3 + np.ones_like(ref_image) * 255 * (1 - ref_mask_3)
    masked, ref_mask = masked[y1:y2, x1:x2, :], ref_mask[y1:y2, x1:x2]
    h, w = masked.shape[0], masked.shape[1]
    H, W = int(h * ratio), int(w * ratio)
    h1, w1 = int((H - h) // 2), int((W - w) // 2)
    h2, w2 = H - h - h1, W - w - w1
    masked = np.pad(masked, ((h1, h2), (w1, w2), (0, 0)), "constant", constant_values=255)
    ref_mask = np.pad(ref_mask, ((h1, h2), (w1, w2)), "constant", constant_values=0)
    ref_mask_3 = np.stack([ref_mask, ref_mask, ref_mask], -1)
    masked = cv2.resize(public_pad_to_square(masked, 255).astype(np.uint8), (224, 224)).astype(np.uint8)
    ref_mask_3 = cv2.resize(public_pad_to_square(ref_mask_3 * 255, 0).astype(np.uint8), (224, 224)).astype(np.uint8)
    ref_mask = ref_mask_3[:, :, 0]
    return masked, ref_mask, public_sobel(masked, ref_mask / 255)


def public_target(tar_image, tar_mask, hf, box_ratio, crop_ratio, padding, shape_control=False):
    """``process_pairs``' target half: ``padding`` 'train' (base.py / demo) or 'inference' (run_inference.py)."""
    tar_box = public_expand_bbox(tar_mask.shape, public_bbox(tar_mask), box_ratio)
    crop_box = public_box2square(tar_image.shape, public_expand_bbox(tar_image.shape, tar_box, crop_ratio))
    y1, y2, x1, x2 = crop_box
    cropped = tar_image[y1:y2, x1:x2, :]
    cropped_mask = tar_mask[y1:y2, x1:x2]
    y1, y2 = tar_box[0] - crop_box[0], tar_box[1] - crop_box[0]  # the public box_in_box
    x1, x2 = tar_box[2] - crop_box[2], tar_box[3] - crop_box[2]
    collage = cropped.copy()
    collage[y1:y2, x1:x2, :] = cv2.resize(hf.astype(np.uint8), (x2 - x1, y2 - y1))
    collage_mask = cropped.copy() * 0.0
    collage_mask[y1:y2, x1:x2, :] = 1.0
    if shape_control:
        collage_mask = np.stack([cropped_mask, cropped_mask, cropped_mask], -1)
    H1, W1 = collage.shape[0], collage.shape[1]
    cropped = public_pad_to_square(cropped, 0).astype(np.uint8)
    collage = public_pad_to_square(collage, 0).astype(np.uint8)
    if padding == "train":
        collage_mask = public_pad_to_square(collage_mask, 2).astype(np.uint8)
    else:
        collage_mask = public_pad_to_square(collage_mask, -1).astype(np.uint8)
    H2, W2 = collage.shape[0], collage.shape[1]
    cropped = cv2.resize(cropped, (512, 512)).astype(np.float32)
    collage = cv2.resize(collage, (512, 512)).astype(np.float32)
    if padding == "train":
        collage_mask = cv2.resize(collage_mask, (512, 512), interpolation=cv2.INTER_NEAREST).astype(np.float32)
        collage_mask[collage_mask == 2] = -1
    else:
        collage_mask = (cv2.resize(collage_mask, (512, 512)).astype(np.float32) > 0.5).astype(np.float32)
    hint = np.concatenate([collage / 127.5 - 1.0, collage_mask[:, :, :1]], -1)
    return dict(hint=hint, jpg=cropped, sizes=(H1, W1, H2, W2), crop=crop_box, box=tar_box)


def public_crop_back(pred, tar_image, sizes, crop_box, m):
    """The demo's ``crop_back`` (with its first-row drop) and its 'keep background unchanged'."""
    H1, W1, H2, W2 = sizes
    y1, y2, x1, x2 = crop_box
    pred = np.clip(pred, 0, 255)[1:, :, :]
    pred = cv2.resize(pred, (W2, H2))
    if W1 != H1:
        if W1 < W2:
            pad1 = int((W2 - W1) / 2)
            pred = pred[:, pad1:-(W2 - W1 - pad1), :]
        else:
            pad1 = int((H2 - H1) / 2)
            pred = pred[pad1:-(H2 - H1 - pad1), :, :]
    gen = tar_image.copy()
    gen[y1 + m:y2 - m, x1 + m:x2 - m, :] = pred[m:-m, m:-m]
    return gen


def _yyxx(box):
    return (box.y0, box.y1, box.x0, box.x1)


# --------------------------------------------------------------------------- cases

def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _synthetic_subjects():
    from skimage import data

    astro = data.astronaut()  # a real photo that always ships with scikit-image
    coffee = data.coffee()
    return [("astronaut-face", astro[30:251, 150:333], _ellipse(221, 183, 110, 90, 95, 70)),
            ("coffee-cup", coffee[:397, 1:], _ellipse(397, 599, 200, 300, 150, 230))]


def _read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _real_subjects():
    """(name, image, mask 0/1) of real objects; odd sizes by cutting a few rows/columns."""
    out = []
    folder = TESTDATA / "subjects" / "U-2-Net" / "test_data"
    for name in ("horse", "im_01", "whisk", "0003"):
        img, sal = folder / "test_images", folder / "u2net_results"
        paths = [p for p in img.glob(name + ".*")]
        if not paths:
            continue
        image = _read_rgb(paths[0])
        mask = (_read_rgb(sal / f"{name}.png")[:, :, 0] > 128)
        out.append((name, image[1:-2, 3:], mask[1:-2, 3:]))
    fg = TESTDATA / "composition" / "AnyDoor" / "examples" / "TestDreamBooth" / "FG"
    for p in sorted(fg.glob("0[0-2].png")):
        rgba = np.asarray(Image.open(p).convert("RGBA"))
        out.append((f"anydoor-{p.stem}", np.ascontiguousarray(rgba[:, :, :3]), rgba[:, :, 3] > 128))
    return out


def _real_scenes():
    """(name, scene, target mask 0/1) from AnyDoor's and Paint-by-Example's examples."""
    out = []
    bg = TESTDATA / "composition" / "AnyDoor" / "examples" / "TestDreamBooth" / "BG"
    for p in sorted(bg.glob("*_GT.png")):
        mask = _read_rgb(p.with_name(p.name.replace("_GT", "_mask")))[:, :, 0] > 128
        out.append((f"anydoor-{p.stem}", _read_rgb(p)[:-1, 2:], mask[:-1, 2:]))  # odd, non-square
    pbe = TESTDATA / "composition" / "Paint-by-Example" / "examples"
    for i in (1, 2):
        if (pbe / "image" / f"example_{i}.png").exists():
            mask = np.asarray(Image.open(pbe / "mask" / f"example_{i}.png").convert("L")) > 128
            out.append((f"pbe-{i}", _read_rgb(pbe / "image" / f"example_{i}.png")[3:, :-4], mask[3:, :-4]))
    return out


def _boxes_on(name, scene):
    """Non-square rectangular targets on a scene: wide, tall, and touching the border (non-square crop)."""
    h, w = scene.shape[:2]
    out = []
    for tag, (y0, y1, x0, x1) in {"wide": (h // 3, h // 3 + 37, w // 5, w // 5 + 161),
                                 "tall": (h // 4, h // 4 + 175, w // 2, w // 2 + 29),
                                 "corner": (0, 61, w - 90, w)}.items():
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        out.append((f"{name}-{tag}", scene, m))
    return out


def _real_or_skip(cases):
    if not cases:
        pytest.skip("../shared/testdata is not present")
    return cases


# --------------------------------------------------------------------------- HF map and reference

@pytest.mark.parametrize("ratio", [1.1, 1.2, 1.4])
def test_reference_and_hf_map_equal_the_published_steps_synthetic(ratio) -> None:
    for name, image, mask in _synthetic_subjects():
        _check_reference(name, image, mask, ratio)


def test_reference_and_hf_map_equal_the_published_steps_on_real_photos() -> None:
    for i, (name, image, mask) in enumerate(_real_or_skip(_real_subjects())):
        _check_reference(name, image, mask, (1.1, 1.2, 1.3, 1.4)[i % 4])


def _check_reference(name, image, mask, ratio) -> None:
    want_ref, want_mask, want_hf = public_reference(image, mask.astype(np.uint8), ratio)
    got = prepare_reference(image, mask, ratio=ratio)
    assert np.array_equal(got.image, want_ref), name
    assert np.array_equal(got.mask, want_mask), name
    assert np.array_equal(got.hf_map, want_hf), name
    assert got.hf_map.any() and not np.array_equal(got.hf_map, got.image), name  # real detail, not a copy
    # The HF map alone, on what the public code passes to ``sobel`` (soft-edged mask / 255).
    assert np.array_equal(high_frequency_map(want_ref, want_mask / 255), public_sobel(want_ref, want_mask / 255))
    # And at a size that is not the reference's 224 (the map resizes to 256 and back).
    odd = cv2.resize(want_ref, (199, 143))
    soft = cv2.resize(want_mask, (199, 143)) / 255
    assert np.array_equal(high_frequency_map(odd, soft), public_sobel(odd, soft)), name


def test_reference_box_keeps_the_public_off_by_one() -> None:
    """The published crop ends at the last masked row/column, exclusive: one short (the model saw that)."""
    mask = np.zeros((40, 50), bool)
    mask[5:20, 7:31] = True
    assert mask_box(mask) == (5, 19, 7, 30)
    assert prepare_reference(np.zeros((40, 50, 3), np.uint8), mask).box == (7, 5, 30, 19)
    tiny = np.zeros((40, 50), bool)
    tiny[3, 4:9] = True  # fewer than 10 pixels: the whole image, as published
    assert mask_box(tiny) == (0, 40, 0, 50)


def test_hf_map_keeps_edges_inside_the_eroded_mask_only() -> None:
    """A checkerboard object: detail comes back with the image's own colours, nothing outside the
    mask eroded twice by 5x5 (at 256 px), nothing flat."""
    yy, xx = np.mgrid[:256, :256]
    board = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 1, np.uint8(200), np.uint8(20)).repeat(3, -1)
    board[..., 1] //= 2
    mask = np.zeros((256, 256))
    mask[64:192, 64:192] = 1.0
    hf = high_frequency_map(board, mask)
    inner = np.zeros((256, 256), bool)
    inner[68:188, 68:188] = True  # 2 x 2 px eroded away per side
    assert not hf[~inner].any()
    edges = hf.max(-1) > 0
    assert edges.any() and not edges[inner].all()
    # A hard step saturates |Sobel| at 255: g = 0.5*255 (rounded 128) on a straight edge, 255 where
    # both directions fire; the map is then the pixel times g / 255, truncated.
    assert set(np.unique(hf[..., 0][edges])) == {20 * 128 // 255, 200 * 128 // 255, 20, 200}
    assert (hf <= board).all()
    flat = np.full((256, 256, 3), 90, np.uint8)
    assert not high_frequency_map(flat, mask).any()


def test_bad_inputs_are_one_line_input_errors() -> None:
    from diffcompose.errors import InputError

    img = np.zeros((20, 30, 3), np.uint8)
    for call in (lambda: high_frequency_map(img.astype(np.float32), np.ones((20, 30))),
                 lambda: high_frequency_map(img, np.ones((20, 31))),
                 lambda: high_frequency_map(img, np.full((20, 30), np.nan)),
                 lambda: prepare_reference(img, np.ones((20, 30), bool), ratio=0.5),
                 lambda: build_hint(img, np.ones((20, 30), bool), img, crop_ratio=float("inf"))):
        with pytest.raises(InputError) as exc:
            call()
        assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- hint

def _hf_for_tests() -> np.ndarray:
    name, image, mask = _synthetic_subjects()[0]
    return prepare_reference(image, mask).hf_map


def _check_hint(name, scene, mask, hf, box_ratio, crop_ratio, padding, shape_control=False) -> None:
    want = public_target(scene, mask.astype(np.uint8), hf, box_ratio, crop_ratio, padding, shape_control)
    got = build_hint(scene, mask, hf, box_ratio=box_ratio, crop_ratio=crop_ratio, mask_padding=padding,
                     shape_mask=mask if shape_control else None)
    assert got.hint.dtype == np.float32 and got.hint.shape == (512, 512, 4)
    assert np.array_equal(got.hint, want["hint"]), f"{name} {padding} {crop_ratio}"
    assert np.array_equal(got.scene.astype(np.float32), want["jpg"]), name
    assert _yyxx(got.crop_box) == tuple(int(v) for v in want["crop"]), name
    assert _yyxx(got.target_box) == tuple(int(v) for v in want["box"]), name
    assert (*got.crop_size, *got.padded_size) == want["sizes"], name


def test_hint_equals_the_published_steps_synthetic() -> None:
    from skimage import data

    hf = _hf_for_tests()
    scene = data.chelsea()[:, 3:]  # 300 x 448: odd-free but not square
    odd = data.astronaut()[:381, :277]  # odd size
    cases = [("chelsea-ellipse", scene, _ellipse(300, 448, 150, 200, 60, 120))]
    cases += _boxes_on("astronaut", odd)
    for i, (name, s, m) in enumerate(cases):
        for padding in ("train", "inference"):
            _check_hint(name, s, m, hf, 1.1, (1.3, 2.0, 2.9)[i % 3], padding)
    _check_hint("chelsea-shape", scene, cases[0][2], hf, 1.2, 1.5, "train", shape_control=True)


def test_hint_equals_the_published_steps_on_real_scenes() -> None:
    scenes = _real_or_skip(_real_scenes())
    subjects = _real_subjects()
    hfs = [prepare_reference(img, m, ratio=1.2).hf_map for _, img, m in subjects] or [_hf_for_tests()]
    cases = list(scenes) + _boxes_on(scenes[0][0], scenes[0][1])
    for i, (name, scene, mask) in enumerate(cases):
        hf = hfs[i % len(hfs)]
        crop_ratio = (1.5, 2.2, 2.9, 1.3)[i % 4]
        for padding in ("train", "inference"):
            _check_hint(name, scene, mask, hf, 1.1, crop_ratio, padding)
        _check_hint(name, scene, mask, hf, 1.1, crop_ratio, "train", shape_control=True)


def test_mask_channel_padding_per_script() -> None:
    """Training (and the demo) read the square padding as -1; run_inference.py's uint8 cast of -1
    (255) then a bilinear resize makes it read 1. Without padding (a square crop) both agree."""
    if np.array([-1.0]).astype(np.uint8)[0] != 255:  # the public code's cast on this platform
        pytest.skip("this platform casts -1.0 to uint8 differently from the public code's")
    scene = np.full((120, 400, 3), 128, np.uint8)  # wide: the crop is clipped top and bottom, padded there
    mask = np.zeros((120, 400), bool)
    mask[40:80, 150:250] = True
    hf = np.full((224, 224, 3), 7, np.uint8)
    train = build_hint(scene, mask, hf, crop_ratio=2.5, mask_padding="train")
    infer = build_hint(scene, mask, hf, crop_ratio=2.5, mask_padding="inference")
    top = train.padding[0] * 512 // train.padded_size[0]
    assert top > 2
    assert set(np.unique(train.hint[..., 3])) == {-1.0, 0.0, 1.0}
    assert (train.hint[:top - 1, :, 3] == -1).all() and (infer.hint[:top - 1, :, 3] == 1).all()
    assert set(np.unique(infer.hint[..., 3])) == {0.0, 1.0}
    assert np.array_equal(train.hint[..., :3], infer.hint[..., :3])
    square = np.full((400, 400, 3), 128, np.uint8)
    sq_mask = np.zeros((400, 400), bool)
    sq_mask[150:250, 150:250] = True
    a = build_hint(square, sq_mask, hf, crop_ratio=2.0, mask_padding="train")
    b = build_hint(square, sq_mask, hf, crop_ratio=2.0, mask_padding="inference")
    assert a.padding == b.padding == (0, 0, 0, 0) and not (a.hint[..., 3] < 0).any()
    assert np.array_equal(a.hint[..., :3], b.hint[..., :3]) and not (b.hint[..., 3] < 0).any()


# --------------------------------------------------------------------------- paste-back

def _pasted(scene, mask, hf, crop_ratio, seed):
    hint = build_hint(scene, mask, hf, box_ratio=1.1, crop_ratio=crop_ratio)
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 255, (512, 512, 3)).astype(np.float32)  # stands in for the decoded sample
    return hint, pred


def _check_paste(name, scene, mask, hf, crop_ratio) -> None:
    hint, pred = _pasted(scene, mask, hf, crop_ratio, 0)
    want = public_crop_back(pred, scene.copy(), (*hint.crop_size, *hint.padded_size), _yyxx(hint.crop_box), 3)
    keep = scene.copy()
    keep[hint.target_box.slices] = want[hint.target_box.slices]  # the demo keeps the background
    got = paste_result(pred, scene, hint, margin=3, exact_public=True)
    assert np.array_equal(got, keep), name
    for exact in (False, True):
        out = paste_result(pred, scene, hint, exact_public=exact)
        outside = np.ones(scene.shape[:2], bool)
        outside[hint.target_box.slices] = False
        assert np.array_equal(out[outside], scene[outside]), name  # bit-identical outside the expanded box
        assert not np.array_equal(out[~outside], scene[~outside]), name
    # Our rounding (no first-row drop): the result resized back, to within rounding of the public one.
    ours = paste_result(pred, scene, hint).astype(int)
    assert np.abs(ours - keep.astype(int)).mean() < 40  # random "samples": a 1/512 shift moves pixels


def test_paste_back_is_the_published_crop_back_and_keeps_everything_else_synthetic() -> None:
    from skimage import data

    hf = _hf_for_tests()
    for i, (name, scene, mask) in enumerate(_boxes_on("astronaut", data.astronaut()[:381, :277])):
        _check_paste(name, scene, mask, hf, (1.3, 2.0, 2.9)[i])


def test_paste_back_on_real_scenes() -> None:
    hf = _hf_for_tests()
    for i, (name, scene, mask) in enumerate(_real_or_skip(_real_scenes())):
        _check_paste(name, scene, mask, hf, (1.5, 2.9, 2.2)[i % 3])


def test_paste_back_round_trip_restores_the_scene() -> None:
    """Sampling that returned the scene crop itself puts the scene back (up to resize rounding)."""
    from skimage import data

    scene = data.astronaut()[:301, :455]
    mask = np.zeros(scene.shape[:2], bool)
    mask[100:160, 200:330] = True
    hint = build_hint(scene, mask, _hf_for_tests(), crop_ratio=1.8)
    out = paste_result(hint.scene, scene, hint)
    err = np.abs(out.astype(int) - scene.astype(int))
    assert err[hint.target_box.slices].mean() < 6  # 512 up-/down-sampling of a real photo
    assert not err[:, :hint.target_box.x0].any()


# --------------------------------------------------------------------------- ratios and the package

def test_draw_ratios_follow_the_published_sets_and_the_seed() -> None:
    """``randint(lo, hi) / 10``: the box ratio is always 1.1; every crop ratio of the set occurs."""
    for preset, ranges in RATIO_RANGES.items():
        rng = np.random.default_rng(3)
        draws = [draw_ratios(rng, preset) for _ in range(400)]
        for key, (lo, hi) in ranges.items():
            seen = {round(getattr(d, key) * 10) for d in draws}
            assert seen == set(range(lo, hi)), (preset, key, seen)
        again = [draw_ratios(np.random.default_rng(3), preset) for _ in range(1)]
        assert again[0] == draws[0]
    assert {draw_ratios(np.random.default_rng(s)).box for s in range(20)} == {1.1}
    assert len({draw_ratios(np.random.default_rng(s)).crop for s in range(20)}) > 3


def test_expand_box_counts_the_public_plus_one() -> None:
    # x: 20..29 counts as 10 px (29 - 20 + 1): 1.1 * 10 = 11 about 24.5 -> 19..30 (without the +1: 19..29);
    # y: 0..9 -> -1..10, clipped to 0.
    assert expand_box((0, 9, 20, 29), 1.1, (100, 100)) == (0, 10, 19, 30)


def test_package_exports_are_lazy_and_torch_free() -> None:
    assert anydoor.high_frequency_map is high_frequency_map and anydoor.build_hint is build_hint
    code = ("import sys, diffcompose.methods.anydoor as a; a.prepare_reference; "
            "sys.stdout.write(str('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False"
