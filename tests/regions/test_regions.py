"""Windows around regions and exact paste-back, at odd sizes and extreme aspect ratios."""

from __future__ import annotations

import numpy as np
import pytest

from diffcompose.inputs import Box, dilate_mask
from diffcompose.regions import changed_region, default_margin, paste_back, plan_window

SIZES = [(97, 1031), (1031, 97), (3000, 7), (7, 3000), (1, 1), (33, 33)]  # (height, width)


def _mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), bool)
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    m[y0: y0 + max(1, h // 5), x0: x0 + max(1, w // 5)] = True
    return m


@pytest.mark.parametrize("h, w", SIZES)
def test_paste_back_is_bit_exact_outside_the_dilated_mask(h: int, w: int) -> None:
    rng = np.random.default_rng(h * 7 + w)
    original = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = _mask(h, w, rng)
    margin = default_margin(original.shape)
    out = paste_back(original, edited, mask, margin)
    outside = ~changed_region(mask, margin)
    np.testing.assert_array_equal(out[outside], original[outside])
    np.testing.assert_array_equal(out[mask], edited[mask])  # weight 1 on the mask itself
    assert out.dtype == np.uint8 and out.shape == original.shape


def test_paste_back_margin_zero_changes_only_the_mask() -> None:
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    mask = _mask(50, 60, rng)
    out = paste_back(original, 255 - original, mask, 0)
    np.testing.assert_array_equal(out[~mask], original[~mask])
    np.testing.assert_array_equal(changed_region(mask, 0), mask)


def test_seam_ramps_down_with_distance() -> None:
    original = np.zeros((1, 40, 3), np.uint8)
    edited = np.full((1, 40, 3), 200, np.uint8)
    mask = np.zeros((1, 40), bool)
    mask[0, :10] = True
    out = paste_back(original, edited, mask, 8)[0, :, 0].astype(int)
    assert (out[:10] == 200).all() and (np.diff(out[9:18]) < 0).all() and (out[18:] == 0).all()
    assert dilate_mask(mask, 8)[0, 17] and not dilate_mask(mask, 8)[0, 18]


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("resolution", [None, 512])
def test_plan_window_stays_inside_and_contains_the_region(h: int, w: int, resolution: int | None) -> None:
    rng = np.random.default_rng(h + w)
    region = Box(*[int(v) for v in (0, 0, 1, 1)]) if (h, w) == (1, 1) else None
    if region is None:
        m = _mask(h, w, rng)
        ys, xs = np.nonzero(m)
        region = Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    win = plan_window((w, h), region, resolution=resolution, multiple=8)
    b = win.box
    assert 0 <= b.x0 <= region.x0 and region.x1 <= b.x1 <= w
    assert 0 <= b.y0 <= region.y0 and region.y1 <= b.y1 <= h
    assert win.work_size[0] % 8 == 0 and win.work_size[1] % 8 == 0
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    crop = win.crop(img)
    assert crop.shape == (win.work_size[1], win.work_size[0], 3)
    back = win.uncrop(crop, img)
    outside = np.ones((h, w), bool)
    outside[b.slices] = False
    np.testing.assert_array_equal(back[outside], img[outside])  # only the window can change


def test_native_window_roundtrip_is_lossless() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    win = plan_window((300, 200), Box(100, 50, 164, 114), resolution=None, multiple=8)
    assert win.work_size == (win.box.width, win.box.height)
    np.testing.assert_array_equal(win.uncrop(win.crop(img), img), img)


def test_square_window_for_square_models() -> None:
    win = plan_window((1000, 400), Box(450, 150, 550, 200), square=True, resolution=None, multiple=1)
    assert win.box.width == win.box.height
