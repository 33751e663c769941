"""Classical engines through the Python API, on real photos: behaviour, exactness, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

import diffcompose as dc
from diffcompose.errors import InputError
from diffcompose.evaluation import fmse, mae, mse, psnr, ssim
from diffcompose.inputs import Box, dilate_mask, load_mask, mask_to_box
from diffcompose.methods.classical.paste import feather_alpha, poisson_blend
from diffcompose.regions.place import fit_box
from diffcompose.methods.classical.harmonize import to_lab
from diffcompose.regions import changed_region, default_margin

from conftest import testdata_cases as cases_of

METHODS = ["telea", "ns", "biharmonic"]


def _arr(img) -> np.ndarray:
    return np.asarray(img)


# ----------------------------------------------------------------------------- remove

@pytest.mark.parametrize("method", METHODS)
def test_remove_fills_the_hole_from_its_surroundings(photo, ellipse_mask, method) -> None:
    out = _arr(dc.remove(photo, ellipse_mask, engine="classical", method=method, paste_back=False))
    assert out.shape == photo.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~ellipse_mask], photo[~ellipse_mask])  # the engine only touches the hole
    ring = dilate_mask(ellipse_mask, 6) & ~ellipse_mask
    # The fill continues the surroundings: its colour is close to the ring's, not to the object's.
    fill, obj, around = out[ellipse_mask].mean(0), photo[ellipse_mask].mean(0), photo[ring].mean(0)
    assert np.abs(fill - around).mean() < np.abs(obj - around).mean()


def test_remove_beats_mean_fill_on_a_real_object_pasted_on_a_real_photo() -> None:
    bg = data.coffee()
    cat = data.chelsea()
    m = np.zeros(cat.shape[:2], bool)
    m[60:240, 120:330] = True  # a patch of fur, pasted on the table
    from diffcompose.regions.place import place

    composite, hole = place(bg, cat, m, Box(420, 250, 560, 380))
    ring = dilate_mask(hole, 8) & ~hole
    mean_fill = composite.copy()
    mean_fill[hole] = composite[ring].mean(0).round().astype(np.uint8)
    best = max(psnr(_arr(dc.remove(composite, hole, engine="classical", method=m)), bg, hole) for m in METHODS)
    assert best > psnr(mean_fill, bg, hole)


@pytest.mark.parametrize("h, w", [(97, 1031), (3000, 7), (7, 3000), (1031, 97)])
@pytest.mark.parametrize("method", METHODS)
def test_remove_odd_sizes_and_extreme_aspect_ratios(h, w, method) -> None:
    rng = np.random.default_rng(h + w)
    base = np.asarray(Image.fromarray(data.astronaut()).resize((w, h)))
    img = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[h // 3: h // 3 + max(2, h // 6), w // 2: w // 2 + max(2, w // 6)] = True
    mask[:2, :3] = True  # a second part touching the corner
    out = _arr(dc.remove(img, mask, engine="classical", method=method))
    assert out.shape == img.shape
    outside = ~changed_region(mask, default_margin(img.shape))
    np.testing.assert_array_equal(out[outside], img[outside])


@pytest.mark.slow
def test_remove_big_photo_works_in_a_window() -> None:
    big = np.asarray(Image.fromarray(data.coffee()).resize((4000, 2600)))
    mask = np.zeros(big.shape[:2], bool)
    mask[1200:1260, 2000:2100] = True
    out = _arr(dc.remove(big, mask, engine="classical", method="biharmonic"))
    np.testing.assert_array_equal(out[:1100], big[:1100])
    assert mae(out, big, mask) < 40


@pytest.mark.parametrize("method", METHODS)
def test_remove_is_deterministic(photo, ellipse_mask, method) -> None:
    a = _arr(dc.remove(photo, ellipse_mask, engine="classical", method=method, seed=3))
    b = _arr(dc.remove(photo, ellipse_mask, engine="classical", method=method, seed=3))
    np.testing.assert_array_equal(a, b)


def test_remove_reports_one_progress_step_per_separate_part_of_the_mask(photo) -> None:
    # Each part is filled in its own window, so a mask of two objects is two steps of work.
    mask = np.zeros(photo.shape[:2], bool)
    mask[100:140, 60:100] = True
    mask[300:340, 350:400] = True
    events = []
    dc.remove(photo, mask, engine="classical", method="telea", on_progress=events.append)
    assert [(e.step, e.total) for e in events] == [(0, 0), (1, 2), (2, 2)]  # the start event, then the parts


def test_remove_refuses_full_mask_and_bad_options(photo) -> None:
    with pytest.raises(InputError, match="covers the whole image"):
        dc.remove(photo, np.ones(photo.shape[:2], bool), engine="classical")
    with pytest.raises(InputError, match="--radius must be"):
        dc.remove(photo, np.eye(512, dtype=bool), engine="classical", radius=0)
    with pytest.raises(InputError, match="does not use --blend"):
        dc.remove(photo, np.eye(512, dtype=bool), engine="classical", blend="none")


# ----------------------------------------------------------------------------- paste

@pytest.mark.parametrize("obj, box", [((100, 50), Box(0, 0, 40, 40)), ((10, 300), Box(5, 5, 205, 105)),
                                       ((7, 7), Box(3, 3, 1003, 20))])
def test_fit_box_keeps_aspect_and_centres(obj, box) -> None:
    got = fit_box(obj, box)
    assert box.x0 <= got.x0 and got.x1 <= box.x1 and box.y0 <= got.y0 and got.y1 <= box.y1
    assert got.width == box.width or got.height == box.height  # as large as fits
    assert abs(got.width / got.height - obj[0] / obj[1]) <= max(1 / got.height, 1 / got.width) * obj[0] / obj[1] + 1e-9
    assert abs((got.x0 - box.x0) - (box.x1 - got.x1)) <= 1 and abs((got.y0 - box.y0) - (box.y1 - got.y1)) <= 1


@pytest.mark.parametrize("blend", ["none", "feather", "poisson"])
def test_paste_places_the_object_inside_the_box_only(blend) -> None:
    bg, cat = data.coffee(), data.chelsea()
    m = np.zeros(cat.shape[:2], bool)
    m[30:280, 80:380] = True
    box = Box(350, 100, 590, 390)
    out = _arr(dc.paste(bg, cat, box, object_mask=m, blend=blend))
    assert out.shape == bg.shape
    inside = np.zeros(bg.shape[:2], bool)
    inside[box.slices] = True
    np.testing.assert_array_equal(out[~inside], bg[~inside])
    placed = fit_box((300, 250), box)
    core = np.zeros(bg.shape[:2], bool)
    core[placed.y0 + 20: placed.y1 - 20, placed.x0 + 20: placed.x1 - 20] = True
    if blend == "poisson":  # colours shift toward the table; the texture is the cat's
        assert ssim(out[core.any(1)][:, core.any(0)], bg[core.any(1)][:, core.any(0)]) < 0.5
    else:
        assert mae(out, bg, core) > 20


def test_paste_uses_the_objects_alpha_and_handles_borders() -> None:
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., :3] = (250, 10, 10)
    rgba[10:30, 10:50, 3] = 255  # a 40x20 cut-out
    bg = np.full((50, 50, 3), 90, np.uint8)
    for blend in ("none", "feather", "poisson"):
        out = _arr(dc.paste(bg, Image.fromarray(rgba, "RGBA"), "0,0,50,50", blend=blend))
        changed = np.abs(out.astype(int) - bg).sum(2) > 30
        # Scaled to 50x25 and centred: it touches the left and right borders, not the top or bottom.
        if blend != "poisson":  # a flat object takes the flat background's colour under Poisson
            assert changed[25, 0] and changed[25, 49] and changed[25, 25], blend
        assert not changed[:10].any() and not changed[40:].any(), blend


def test_feather_ramps_inward_but_not_at_the_image_border() -> None:
    m = np.zeros((20, 20), bool)
    m[:, :10] = True
    a = feather_alpha(m, 4)
    assert a[10, 0] == 1.0 and a[10, 9] < 0.5 and a[10, 5] == 1.0 and (a[:, 10:] == 0).all()


def test_poisson_blend_keeps_gradients_and_matches_the_edge() -> None:
    h, w = 60, 80
    src = np.full((h, w, 3), 40, np.uint8)
    src[25:35, 30:50] = 90
    dst = np.full((h, w, 3), 200, np.uint8)
    m = np.zeros((h, w), bool)
    m[15:45, 20:60] = True
    out = poisson_blend(src, dst, m).astype(int)
    assert abs(out[20, 25, 0] - 200) <= 3  # the object's edge takes the target's colour
    assert 40 <= out[30, 40, 0] - out[20, 25, 0] <= 60  # its internal contrast (50) is kept
    np.testing.assert_array_equal(out[~m], dst[~m])


def test_paste_error_for_a_box_too_small_for_the_object() -> None:
    obj = np.zeros((100, 100, 3), np.uint8)
    m = np.eye(100, dtype=bool)  # a thin diagonal: shrinks to nothing
    with pytest.raises(InputError, match="covers no pixels"):
        dc.paste(np.zeros((50, 50, 3), np.uint8), obj, (0, 0, 2, 2), object_mask=m)


# ----------------------------------------------------------------------------- harmonize

def _object_on_photo():
    bg = data.coffee()
    cat = data.chelsea()
    m = np.zeros(cat.shape[:2], bool)
    yy, xx = np.mgrid[: cat.shape[0], : cat.shape[1]]
    m[((yy - 150) / 120) ** 2 + ((xx - 230) / 150) ** 2 <= 1] = True
    from diffcompose.regions.place import place

    return place(bg, cat, m, Box(300, 150, 560, 380))


@pytest.mark.parametrize("method", ["reinhard", "poisson"])
def test_harmonize_changes_only_the_object_and_moves_it_toward_the_scene(method) -> None:
    composite, m = _object_on_photo()
    out = _arr(dc.harmonize(composite, m, engine="classical", method=method, paste_back=False))
    np.testing.assert_array_equal(out[~m], composite[~m])
    ring = dilate_mask(m, 20) & ~m
    before = np.abs(to_lab(composite)[m].mean(0) - to_lab(composite)[ring].mean(0)).sum()
    after = np.abs(to_lab(out)[m].mean(0) - to_lab(out)[ring].mean(0)).sum()
    assert after < before


def test_harmonize_strength_zero_is_identity_and_one_matches_the_ring_mean() -> None:
    composite, m = _object_on_photo()
    same = _arr(dc.harmonize(composite, m, engine="classical", method="reinhard", strength=0.0))
    assert mae(same, composite, m) < 1.0  # only Lab round-trip rounding
    full = _arr(dc.harmonize(composite, m, engine="classical", method="reinhard", strength=1.0, ring=15,
                             paste_back=False))
    ring = dilate_mask(m, 15) & ~m
    assert np.abs(to_lab(full)[m].mean(0) - to_lab(composite)[ring].mean(0)).max() < 4.0


def test_harmonize_with_an_object_and_box(photo) -> None:
    cat = data.chelsea()
    out = _arr(dc.harmonize(photo, obj=cat, box=(10, 300, 210, 450), engine="classical"))
    assert out.shape == photo.shape
    np.testing.assert_array_equal(out[:250], photo[:250])
    assert mae(out[300:450, 10:210], photo[300:450, 10:210]) > 10


def test_harmonize_removes_a_colour_cast_from_a_patch_of_the_scene() -> None:
    """A piece of the table given a white-balance shift is brought back toward the table's colours."""
    img = data.coffee()
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    m = ((yy - 330) / 40) ** 2 + ((xx - 520) / 50) ** 2 <= 1  # wood, right of the saucer
    comp = img.copy()
    comp[m] = np.clip(img[m] * np.array([0.8, 1.0, 1.3]), 0, 255).astype(np.uint8)
    for method in ("reinhard", "poisson"):
        out = _arr(dc.harmonize(comp, m, engine="classical", method=method))
        assert fmse(out, img, m) < 0.8 * fmse(comp, img, m), method


