"""Self-reference training data: mask shapes, seeded augmentations, batch shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import testdata_cases as cases_of  # noqa: E402
from diffcompose.errors import InputError  # noqa: E402
from diffcompose.inputs import Box  # noqa: E402
from diffcompose.training.augment import ReferenceAugment  # noqa: E402
from diffcompose.training.dataset import SelfReferenceDataset, read_records, square_crop  # noqa: E402
from diffcompose.training.masks import bezier_mask, box_mask, extend_box  # noqa: E402


@pytest.mark.parametrize("seed", range(20))
def test_masks_cover_box_and_bezier_stays_inside(seed):
    rng = np.random.default_rng(seed)
    w, h = 320, 240
    x0, y0 = int(rng.integers(0, 200)), int(rng.integers(0, 150))
    box = Box(x0, y0, x0 + int(rng.integers(10, w - x0)), y0 + int(rng.integers(10, h - y0)))
    ext = extend_box(box, (w, h), rng, 0.4)
    assert ext.x0 <= box.x0 and ext.y0 <= box.y0 and ext.x1 >= box.x1 and ext.y1 >= box.y1
    assert 0 <= ext.x0 and 0 <= ext.y0 and ext.x1 <= w and ext.y1 <= h
    assert box_mask(ext, (h, w))[box.slices].all()
    bez = bezier_mask(ext, (h, w), rng)
    assert not (bez & ~box_mask(ext, (h, w))).any()  # inside the extended box
    assert bez[box.slices].mean() > 0.8  # and covering the object's box (jitter nibbles the edge)
    crop = square_crop(ext, (w, h), rng)
    assert crop.x0 <= ext.x0 and crop.y0 <= ext.y0 and crop.x1 >= ext.x1 and crop.y1 >= ext.y1
    assert crop.x1 <= w and crop.y1 <= h


def test_bezier_is_irregular():
    rng = np.random.default_rng(0)
    ext = Box(50, 40, 250, 200)
    bez = bezier_mask(ext, (240, 320), rng)
    assert 0.6 < bez.sum() / (ext.width * ext.height) < 1.0


def test_augmentations_are_seeded(photo):
    aug = ReferenceAugment(size=64, blur_p=1.0, elastic_p=1.0)
    crop = photo[50:250, 150:330]
    a = aug(crop, np.random.default_rng(4))
    b = aug(crop, np.random.default_rng(4))
    c = aug(crop, np.random.default_rng(5))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    plain = ReferenceAugment(size=64, flip_p=0, max_rotate=0, blur_p=0, elastic_p=0)(crop, np.random.default_rng(0))
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
    assert batch["mask"].shape == (3, 1, 64, 64) and set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
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
