"""Self-reference training data, against the original recipe: hole shapes, crops, augmentations, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import testdata_cases as cases_of  # noqa: E402
from diffcompose.errors import InputError  # noqa: E402
from diffcompose.inputs import Box  # noqa: E402
from diffcompose.methods.pbe.augment import Plan, ReferenceAugment  # noqa: E402
from diffcompose.methods.pbe.data import (  # noqa: E402
    Record, SelfReferenceDataset, hole_and_crop, pad_box, read_records, square_crop)
from diffcompose.methods.pbe.masks import bezier_mask, bezier_outline, box_mask, extend_box  # noqa: E402


def random_box(rng: np.random.Generator) -> tuple[tuple[int, int], Box]:
    """An image size and an object box covering 2-80% of it (the recipe's filter), anywhere in it."""
    w, h = int(rng.integers(300, 1025)), int(rng.integers(300, 1025))
    while True:
        bw, bh = int(rng.integers(10, w + 1)), int(rng.integers(10, h + 1))
        if 0.02 <= bw * bh / (w * h) <= 0.8:
            break
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    return (w, h), Box(x0, y0, x0 + bw, y0 + bh)


@pytest.mark.parametrize("seed", range(20))
def test_extended_box_and_crop_contain_the_object(seed):
    rng = np.random.default_rng(seed)
    (w, h), box = random_box(rng)
    ext = extend_box(box, (w, h), rng, 0.4)
    assert ext.x0 <= box.x0 and ext.y0 <= box.y0 and ext.x1 >= box.x1 and ext.y1 >= box.y1
    assert box.x0 - ext.x0 <= 0.4 * box.x0 and ext.x1 - box.x1 <= 0.4 * (w - box.x1)
    assert box.y0 - ext.y0 <= 0.4 * box.y0 and ext.y1 - box.y1 <= 0.4 * (h - box.y1)
    crop = square_crop(ext, (w, h), rng)
    assert crop.x0 <= ext.x0 and crop.y0 <= ext.y0 and crop.x1 >= ext.x1 and crop.y1 >= ext.y1
    assert 0 <= crop.x0 and 0 <= crop.y0 and crop.x1 <= w and crop.y1 <= h
    assert crop.width == crop.height or crop == Box(0, 0, w, h)  # a square, or the whole image


def bezier_cases(n: int):
    for seed in range(n):
        rng = np.random.default_rng(seed)
        (w, h), box = random_box(rng)
        ext = extend_box(box, (w, h), rng, 0.4)
        yield box, ext, bezier_mask(box, ext, (h, w), rng), box_mask(ext, (h, w))


def test_bezier_hole_is_lobed_not_a_rectangle():
    """The original's curves run between the object box's corners, bent towards the extended box's
    edges: the hole bulges where the box grew and cuts the corners (a rectangle-like hole scores ~0.98)."""
    ious = [(bez & rect).sum() / (bez | rect).sum() for _, _, bez, rect in bezier_cases(200)]
    assert np.mean(ious) < 0.8, np.mean(ious)
    assert min(ious) < 0.5


def test_bezier_hole_contains_the_object_box():
    covers = []
    for box, ext, bez, _ in bezier_cases(200):
        covers.append(bez[box.slices].mean())
        # only the corners (cut by the outline between t = 0.9 and the next curve's t = 0.05)
        # and the +-5 px jitter are left out
        mx, my = int(0.1 * box.width) + 6, int(0.1 * box.height) + 6
        assert bez[box.y0 + my: box.y1 - my, box.x0 + mx: box.x1 - mx].all()
        # and it bulges beyond the object box only towards the extended box (plus the jitter)
        grown = box_mask(Box(max(ext.x0 - 6, 0), max(ext.y0 - 6, 0), ext.x1 + 6, ext.y1 + 6), bez.shape)
        assert not (bez & ~grown).any()
    assert min(covers) > 0.85 and np.mean(covers) > 0.97, (min(covers), np.mean(covers))


def test_bezier_outline_follows_the_original_curves():
    box, ext = Box(100, 100, 200, 160), Box(60, 40, 260, 220)
    pts = bezier_outline(box, ext)
    assert pts.shape == (72, 2)
    top, right, bottom, left = pts[:18], pts[18:36], pts[36:54], pts[54:]
    np.testing.assert_allclose(top[0], [105, 100 - 2 * 0.05 * 0.95 * 60])  # t = 0.05
    np.testing.assert_allclose(top[9], [150, 100 - 0.5 * 60])  # t = 0.5: halfway to the control point
    np.testing.assert_allclose(top[-1], [190, 100 - 2 * 0.9 * 0.1 * 60])  # t = 0.9, the last sample
    np.testing.assert_allclose(right[9], [230, 130])
    np.testing.assert_allclose(bottom[9], [150, 190])
    np.testing.assert_allclose(left[9], [80, 130])


def test_square_crop_leaves_context_as_the_original():
    """The original's crop: the hole is 61% of it on average on Open Images, and rarely almost all of it."""
    shares = []
    for seed in range(400):
        rng = np.random.default_rng(seed)
        size, box = random_box(rng)
        hole, crop = hole_and_crop(box, size, rng)
        shares.append(hole[crop.slices].mean())
    shares = np.array(shares)
    assert shares.mean() < 0.47 and (shares >= 0.9).mean() < 0.02, (shares.mean(), (shares >= 0.9).mean())


def test_square_crop_cases():
    rng = np.random.default_rng(0)
    assert square_crop(Box(10, 10, 50, 50), (300, 300), rng) == Box(0, 0, 300, 300)  # square image: all of it
    assert square_crop(Box(10, 40, 290, 60), (300, 100), rng) == Box(0, 0, 300, 100)  # too wide to fit a square
    for _ in range(50):  # a landscape photo: a square of the full height, shrunk by up to 60% of the least margin
        crop = square_crop(Box(100, 20, 160, 70), (400, 100), rng)
        assert crop.width == crop.height and 100 - 2 * 12 <= crop.width <= 100
        assert crop.x0 <= 100 and crop.x1 >= 160 and crop.y0 <= 20 and crop.y1 >= 70


def test_reference_padding_is_exactly_ten_pixels(tmp_path, photo):
    from PIL import Image

    assert pad_box(Box(50, 60, 100, 120), (200, 200), 10) == Box(40, 50, 110, 130)
    assert pad_box(Box(5, 0, 195, 120), (200, 125), 10) == Box(0, 0, 200, 125)  # clamped at the border
    Image.fromarray(photo).save(tmp_path / "a.png")
    box = Box(150, 60, 330, 260)
    plain = ReferenceAugment(size=32, flip_p=0, rotate_p=0, blur_p=0, elastic_p=0)
    ds = SelfReferenceDataset([Record(tmp_path / "a.png", [box])], resolution=64, reference_size=32, augment=plain)
    expected = plain.apply(photo[50:270, 140:340], Plan(False, None, None, None, 0))
    for k in range(6):
        assert np.array_equal(ds.sample(k)[2], expected)


def test_augmentation_recipe_statistics():
    """Rotation on about half of the references (p 0.5), flip on half, blur and the affine warp on 30%."""
    aug = ReferenceAugment(size=224)
    plans = [aug.draw(np.random.default_rng(s)) for s in range(2000)]
    share = lambda f: np.mean([f(p) for p in plans])  # noqa: E731
    assert 0.45 < share(lambda p: p.angle is not None) < 0.55
    assert all(abs(p.angle) <= 20 for p in plans if p.angle is not None)
    assert 0.45 < share(lambda p: p.flip) < 0.55
    assert 0.26 < share(lambda p: p.blur is not None) < 0.34
    assert 0.26 < share(lambda p: p.anchors is not None) < 0.34
    moves = np.array([np.abs(p.anchors[1] - p.anchors[0]).max() for p in plans if p.anchors is not None])
    assert moves.max() <= 50 and moves.max() > 45  # anchors move by up to +-50 px on 224 px
    assert (moves > 25).mean() > 0.5  # tens of pixels, typically: a strong affine warp


def test_affine_warp_moves_the_anchors(photo):
    """The warp takes each anchor point to its moved position (tens of pixels), i.e. it is the affine part."""
    aug = ReferenceAugment(size=224)
    rng = np.random.default_rng(3)
    plan = next(p for p in (aug.draw(rng) for _ in range(100)) if p.anchors is not None)
    src, dst = plan.anchors
    assert np.abs(dst - src).max() > 20
    plan = Plan(False, None, None, plan.anchors, plan.field_seed)
    ramp = np.zeros((224, 224, 3), np.uint8)  # each pixel holds its own coordinates: (x, y, 0)
    ramp[..., 0], ramp[..., 1] = np.arange(224)[None, :], np.arange(224)[:, None]
    out = aug.apply(ramp, plan).astype(float)
    checked = 0
    for i in range(3):
        x, y = np.round(dst[i]).astype(int)
        if 0 <= x < 224 and 0 <= y < 224:  # the moved anchor shows what was at the anchor
            np.testing.assert_allclose(out[y, x, :2], src[i], atol=2.5)
            checked += 1
    assert checked >= 2
    warped = aug.apply(photo[50:250, 150:330], plan)
    plain = aug.apply(photo[50:250, 150:330], Plan(False, None, None, None, 0))
    assert np.abs(warped.astype(int) - plain.astype(int)).mean() > 10


def test_augmentations_are_seeded(photo):
    aug = ReferenceAugment(size=64, blur_p=1.0, elastic_p=1.0)
    crop = photo[50:250, 150:330]
    a = aug(crop, np.random.default_rng(4))
    b = aug(crop, np.random.default_rng(4))
    c = aug(crop, np.random.default_rng(5))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    plain = ReferenceAugment(size=64, flip_p=0, rotate_p=0, blur_p=0, elastic_p=0)(crop, np.random.default_rng(0))
    assert np.abs(a.astype(int) - plain.astype(int)).mean() > 5  # they do change the crop


@pytest.fixture
def manifest(tmp_path, testdata):
    cases = [c for c in cases_of("subjects") if "mask_u2net" in c["files"]][:3]
    lines = [json.dumps({"image": str(c["files"]["image"]), "mask": str(c["files"]["mask_u2net"])}) for c in cases]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_batch_shapes_and_determinism(manifest):
    records = read_records(manifest)
    assert len(records) >= 2
    ds = SelfReferenceDataset(records, resolution=64, reference_size=32, seed=1)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["mask"].shape == (3, 1, 64, 64) and batch["mask"].min() >= 0 and batch["mask"].max() <= 1
    soft = ((batch["mask"] > 0) & (batch["mask"] < 1)).float().mean()
    assert 0 < soft < 0.2  # resized as the image: soft at the hole's edge only
    assert batch["reference"].shape == (3, 3, 32, 32)
    assert 0 < batch["mask"].mean() < 1
    again = ds[1]
    assert all(torch.equal(again[k], batch[k][1]) for k in again)
    assert not torch.equal(ds[1]["image"], ds[2]["image"]) or not torch.equal(ds[1]["mask"], ds[2]["mask"])


def test_coco_boxes_filtered_by_area(tmp_path, photo):
    from PIL import Image

    Image.fromarray(photo).save(tmp_path / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 512, "height": 512}],
            "annotations": [{"image_id": 1, "bbox": [100, 50, 200, 250]},  # 19% of the image: kept
                            {"image_id": 1, "bbox": [0, 0, 20, 20]},  # 0.15%: too small
                            {"image_id": 1, "bbox": [0, 0, 512, 512]}]}  # 100%: too large
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    records = read_records(tmp_path / "instances.json")
    assert [r.boxes for r in records] == [[Box(100, 50, 300, 300)]]
    ds = SelfReferenceDataset(records, resolution=64, reference_size=32)
    image, hole, ref = ds.sample(0)
    assert image.shape == (64, 64, 3) and hole.shape == (64, 64) and ref.shape == (32, 32, 3)
    coco["annotations"] = coco["annotations"][1:]
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    with pytest.raises(InputError, match="no image has a box"):
        read_records(tmp_path / "instances.json")
