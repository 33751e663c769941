"""FreeCompose on large photos: the window holds the free band and its seam, and condition maps keep
their 1-px lines when shrunk to the working size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose import EngineManager  # noqa: E402
from diffcompose.inputs import dilate_mask, mask_to_box  # noqa: E402
from diffcompose.methods.freecompose import engine as fc  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402
from diffcompose.regions.crop import resize_lines  # noqa: E402


class Captured(Exception):
    pass


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    return EngineManager().get("freecompose", model="tiny", device="cpu")


def _object(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """An elliptic object mask filling ``box`` (x0, y0, x1, y1) in a ``size`` (width, height) photo."""
    w, h = size
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:h, :w]
    cx, cy, rx, ry = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def _band_and_seam(engine, task: str, options, mask: np.ndarray) -> np.ndarray:
    """The pixels the paste-back may take from the engine: the mask, its free band and the default seam."""
    band = dilate_mask(mask, engine.paste_band(task, options, mask))
    return changed_region(band, default_margin(mask.shape))


@pytest.mark.parametrize("task", ["remove", "harmonize", "compose"])
@pytest.mark.parametrize("size,box", [((1920, 1080), (800, 300, 1100, 800)),  # 300x500 object, the case
                                      ((1920, 1080), (40, 500, 400, 1000)),  # near a corner
                                      ((4000, 3000), (1800, 1200, 1900, 1500)),  # small object, big photo
                                      ((1200, 1600), (300, 200, 900, 1400))])
def test_the_window_holds_the_band_and_its_seam(engine, task, size, box) -> None:
    mask = _object(size, box)
    options = engine.options(task)
    win = engine.window_policy(task, options).plan(size, mask_to_box(mask))
    inside = np.zeros(mask.shape, bool)
    inside[win.box.slices] = True
    reach = _band_and_seam(engine, task, options, mask)
    assert not (reach & ~inside).any()


def test_removal_changes_the_whole_band_of_a_large_photo(engine) -> None:
    """End to end: in a 1920x1080 photo, every part of a 300x500 object's band takes the engine's pixels."""
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (108, 192, 3), dtype=np.uint8), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    mask = _object((1920, 1080), (800, 300, 1100, 800))
    out = np.asarray(engine.remove(img, mask, iterations=1, resolution=64, perceptual_weight=0))
    band = dilate_mask(mask, engine.paste_band("remove", engine.options("remove"), mask)) & ~mask
    changed = (out != img).any(axis=-1)
    assert changed[band].mean() > 0.9  # the tiny model's output is noise: nearly every band pixel differs
    assert not changed[~_band_and_seam(engine, "remove", engine.options("remove"), mask)].any()


# ----------------------------------------------------------------------------- condition maps

def _canny(image: np.ndarray) -> np.ndarray:
    return cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)


def test_resize_lines_is_a_max_pool() -> None:
    rng = np.random.default_rng(0)
    lines = (rng.random((120, 90)) > 0.97).astype(np.float32)
    small = resize_lines(lines, (30, 40))  # 3x3 cells
    assert np.array_equal(small, lines.reshape(40, 3, 30, 3).max(axis=(1, 3)))
    odd = resize_lines(lines, (37, 53))  # cells of 2 or 3 pixels: each source pixel in exactly one
    assert odd.shape == (53, 37) and odd.sum() >= lines.sum() / 9 and set(np.unique(odd)) <= {0.0, 1.0}
    assert np.array_equal(resize_lines(lines, (180, 240)), lines.repeat(2, 0).repeat(2, 1))  # growing: nearest
    one = np.zeros((2048, 2048), np.float32)
    one[:, 1001] = 1  # a 1-px line survives a 4x shrink whole
    assert np.array_equal(resize_lines(one, (512, 512))[:, 250], np.ones(512, np.float32))


def test_user_condition_map_keeps_its_edges_on_a_large_photo(engine, monkeypatch, photo) -> None:
    """A 2048-px photo and its own 1-px canny as the edited map: at the working size the map has about
    as many edge pixels as the engine's canny of the working image (area shrinking kept 362 of 19,931)."""
    big = cv2.resize(photo, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    user = _canny(big)
    maps = []

    def spy(self, adapter, m, scale):
        maps.extend(m)
        raise Captured

    monkeypatch.setattr(fc.FreeComposeEngine, "_adapter_features", spy)
    with pytest.raises(Captured):
        engine.compose(big, user, prompt="A toy.", resolution=512)
    own, edited = maps  # the engine's canny of the working image, the user's map as the adapter sees it
    assert own.shape == edited.shape == (512, 512)
    assert np.array_equal(edited, (user > 0).reshape(512, 4, 512, 4).max(axis=(1, 3)).astype(np.float32))
    assert 1 / 3 < edited.sum() / own.sum() < 3


# ----------------------------------------------------------------------------- aspect ratio

@pytest.mark.parametrize("size,box", [((520, 300), (200, 100, 300, 200)),  # was worked at 512x256
                                      ((300, 300), (100, 100, 150, 200)),
                                      ((300, 520), (20, 30, 120, 200)),
                                      ((1000, 800), (400, 300, 600, 500)),
                                      ((1920, 1080), (800, 300, 1100, 800)),
                                      ((3000, 700), (100, 100, 400, 600))])
@pytest.mark.parametrize("resolution", [None, 256])
def test_the_window_is_worked_at_its_own_aspect_ratio(engine, size, box, resolution) -> None:
    mask = _object(size, box)
    options = engine.options("remove", {"resolution": resolution} if resolution else {})
    win = engine.window_policy("remove", options).plan(size, mask_to_box(mask))
    (w, h), (bw, bh) = win.content, (win.box.width, win.box.height)
    assert abs((w / h) / (bw / bh) - 1) <= 0.02, win
    assert w <= bw and h <= bh  # never upsampled
    stride = fc.codec.latent_multiple(engine.sd.unet, engine.sd.vae)
    assert win.work_size[0] % stride == 0 and win.work_size[1] % stride == 0
    assert 0 <= win.work_size[0] - w < stride and 0 <= win.work_size[1] - h < stride  # padded, at most to the stride
    if size[0] * size[1] <= (resolution or engine.sd.resolution) ** 2:
        assert win.content == size  # a small photo is worked whole at its own pixels


def test_a_small_photo_is_mirrored_to_the_stride_not_stretched(engine, monkeypatch) -> None:
    """520x300 at resolution 512: worked at 520x300, mirrored to 576x320 for the UNet, cut back after."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 520, 3), dtype=np.uint8)
    mask = _object((520, 300), (200, 100, 300, 200))
    seen = {}
    real_encode, real_weight = fc.dds.encode_image, fc.FreeComposeEngine._latent_map
    monkeypatch.setattr(fc.dds, "encode_image", lambda sd, image: (seen.setdefault("image", image),
                                                                     real_encode(sd, image))[1])
    monkeypatch.setattr(fc.FreeComposeEngine, "_latent_map",
                        lambda self, m, z: (seen.setdefault("mask", m), real_weight(self, m, z))[1])
    previews = []
    out = np.asarray(engine.remove(img, mask, iterations=1, resolution=512, perceptual_weight=0, band=0,
                                   paste_back=False, on_progress=lambda e: e.step and previews.append(e.preview())))
    assert seen["image"].shape == (320, 576, 3) and seen["mask"].shape == (320, 576)
    assert np.array_equal(seen["image"][:300, :520], img) and np.array_equal(seen["mask"][:300, :520], mask)
    assert np.array_equal(seen["image"][300:320, :520], img[299:279:-1])  # mirrored past the bottom edge
    assert np.array_equal(seen["image"][:300, 520:576], img[:, 519:463:-1])  # and past the right edge
    assert np.array_equal(seen["mask"][:300, 520:], mask[:, 519:463:-1])
    assert out.shape == img.shape and previews[0].shape == (300, 520, 3)
