"""The command line end to end on real photos: outputs, errors (one line each), safety of files."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from diffcompose.cli.main import main
from diffcompose.inputs import load_image, load_mask
from diffcompose.regions import changed_region, default_margin

from conftest import testdata_cases as cases_of


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Real photos (scikit-image) and masks written as files, in several encodings."""
    astro, coffee, cat = data.astronaut(), data.coffee(), data.chelsea()
    h, w = astro.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    ellipse = ((xx - w * 0.55) / (w * 0.12)) ** 2 + ((yy - h * 0.45) / (h * 0.18)) ** 2 <= 1.0
    p = {
        "image": tmp_path / "astronaut.png", "mask": tmp_path / "mask.png", "coffee": tmp_path / "coffee.jpg",
        "cat": tmp_path / "cat.png", "cat_mask": tmp_path / "cat_mask.png", "rgb_mask": tmp_path / "mask_rgb.png",
    }
    Image.fromarray(astro).save(p["image"])
    Image.fromarray(ellipse.astype(np.uint8) * 255).save(p["mask"])
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = ellipse * 255  # mask drawn in the red channel
    Image.fromarray(rgb).save(p["rgb_mask"])
    Image.fromarray(coffee).save(p["coffee"], quality=95)
    Image.fromarray(cat).save(p["cat"])
    cm = np.zeros(cat.shape[:2], np.uint8)
    cm[30:280, 80:380] = 255
    Image.fromarray(cm).save(p["cat_mask"])
    return p


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- success paths

