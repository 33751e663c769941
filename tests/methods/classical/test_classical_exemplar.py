"""Exemplar-based removal (PatchMatch, frequency-selective reconstruction) and the texture metric.

Each test pins one piece: the metric's definition (zero when identical, blur ranked worse
than a texture copy where PSNR/SSIM rank it better), the methods' exactness outside the hole,
seeding, odd sizes and multi-part masks, windows and caps, cancellation between parts, the
seam correction, the texture reconstruction itself, the default, and the benchmark's column.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import typing
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

import diffcompose as dc
from diffcompose.errors import Cancelled, InputError
from diffcompose.evaluation import psnr, ssim, texture_distance
from diffcompose.inputs import dilate_mask
from diffcompose.methods.classical import exemplar
from diffcompose.methods.classical import remove as remove_mod
from diffcompose.methods.classical.options import RemoveOptions
from diffcompose.progress import CancelToken
from diffcompose.regions import changed_region, default_margin

REPO = Path(__file__).resolve().parents[3]
EXEMPLAR = ["patchmatch", "fsr-fast"]


def _arr(img) -> np.ndarray:
    return np.asarray(img)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _texture(name: str) -> np.ndarray:
    """A real texture photo bundled with scikit-image, as RGB."""
    g = getattr(data, name)()
    return np.stack([g] * 3, axis=-1)


def _periodic(h: int = 181, w: int = 203) -> np.ndarray:
    """A synthetic periodic pattern: a checkerboard, diagonal waves and a plaid, one per channel."""
    yy, xx = np.mgrid[:h, :w]
    r = ((xx // 8 + yy // 8) % 2) * 150 + 50
    g = (np.sin(2 * np.pi * (xx + yy) / 13) * 0.5 + 0.5) * 200 + 20
    b = (np.sin(2 * np.pi * xx / 9) * np.cos(2 * np.pi * yy / 11) * 0.5 + 0.5) * 220
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


# ----------------------------------------------------------------------------- the metric

def test_texture_distance_is_zero_for_identical_images() -> None:
    photo = data.astronaut()
    mask = _ellipse(*photo.shape[:2], 250, 260, 60, 40)
    assert texture_distance(photo, photo) == 0.0
    assert texture_distance(photo, photo, mask) == 0.0
    assert texture_distance(photo[..., 0], photo[..., 0], mask) == 0.0  # one channel too
    other = photo.copy()
    other[mask] = 128
    assert texture_distance(other, photo, mask) > 1.0
    far = ~dilate_mask(mask, 20)  # beyond the reach of the gradients at every scale
    assert texture_distance(other, photo, far) == 0.0  # only the mask counts


@pytest.mark.parametrize("name", ["grass", "gravel"])
def test_texture_distance_ranks_blur_worse_than_texture_where_psnr_and_ssim_do_not(name) -> None:
    img = _texture(name)
    h, w = img.shape[:2]
    hole = _ellipse(h, w, h / 2, w / 2, 45, 60)
    copied = img.copy()  # the same texture, from elsewhere: what an exemplar fill does
    copied[hole] = np.roll(img, (53, 71), axis=(0, 1))[hole]
    blurred = {}
    for sigma in (1, 2, 4):
        b = img.copy()
        b[hole] = cv2.GaussianBlur(img, (0, 0), sigma)[hole]
        blurred[sigma] = b
    d_copy = texture_distance(copied, img, hole)
    d_blur = {s: texture_distance(b, img, hole) for s, b in blurred.items()}
    assert d_blur[1] < d_blur[2] < d_blur[4]  # more blur, further
    assert d_copy < d_blur[2] / 3
    # ...while the pixel-wise metrics prefer the smear: why the benchmark needs this one.
    assert psnr(blurred[2], img, hole) > psnr(copied, img, hole) + 3
    assert ssim(blurred[2], img, hole) > ssim(copied, img, hole)


def test_texture_distance_counts_seams_and_refuses_bad_masks() -> None:
    flat = np.full((64, 64, 3), 100, np.uint8)
    hole = np.zeros((64, 64), bool)
    hole[20:40, 20:40] = True
    step = flat.copy()
    step[hole] = 160  # flat inside, but a hard step at the border
    assert texture_distance(step, flat, hole) > 1.0
    with pytest.raises(ValueError, match="empty"):
        texture_distance(flat, flat, np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="does not match"):
        texture_distance(flat, flat, np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        texture_distance(flat, flat[:10])


# ----------------------------------------------------------------------------- options and default

def test_exemplar_methods_are_choices_and_patchmatch_is_the_default() -> None:
    choices = typing.get_args(typing.get_type_hints(RemoveOptions)["method"])
    assert {"patchmatch", "fsr-fast", "telea", "ns", "biharmonic"} == set(choices)
    assert RemoveOptions().method == "patchmatch"
    with pytest.raises(InputError, match="--patch must be"):
        RemoveOptions(patch=0)
    fields = {f.name for f in dataclasses.fields(RemoveOptions)}
    assert "patch" in fields


def test_default_fills_a_real_texture_with_texture_not_a_smear() -> None:
    img = _texture("grass")[128:384, 128:384].copy()
    hole = _ellipse(256, 256, 128, 128, 35, 45)
    default = texture_distance(_arr(dc.remove(img, hole, engine="classical", seed=0)), img, hole)
    for smooth in ("telea", "ns"):
        assert default < 0.6 * texture_distance(_arr(dc.remove(img, hole, engine="classical", method=smooth)), img,
                                                 hole), smooth


@pytest.mark.slow
def test_patchmatch_reconstructs_a_periodic_pattern_far_better_than_telea() -> None:
    img = _periodic()
    hole = _ellipse(*img.shape[:2], 81, 101, 24, 30)
    pm = _arr(dc.remove(img, hole, engine="classical", method="patchmatch", seed=0))
    telea = _arr(dc.remove(img, hole, engine="classical", method="telea"))
    assert texture_distance(pm, img, hole) < 0.25 * texture_distance(telea, img, hole)
    assert texture_distance(pm, img, hole) < 3.0
    assert psnr(pm, img, hole) > psnr(telea, img, hole)
    # FSR models the hole from the pattern's frequencies: closer than Telea too.
    fsr = _arr(dc.remove(img, hole, engine="classical", method="fsr-fast"))
    assert texture_distance(fsr, img, hole) < texture_distance(telea, img, hole)


# ----------------------------------------------------------------------------- exactness, seeds, sizes

@pytest.mark.parametrize("method", [pytest.param(m, marks=[pytest.mark.slow] if m == "fsr-fast" else [])
                                    for m in EXEMPLAR])
def test_exemplar_methods_touch_only_the_hole(photo, ellipse_mask, method) -> None:
    raw = _arr(dc.remove(photo, ellipse_mask, engine="classical", method=method, paste_back=False, seed=1))
    assert raw.shape == photo.shape and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw[~ellipse_mask], photo[~ellipse_mask])
    assert (raw[ellipse_mask] != photo[ellipse_mask]).any()
    kept = _arr(dc.remove(photo, ellipse_mask, engine="classical", method=method, seed=1))
    outside = ~changed_region(ellipse_mask, default_margin(photo.shape))
    np.testing.assert_array_equal(kept[outside], photo[outside])


@pytest.mark.slow
def test_patchmatch_is_deterministic_per_seed_and_the_seed_is_used(photo, ellipse_mask) -> None:
    def run(seed: int) -> np.ndarray:
        return _arr(dc.remove(photo, ellipse_mask, engine="classical", method="patchmatch", seed=seed))

    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()  # PatchMatch is randomised: the seed reaches it


@pytest.mark.slow
def test_patchmatch_seeds_hold_across_threads() -> None:
    """PyPatchMatch's seed is process-wide native state: concurrent runs must not mix seeds."""
    img = _texture("gravel")[:160, :160].copy()
    hole = _ellipse(160, 160, 80, 80, 25, 30)
    expected = {s: _arr(dc.remove(img, hole, method="patchmatch", seed=s)) for s in (1, 2)}
    got: dict[int, list[np.ndarray]] = {1: [], 2: []}

    def work(seed: int) -> None:
        for _ in range(3):
            got[seed].append(_arr(dc.remove(img, hole, method="patchmatch", seed=seed)))

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (1, 2):
        assert len(got[s]) == 3
        for out in got[s]:
            np.testing.assert_array_equal(out, expected[s])


