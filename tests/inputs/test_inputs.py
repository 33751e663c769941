"""Reading images, masks and boxes: polarity, mode conversions, validation messages."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from diffcompose.errors import InputError, OutputExistsError
from diffcompose.inputs import (
    Box, check_mask_coverage, dilate_mask, load_image, load_mask, mask_to_box, parse_box, resize_mask,
)
from diffcompose.inputs.images import save_image


def _blob(h: int = 40, w: int = 60) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[10:25, 20:45] = True
    return m


# ----------------------------------------------------------------------------- masks

@pytest.mark.parametrize("encode", ["L", "1", "RGB-grey", "RGB-red", "RGB-blue", "RGBA-alpha", "RGBA-opaque",
                                    "RGBA-near-opaque", "LA", "I;16", "P", "float", "bool"])
def test_mask_polarity_in_every_encoding(encode: str) -> None:
    m = _blob()
    u8 = m.astype(np.uint8) * 255
    if encode == "L":
        src = Image.fromarray(u8, "L")
    elif encode == "1":
        src = Image.fromarray(u8, "L").convert("1")
    elif encode == "RGB-grey":
        src = Image.fromarray(np.dstack([u8] * 3))
    elif encode in ("RGB-red", "RGB-blue"):
        rgb = np.zeros(m.shape + (3,), np.uint8)
        rgb[..., 0 if encode == "RGB-red" else 2] = u8
        src = Image.fromarray(rgb)
    elif encode == "RGBA-alpha":  # a cut-out: colours arbitrary, alpha is the mask
        rgba = np.full(m.shape + (4,), 255, np.uint8)
        rgba[..., 3] = u8
        src = Image.fromarray(rgba, "RGBA")
    elif encode == "RGBA-opaque":  # mask in the colours, alpha constant
        src = Image.fromarray(np.dstack([u8, u8, u8, np.full_like(u8, 255)]), "RGBA")
    elif encode == "RGBA-near-opaque":  # FreeCompose-style: alpha varies but never reaches below 0.5
        alpha = np.full_like(u8, 255)
        alpha[0, :5] = 159
        src = Image.fromarray(np.dstack([u8, u8, u8, alpha]), "RGBA")
    elif encode == "LA":
        src = Image.fromarray(np.dstack([np.zeros_like(u8), u8]), "LA")
    elif encode == "I;16":
        src = Image.fromarray(m.astype(np.uint16) * 65535)
    elif encode == "P":
        src = Image.fromarray(u8, "L").convert("P")
    elif encode == "float":
        src = m.astype(np.float32)
    else:
        src = m
    got = load_mask(src, (m.shape[1], m.shape[0]))
    assert got.dtype == np.bool_ and got.shape == m.shape
    np.testing.assert_array_equal(got, m)


def test_jpeg_mask_soft_edges_are_thresholded(tmp_path) -> None:
    m = _blob()
    path = tmp_path / "m.jpg"
    Image.fromarray(m.astype(np.uint8) * 255).save(path, quality=60)
    got = load_mask(path)
    assert (got != m).mean() < 0.01  # JPEG ringing stays on the right side of 0.5


def test_mask_size_mismatch_message() -> None:
    with pytest.raises(InputError, match=r"mask is 60x40 but the image is 61x40"):
        load_mask(_blob(), (61, 40))


def test_empty_mask_message() -> None:
    with pytest.raises(InputError, match="mask is empty"):
        load_mask(np.zeros((5, 5), bool))


def test_full_mask_refused_where_context_is_needed() -> None:
    with pytest.raises(InputError, match="covers the whole image; removal needs"):
        check_mask_coverage(np.ones((4, 4), bool), operation="removal")


def test_resize_mask_is_coverage_and_keeps_polarity() -> None:
    m = _blob()
    small = resize_mask(m, (30, 20))
    assert small.shape == (20, 30) and small[9, 15] and not small[0, 0]
    soft = resize_mask(m, (30, 20), soft=True)
    assert soft.dtype == np.float32 and 0.0 <= soft.min() and soft.max() <= 1.0
    np.testing.assert_array_equal(resize_mask(small, (60, 40)).sum() > 0, True)


def test_dilate_mask_is_euclidean_and_exact() -> None:
    m = np.zeros((41, 41), bool)
    m[20, 20] = True
    d = dilate_mask(m, 5)
    yy, xx = np.mgrid[:41, :41]
    np.testing.assert_array_equal(d, (yy - 20) ** 2 + (xx - 20) ** 2 <= 25)
    np.testing.assert_array_equal(dilate_mask(m, 0), m)


# ----------------------------------------------------------------------------- images

def test_image_modes_become_rgb_uint8() -> None:
    grey = Image.fromarray(np.full((3, 4), 77, np.uint8), "L")
    assert (load_image(grey) == 77).all() and load_image(grey).shape == (3, 4, 3)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red pixel; the rest transparent -> white
    out = load_image(Image.fromarray(rgba, "RGBA"))
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)
    sixteen = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    assert (load_image(sixteen) == 255).all()
    assert (load_image(np.full((2, 2, 3), 0.5, np.float32)) == 128).all()


def test_exif_orientation_is_applied(tmp_path) -> None:
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when viewed
    path = tmp_path / "rot.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (20, 10, 3)
    assert out[:10].mean() > 200 and out[10:].mean() < 50  # white half is now on top


@pytest.mark.parametrize("case, message", [
    ("missing", "image not found"),
    ("directory", "is a directory"),
    ("corrupt", "not an image file"),
    ("big", "above the limit of"),
])
def test_image_error_messages(tmp_path, case: str, message: str) -> None:
    path = tmp_path / "x.png"
    if case == "directory":
        path = tmp_path
    elif case == "corrupt":
        path.write_bytes(b"not a png at all")
    elif case == "big":
        Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(InputError, match=message) as info:
        load_image(path, max_pixels=9999)
    assert "\n" not in str(info.value)


def test_save_image_is_atomic_and_refuses_overwrite(tmp_path) -> None:
    img = np.zeros((4, 5, 3), np.uint8)
    out = tmp_path / "o.png"
    save_image(img, out)
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        save_image(img, out)
    save_image(img + 1, out, force=True)
    assert np.asarray(Image.open(out))[0, 0, 0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]  # no temporary file left behind
    buf = io.BytesIO(out.read_bytes())
    assert Image.open(buf).format == "PNG"


# ----------------------------------------------------------------------------- boxes

def test_parse_box_and_mask_to_box_roundtrip() -> None:
    box = parse_box("3, 4, 10, 12", (20, 20))
    assert box == Box(3, 4, 10, 12) and (box.width, box.height) == (7, 8)
    m = np.zeros((20, 20), bool)
    m[box.slices] = True
    assert mask_to_box(m) == box


@pytest.mark.parametrize("value, message", [
    ("1,2,3", "must have 4 numbers"),
    ("a,b,c,d", "must have 4 numbers"),
    ("1.5,2,3,4", "whole pixels"),
    ("5,5,5,9", "degenerate"),
    ("8,2,3,9", "degenerate"),
    ("0,0,21,10", "lies outside the 20x20 image"),
    ("-1,0,5,5", "lies outside"),
])
def test_box_error_messages(value: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_box(value, (20, 20))