def test_harmonize_needs_surroundings() -> None:
    img = data.coffee()[:60, :60]
    m = np.ones((60, 60), bool)
    m[0, :3] = False
    with pytest.raises(InputError, match="too few surrounding pixels"):
        dc.harmonize(img, m, engine="classical", method="reinhard")


# ----------------------------------------------------------------------------- segment

def test_segment_is_deterministic_and_stays_in_the_box(photo) -> None:
    box = Box(150, 20, 350, 300)
    a = _arr(dc.segment(photo, box, seed=7)) > 0
    b = _arr(dc.segment(photo, box, seed=7)) > 0
    np.testing.assert_array_equal(a, b)
    outside = np.ones(a.shape, bool)
    outside[box.slices] = False
    assert not a[outside].any() and 0.2 < a[box.slices].mean() < 0.95


@pytest.mark.parametrize("h, w, box", [(7, 3000, (1000, 0, 1200, 7)), (1031, 97, (10, 300, 80, 600))])
def test_segment_extreme_aspect_ratios(h, w, box) -> None:
    img = np.asarray(Image.fromarray(data.astronaut()).resize((w, h)))
    out = _arr(dc.segment(img, box))
    assert out.shape == (h, w)


@pytest.mark.slow
def test_segment_finds_real_objects(testdata) -> None:
    ious = []
    for case in cases_of("subjects"):
        if "mask_u2net" not in case["files"]:
            continue
        img = Image.open(case["files"]["image"]).convert("RGB")
        img.thumbnail((400, 400))
        img = np.asarray(img)
        truth = load_mask(Image.open(case["files"]["mask_u2net"]).resize((img.shape[1], img.shape[0])))
        b = mask_to_box(truth)
        pad = 4
        box = Box(max(0, b.x0 - pad), max(0, b.y0 - pad), min(img.shape[1], b.x1 + pad), min(img.shape[0], b.y1 + pad))
        if box.width * box.height > 0.9 * img.shape[0] * img.shape[1]:
            continue
        got = _arr(dc.segment(img, box)) > 0
        ious.append((got & truth).sum() / (got | truth).sum())
    print("GrabCut IoU vs U-2-Net masks:", np.round(ious, 3))
    assert len(ious) >= 3 and np.mean(ious) > 0.6 and min(ious) > 0.3


@pytest.mark.parametrize("box, message", [((0, 0, 512, 512), r"covers \(nearly\) the whole"),
                                          ((10, 10, 15, 15), "too small to segment")])
def test_segment_errors(photo, box, message) -> None:
    with pytest.raises(InputError, match=message):
        dc.segment(photo, box)


# ----------------------------------------------------------------------------- metrics

def test_metrics_known_values() -> None:
    a = np.zeros((20, 20, 3), np.uint8)
    b = a.copy()
    b[:10] = 10
    m = np.zeros((20, 20), bool)
    m[:10] = True
    assert mse(a, b) == 50.0 and fmse(a, b, m) == 100.0 and mae(a, b, m) == 10.0
    assert psnr(a, b, m) == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b, m) < ssim(a, b, ~m) <= 1.0
    with pytest.raises(ValueError, match="mask is empty"):
        mse(a, b, np.zeros((20, 20), bool))