def test_help_lists_the_commands() -> None:
    res = subprocess.run([sys.executable, "-m", "diffcompose", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("remove", "paste", "harmonize", "segment", "demo"):
        assert cmd in res.stdout
    res = subprocess.run([sys.executable, "-m", "diffcompose", "remove", "--help"], capture_output=True, text=True,
                         check=True)
    assert "--method {telea,ns,biharmonic,patchmatch,fsr-fast}" in res.stdout and "--force" in res.stdout


@pytest.mark.parametrize("mask_key", ["mask", "rgb_mask"])
def test_remove_end_to_end_keeps_inputs_and_pixels_outside(capsys, files, tmp_path, mask_key) -> None:
    before = {k: _digest(v) for k, v in files.items()}
    out = tmp_path / "out.png"
    code, stdout, _ = _run(capsys, ["remove", str(files["image"]), "--mask", str(files[mask_key]), "-o", str(out),
                                    "--engine", "classical", "--method", "ns"])
    assert code == 0 and stdout.strip() == str(out)
    assert {k: _digest(v) for k, v in files.items()} == before  # inputs never modified
    img, res = load_image(files["image"]), load_image(out)
    mask = load_mask(files["mask"])
    outside = ~changed_region(mask, default_margin(img.shape))
    np.testing.assert_array_equal(res[outside], img[outside])
    assert not np.array_equal(res[mask], img[mask])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


@pytest.mark.slow
def test_output_format_follows_the_extension(capsys, files, tmp_path) -> None:
    for ext, fmt in ((".jpg", "JPEG"), (".webp", "WEBP"), (".tiff", "TIFF"), (".png", "PNG")):
        out = tmp_path / f"out{ext}"
        assert _run(capsys, ["remove", str(files["image"]), "--mask", str(files["mask"]), "-o", str(out)])[0] == 0
        assert Image.open(out).format == fmt


def test_force_is_needed_to_overwrite(capsys, files, tmp_path) -> None:
    out = tmp_path / "o.png"
    args = ["segment", str(files["image"]), "--box", "150,20,350,300", "-o", str(out)]
    assert _run(capsys, args)[0] == 0
    first = _digest(out)
    code, _, err = _run(capsys, args[:-1] + [str(out)] + ["--seed", "5"])
    assert code != 0 and err.count("\n") == 1 and "pass --force" in err and _digest(out) == first
    assert _run(capsys, args + ["--force"])[0] == 0


def test_same_seed_same_output(capsys, files, tmp_path) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}.png"
        assert _run(capsys, ["segment", str(files["image"]), "--box", "150,20,350,300", "--seed", "11",
                             "-o", str(out)])[0] == 0
        outs.append(np.asarray(Image.open(out)))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("blend", ["none", "feather", "poisson"])
def test_paste_end_to_end(capsys, files, tmp_path, blend) -> None:
    out = tmp_path / "paste.png"
    code, _, _ = _run(capsys, ["paste", str(files["coffee"]), "--object", str(files["cat"]), "--object-mask",
                               str(files["cat_mask"]), "--box", "350,100,590,390", "--blend", blend, "-o", str(out)])
    assert code == 0
    res, bg = load_image(out), load_image(files["coffee"])
    assert res.shape == bg.shape
    np.testing.assert_array_equal(res[:100], bg[:100])
    assert np.abs(res[150:350, 400:550].astype(int) - bg[150:350, 400:550]).mean() > 10


@pytest.mark.parametrize("method", ["reinhard", "poisson"])
def test_harmonize_end_to_end(capsys, files, tmp_path, method) -> None:
    out = tmp_path / "h.png"
    code, _, _ = _run(capsys, ["harmonize", str(files["coffee"]), "--object", str(files["cat"]), "--object-mask",
                               str(files["cat_mask"]), "--box", "350,100,590,390", "--engine", "classical",
                               "--method", method, "-o", str(out)])
    assert code == 0 and load_image(out).shape == (400, 600, 3)
    assert _run(capsys, ["harmonize", str(files["image"]), "--mask", str(files["mask"]), "--engine", "classical",
                         "--method", method, "-o", str(tmp_path / "h2.png")])[0] == 0


@pytest.mark.slow
def test_remove_every_testdata_removal_case_via_cli(capsys, testdata, tmp_path) -> None:
    for i, case in enumerate(cases_of("removal")):
        f = case["files"]
        out = tmp_path / f"{i}.png"
        before = _digest(f["image"]), _digest(f["mask"])
        code, _, err = _run(capsys, ["remove", str(f["image"]), "--mask", str(f["mask"]), "-o", str(out),
                                     "--engine", "classical"])
        assert code == 0, err
        assert (_digest(f["image"]), _digest(f["mask"])) == before
        img, res = load_image(f["image"]), load_image(out)
        mask = load_mask(f["mask"], (img.shape[1], img.shape[0]))
        outside = ~changed_region(mask, default_margin(img.shape))
        np.testing.assert_array_equal(res[outside], img[outside], err_msg=str(f["image"]))
        assert not np.array_equal(res[mask], img[mask])


@pytest.mark.slow
def test_demo_writes_its_outputs_and_refuses_to_overwrite(capsys, tmp_path) -> None:
    out_dir = tmp_path / "demo"
    code, stdout, _ = _run(capsys, ["demo", "--output-dir", str(out_dir), "--testdata", str(tmp_path / "none")])
    *written, report = stdout.split()
    assert code == 0 and len(written) == 23 and all(Path(p).exists() for p in written)  # 5 removal methods x 3
    # The last line is the report: every output shown (as a thumbnail file, not inlined) beside its input.
    assert Path(report) == out_dir / "report.html"
    page = Path(report).read_text()
    assert "data:image" not in page and page.count("<tr") == 23 + 2 + 11  # items, 2 headers, 11 task:method rows
    for src in re.findall(r'src="([^"]+)"', page):
        assert (out_dir / src).is_file()
    assert {Path(p).name for p in written} >= {"coffee_paste_chelsea_poisson.png", "astronaut_remove_biharmonic.png",
                                                 "astronaut_remove_patchmatch.png", "astronaut_remove_fsr-fast.png",
                                                 "coffee_harmonize_chelsea_reinhard.png", "chelsea_segment.png"}
    code, _, err = _run(capsys, ["demo", "--output-dir", str(out_dir), "--testdata", str(tmp_path / "none")])
    assert code != 0 and err.count("\n") == 1 and "--force" in err


# ----------------------------------------------------------------------------- one test per error message

def _bad_inputs(files: dict[str, Path], tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Name -> (argv, expected fragment of the one error line)."""
    img, mask, out = str(files["image"]), str(files["mask"]), str(tmp / "out.png")
    small = tmp / "small.png"
    Image.new("L", (10, 10), 255).save(small)
    empty = tmp / "empty.png"
    Image.new("L", (512, 512), 0).save(empty)
    full = tmp / "full.png"
    Image.new("L", (512, 512), 255).save(full)
    corrupt = tmp / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG but not really")
    existing = tmp / "exists.png"
    existing.write_bytes(b"x")
    rm = ["remove", img, "--mask", mask, "-o", out]
    return {
        "missing image": (["remove", str(tmp / "nope.png"), "--mask", mask, "-o", out], "image not found"),
        "image is a directory": (["remove", str(tmp), "--mask", mask, "-o", out], "is a directory"),
        "corrupt image": (["remove", str(corrupt), "--mask", mask, "-o", out], "not an image file"),
        "missing mask": (["remove", img, "--mask", str(tmp / "nomask.png"), "-o", out], "mask not found"),
        "mask size differs": (["remove", img, "--mask", str(small), "-o", out], "must be the same size"),
        "empty mask": (["remove", img, "--mask", str(empty), "-o", out], "mask is empty"),
        "mask covers everything": (["remove", img, "--mask", str(full), "-o", out], "covers the whole image"),
        "pixel limit": (rm + ["--max-pixels", "1000"], "above the limit of"),
        "box outside": (["segment", img, "--box", "0,0,600,100", "-o", out], "lies outside the 512x512 image"),
        "box degenerate": (["segment", img, "--box", "10,10,10,50", "-o", out], "is degenerate"),
        "box not 4 numbers": (["segment", img, "--box", "1,2,3", "-o", out], "must have 4 numbers"),
        "box not whole pixels": (["segment", img, "--box", "1,2,3.5,9", "-o", out], "whole pixels"),
        "segment box covers image": (["segment", img, "--box", "0,0,512,512", "-o", out], "whole 512x512 image"),
        "segment box too small": (["segment", img, "--box", "0,0,5,5", "-o", out], "too small to segment"),
        "paste box outside": (["paste", img, "--object", str(files["cat"]), "--box", "500,500,600,600", "-o", out],
                              "lies outside"),
        "harmonize without mask": (["harmonize", img, "-o", out], "harmonize needs --mask"),
        "harmonize object without box": (["harmonize", img, "--object", str(files["cat"]), "-o", out],
                                         "needs --box"),
        "output exists": (["remove", img, "--mask", mask, "-o", str(existing)], "exists; pass --force"),
        "output is an input": (["remove", img, "--mask", mask, "-o", img, "--force"], "is one of the inputs"),
        "unknown output format": (["remove", img, "--mask", mask, "-o", str(tmp / "out.xyz")],
                                  "cannot tell the output format"),
        "output folder missing": (["remove", img, "--mask", mask, "-o", str(tmp / "no" / "o.png")],
                                  "output folder does not exist"),
        "option out of range": (rm + ["--engine", "classical", "--radius", "0"], "--radius must be"),
        "strength out of range": (["harmonize", img, "--mask", mask, "--engine", "classical", "--strength", "2",
                                   "-o", out], "--strength must be"),
        "negative margin": (rm + ["--margin", "-3"], "--margin must be a whole number of pixels from 0 to 100000"),
        "bad choice": (rm + ["--method", "magic"], "--method must be one of telea, ns, biharmonic"),
        "missing required flag": (["remove", img, "-o", out], "required"),
    }


BAD_INPUTS = [
    "missing image", "image is a directory", "corrupt image", "missing mask", "mask size differs", "empty mask",
    "mask covers everything", "pixel limit", "box outside", "box degenerate", "box not 4 numbers",
    "box not whole pixels", "segment box covers image", "segment box too small", "paste box outside",
    "harmonize without mask", "harmonize object without box", "output exists", "output is an input",
    "unknown output format", "output folder missing", "option out of range", "strength out of range",
    "negative margin", "bad choice", "missing required flag",
]


def test_every_bad_input_is_tested(files, tmp_path) -> None:
    assert sorted(_bad_inputs(files, tmp_path)) == sorted(BAD_INPUTS)


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_each_bad_input_is_one_line_nonzero_no_traceback(capsys, files, tmp_path, name) -> None:
    argv, fragment = _bad_inputs(files, tmp_path)[name]
    before = {k: _digest(v) for k, v in files.items()}
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code not in (0, None)
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert fragment in err and "Traceback" not in err
    assert "error:" in err
    assert not (tmp_path / "out.png").exists()  # nothing written on failure
    assert {k: _digest(v) for k, v in files.items()} == before


@pytest.mark.parametrize("name", ["mask size differs", "pixel limit"])
def test_errors_in_a_real_process(files, tmp_path, name) -> None:
    argv, fragment = _bad_inputs(files, tmp_path)[name]
    res = subprocess.run([sys.executable, "-m", "diffcompose", *argv], capture_output=True, text=True)
    assert res.returncode != 0 and res.stderr.count("\n") == 1 and fragment in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