def test_patchmatch_seed_and_fill_are_one_step_under_a_lock(monkeypatch) -> None:
    """A stand-in for the native library that reads its global seed late, as a racing thread would see it."""
    import types

    fake = types.SimpleNamespace(patchmatch_available=True, seed=None)

    def set_random_seed(seed: int) -> None:
        fake.seed = seed

    def inpaint(image, mask, patch_size):
        time.sleep(0.05)  # the other thread gets every chance to set its seed meanwhile
        out = image.copy()
        out[mask > 0] = fake.seed
        return out

    fake.set_random_seed, fake.inpaint = set_random_seed, inpaint
    monkeypatch.setitem(sys.modules, "patchmatch", fake)
    img = np.zeros((8, 8, 3), np.uint8)
    hole = np.zeros((8, 8), bool)
    hole[2:5, 2:5] = True
    start = threading.Barrier(2)
    got: dict[int, np.ndarray] = {}

    def work(seed: int) -> None:
        start.wait()
        got[seed] = exemplar.patchmatch_fill(img, hole, patch=3, seed=seed, seam=False)

    threads = [threading.Thread(target=work, args=(s,)) for s in (11, 22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (got[11][hole] == 11).all() and (got[22][hole] == 22).all()


@pytest.mark.parametrize("h, w", [(97, 1031), (3000, 7), (7, 3000), (1031, 97)])
@pytest.mark.parametrize("method", EXEMPLAR)
def test_exemplar_odd_sizes_and_multi_part_masks(h, w, method) -> None:
    rng = np.random.default_rng(h + w)
    base = np.asarray(Image.fromarray(data.astronaut()).resize((w, h)))
    img = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[h // 3: h // 3 + max(2, h // 6), w // 2: w // 2 + max(2, w // 6)] = True
    mask[:2, :3] = True  # a second part touching the corner
    events = []
    out = _arr(dc.remove(img, mask, engine="classical", method=method, paste_back=False, on_progress=events.append))
    assert out.shape == img.shape
    np.testing.assert_array_equal(out[~mask], img[~mask])
    assert [e.step for e in events] == [0, 1, 2] and {e.total for e in events[1:]} == {2}  # start, one step per part


# ----------------------------------------------------------------------------- windows, caps, cancel

@pytest.mark.slow
def test_patchmatch_works_in_a_window_of_a_big_photo_and_caps_huge_ones(monkeypatch) -> None:
    seen: list[tuple[int, int]] = []
    real = exemplar.patchmatch_fill

    def spy(image, hole, **kw):
        seen.append(image.shape[:2])
        return real(image, hole, **kw)

    monkeypatch.setattr(exemplar, "patchmatch_fill", spy)
    big = np.asarray(Image.fromarray(data.coffee()).resize((4000, 2600)))
    mask = np.zeros(big.shape[:2], bool)
    mask[1200:1260, 2000:2100] = True
    out = _arr(dc.remove(big, mask, engine="classical", method="patchmatch"))
    np.testing.assert_array_equal(out[:1100], big[:1100])
    assert seen and seen[0][0] * seen[0][1] < 40_000  # the hole's window, not the photo
    # A hole as big as the photo is worked at reduced resolution (the cap, made small here to
    # keep the test light): the cost is bounded whatever the hole.
    monkeypatch.setitem(remove_mod.MAX_WINDOW_PIXELS, "patchmatch", 60_000)
    seen.clear()
    huge = np.zeros(big.shape[:2], bool)
    huge[300:2300, 500:3500] = True
    out = _arr(dc.remove(big, huge, engine="classical", method="patchmatch"))
    assert len(seen) == 1 and seen[0][0] * seen[0][1] <= 60_000
    outside = ~changed_region(huge, default_margin(big.shape))
    np.testing.assert_array_equal(out[outside], big[outside])
    assert (out[huge] != big[huge]).any()


def test_cancel_stops_between_parts(monkeypatch) -> None:
    calls = []
    real = exemplar.patchmatch_fill
    monkeypatch.setattr(exemplar, "patchmatch_fill", lambda image, hole, **kw: calls.append(1) or real(image, hole,
                                                                                                        **kw))
    img = data.astronaut()
    mask = np.zeros(img.shape[:2], bool)
    for x in (60, 220, 380):  # three separate parts
        mask[200:260, x:x + 50] = True
    token = CancelToken()

    def on_progress(event) -> None:
        if event.step:  # not at the start event: after the first part
            token.cancel()

    with pytest.raises(Cancelled):
        dc.remove(img, mask, engine="classical", method="patchmatch", on_progress=on_progress, cancel=token)
    assert len(calls) == 1


def test_default_is_fast_enough_for_a_512_photo_with_a_15_percent_hole() -> None:
    img = data.astronaut()
    hole = np.zeros(img.shape[:2], bool)
    hole[200:398, 150:348] = True  # 15% of the photo
    dc.remove(img, np.eye(512, dtype=bool))  # warm-up (engine load)
    t0 = time.process_time()
    dc.remove(img, hole, engine="classical", seed=0)
    # Measured about 0.6 s of CPU (README); a generous bound so a loaded machine does not fail it.
    assert time.process_time() - t0 < 2.5


# ----------------------------------------------------------------------------- seam correction

def test_seam_correct_closes_the_step_and_keeps_the_texture() -> None:
    rng = np.random.default_rng(0)
    bg = np.full((40, 50, 3), 100, np.uint8)
    hole = np.zeros((40, 50), bool)
    hole[10:30, 15:35] = True
    texture = rng.integers(-10, 11, (int(hole.sum()), 3))
    filled = bg.copy()
    filled[hole] = 130 + texture  # the right texture at the wrong level: a visible step
    out = exemplar.seam_correct(filled, hole)
    np.testing.assert_array_equal(out[~hole], filled[~hole])
    assert abs(out[hole].astype(float).mean() - 100) < 1.5  # the level meets the surroundings
    residual = out[hole].astype(int) - filled[hole].astype(int)
    assert residual.std() < 3  # a smooth offset: the texture inside stays
    np.testing.assert_array_equal(exemplar.seam_correct(filled, np.ones((40, 50), bool)), filled)
    np.testing.assert_array_equal(exemplar.seam_correct(filled, np.zeros((40, 50), bool)), filled)


def test_seam_correct_on_a_coarse_grid_for_big_holes(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    bg = np.full((120, 150, 3), 100, np.uint8)
    hole = np.zeros((120, 150), bool)
    hole[20:100, 30:120] = True
    filled = bg.copy()
    filled[hole] = 130 + rng.integers(-10, 11, (int(hole.sum()), 3))
    exact = exemplar.seam_correct(filled, hole)
    monkeypatch.setattr(exemplar, "SEAM_MAX_UNKNOWNS", 500)  # 7200 hole pixels: solved about 4x coarser
    coarse = exemplar.seam_correct(filled, hole)
    np.testing.assert_array_equal(coarse[~hole], filled[~hole])
    assert abs(coarse[hole].astype(float).mean() - 100) < 1.5
    assert np.abs(coarse[hole].astype(int) - exact[hole].astype(int)).mean() < 2
    np.testing.assert_array_equal(exemplar.seam_correct(filled, np.zeros((40, 50), bool)), filled)


def test_patchmatch_fill_uses_the_seam_correction() -> None:
    img = data.chelsea()[100:260, 150:330].copy()
    hole = _ellipse(*img.shape[:2], 80, 90, 30, 40)
    raw = exemplar.patchmatch_fill(img, hole, patch=3, seed=0, seam=False)
    fixed = exemplar.patchmatch_fill(img, hole, patch=3, seed=0)
    border = hole & ~cv2.erode(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    np.testing.assert_array_equal(fixed, exemplar.seam_correct(raw, hole))
    assert psnr(fixed, img, border) > psnr(raw, img, border)


# ----------------------------------------------------------------------------- the benchmark

@pytest.mark.slow
def test_quality_benchmark_reports_the_texture_distance(capsys, testdata) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import quality
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert [m[0] for m in quality.REMOVAL_METRICS] == ["psnr", "ssim", "mae", "texture"]
    assert quality.REMOVAL_METRICS[3][1] == "texture"  # scored by diffcompose evaluate's texture metric
    quality.main(["--tasks", "remove", "--limit", "1", "--per-photo", "1", "--max-side", "256",
                  "--engines", "classical:telea,classical:patchmatch", "--testdata", str(testdata)])
    out = capsys.readouterr().out
    assert "| engine | PSNR (dB) ↑ | SSIM ↑ | MAE ↓ | texture dist. ↓ | s / image |" in out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| classical:")]
    quality_rows = [r[1].strip() for r in rows if len(r) == 8]  # engine, 4 metrics, s / image
    speed_rows = [r[1].strip() for r in rows if len(r) == 5]  # engine, wall, CPU
    assert quality_rows == speed_rows == ["classical:telea", "classical:patchmatch"]
    assert "| engine | s (wall) | s (CPU) |" in out


@pytest.mark.slow
def test_removal_tradeoff_benchmark_gates_by_contrast_and_prints_every_table(capsys, testdata) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import removal_tradeoff as rt
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    flat = np.full((40, 40, 3), 120, np.float32)
    stripes = flat.copy()
    stripes[:, ::2] = 20  # local standard deviation 50 grey levels
    assert rt.texture_gate(flat, 24).max() == 0 and rt.texture_gate(stripes, 24)[10:30, 10:30].min() == 1
    rt.main(["--limit", "1", "--per-photo", "1", "--max-side", "256", "--testdata", str(testdata), "--more"])
    out = capsys.readouterr().out
    for row in ("| patchmatch |", "| 0.5 ns + 0.5 patchmatch |", "| patchmatch gated to ns, t 24 |",
                "| patchmatch, patch radius 5 |", "| patchmatch detail over ns, sigma 4 |",
                "| patchmatch guided to blurred fsr-fast, weight 1 |", "| shift-map (whole photo) |",
                "| share of pixels |"):
        assert row in out, row
    assert "by the truth's local standard deviation" in out and "by the hole's thickness" in out
