"""The paint API and command: paste-back, odd sizes, several outputs, reference handling, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("diffusers")

import diffcompose  # noqa: E402
from diffcompose.cli.main import main  # noqa: E402
from diffcompose.errors import InputError  # noqa: E402
from diffcompose.methods.pbe.reference import CLIP_MEAN, CLIP_STD, prepare_reference  # noqa: E402
from diffcompose.methods.pbe.tiny import write_tiny_pbe  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_pbe(tmp_path_factory.mktemp("pbe") / "tiny", seed=1)


@pytest.mark.parametrize("size", [(173, 131), pytest.param((97, 240), marks=pytest.mark.slow)])
def test_paste_back_keeps_outside_pixels(tiny_dir, photo, size):
    w, h = size
    image = np.asarray(Image.fromarray(photo).resize((w, h)))
    mask = np.zeros((h, w), bool)
    mask[h // 3: h // 3 + h // 4, w // 4: w // 4 + w // 3] = True
    out = np.asarray(diffcompose.paint(image, mask, photo[60:300, 150:330], model=str(tiny_dir), steps=2, seed=4))
    assert out.shape == image.shape
    outside = ~changed_region(mask, default_margin(image.shape))
    assert np.array_equal(out[outside], image[outside])
    assert np.abs(out[mask].astype(int) - image[mask].astype(int)).mean() > 3

    raw = np.asarray(diffcompose.paint(image, mask, photo, model=str(tiny_dir), steps=2, seed=4, paste_back=False))
    assert raw.shape == image.shape and not np.array_equal(raw[outside], image[outside])  # the window is redrawn


def test_several_outputs_differ(tiny_dir, photo):
    image = photo[::4, ::4]
    mask = np.zeros(image.shape[:2], bool)
    mask[40:80, 50:90] = True
    outs = diffcompose.paint(image, mask, photo, model=str(tiny_dir), steps=2, num_images=2,
                             reference_preprocess="crop")
    assert isinstance(outs, list) and len(outs) == 2
    assert not np.array_equal(np.asarray(outs[0]), np.asarray(outs[1]))


def test_guidance_below_one_is_applied(tiny_dir, photo):
    """As the original: guidance whenever the scale is not 1 (below 1 leans to the unconditional fill)."""
    from diffcompose.models.sampling import is_guided

    assert [is_guided(s, below_one=True) for s in (0.0, 0.5, 1.0, 5.0)] == [True, True, False, True]
    assert [is_guided(s) for s in (0.0, 0.5, 1.0, 5.0)] == [False, False, False, True]  # diffusers' rule, for others
    image = photo[::4, ::4]
    mask = np.zeros(image.shape[:2], bool)
    mask[40:80, 50:90] = True
    run = lambda g: np.asarray(diffcompose.paint(image, mask, photo, model=str(tiny_dir), steps=2,  # noqa: E731
                                                 seed=2, guidance_scale=g))
    plain = run(1.0)
    assert not np.array_equal(run(0.5), plain) and not np.array_equal(run(0.0), plain)


def test_reference_mask_whitens_background(photo):
    mask = np.zeros(photo.shape[:2], bool)
    mask[100:300, 100:300] = True
    x = prepare_reference(photo, mask, size=32, mode="stretch")
    white = (1.0 - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(x[:, 0, 0], white, atol=1e-5)  # a corner: background
    assert not np.allclose(x[:, 16, 16], white)  # the centre: the object
    with pytest.raises(InputError, match="empty"):
        prepare_reference(photo, np.zeros_like(mask))


def test_input_errors(tiny_dir, photo):
    mask = np.zeros(photo.shape[:2], bool)
    with pytest.raises(InputError, match="empty"):
        diffcompose.paint(photo, mask, photo, model=str(tiny_dir))
    mask[10:20, 10:20] = True
    with pytest.raises(InputError, match="guidance-scale"):
        diffcompose.paint(photo, mask, photo, model=str(tiny_dir), guidance_scale=-1)
    with pytest.raises(InputError, match="does not use"):
        diffcompose.paint(photo, mask, photo, model=str(tiny_dir), strength=0.5)


def test_cli(tiny_dir, photo, tmp_path, capsys):
    Image.fromarray(photo[:200, :250]).save(tmp_path / "img.png")
    m = np.zeros((200, 250), np.uint8)
    m[50:120, 60:150] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    Image.fromarray(photo[100:300, 200:400]).save(tmp_path / "ref.jpg")
    args = ["paint", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"), "--reference",
            str(tmp_path / "ref.jpg"), "--model", str(tiny_dir), "--steps", "2", "--scheduler", "dpm"]
    assert main(args + ["-o", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (250, 200)
    assert main(args + ["-o", str(tmp_path / "many.png"), "--num-images", "2"]) == 0
    assert (tmp_path / "many_0.png").is_file() and (tmp_path / "many_1.png").is_file()
    capsys.readouterr()
    assert main(args + ["-o", str(tmp_path / "out.png")]) != 0  # exists, no --force
    assert main(["paint", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"), "--reference",
                 str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "x.png"), "--model", str(tiny_dir)]) != 0
    assert main(["convert", "pbe", str(tmp_path / "none.ckpt"), str(tmp_path / "conv")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("diffcompose: error:") for line in err), err
    assert "nope.jpg" in err[1] and "none.ckpt" in err[2]
