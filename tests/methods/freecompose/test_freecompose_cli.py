"""The CLI end to end with ``--model tiny`` on real photos (skipped when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from PIL import Image  # noqa: E402

import conftest  # noqa: E402
from diffcompose.cli.main import main  # noqa: E402
from diffcompose.inputs import load_image, load_mask  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402

TINY = ["--engine", "freecompose", "--model", "tiny", "--iterations", "2", "--band", "0"]


def _case(task: str, *keys: str, size: tuple[int, int] | None = None) -> dict:
    for case in conftest.testdata_cases(task):
        files = case["files"]
        if all(k in files for k in keys) and (size is None or Image.open(files[keys[0]]).size == size):
            return files
    pytest.skip(f"no {task} case with {keys}")


def _still(argv: list[str], out: Path) -> Path:
    """The same command with a step too small to show: the output is the VAE round trip alone."""
    still = out.with_name("still" + out.suffix)
    assert main([*argv[:argv.index("-o") + 1], str(still), *argv[argv.index("-o") + 2:], "--lr", "1e-9"]) == 0
    return still


def _check_background(out: Path, image: Path, mask: Path, still: Path) -> None:
    img, got = load_image(image), load_image(out)
    m = load_mask(mask, (img.shape[1], img.shape[0]))
    assert got.shape == img.shape
    outside = ~changed_region(m, default_margin(img.shape))
    assert np.array_equal(got[outside], img[outside])
    assert not np.array_equal(got[m], load_image(still)[m])  # the optimiser moved the region's pixels


@pytest.mark.slow
def test_cli_remove_real_512_photo(testdata: Path, tmp_path: Path, capsys) -> None:
    files = _case("removal", "image", "mask", size=(512, 512))
    out = tmp_path / "removed.png"
    argv = ["remove", str(files["image"]), "--mask", str(files["mask"]), "-o", str(out), *TINY]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    _check_background(out, files["image"], files["mask"], _still(argv, out))


def test_cli_harmonize_real_composite(testdata: Path, tmp_path: Path) -> None:
    files = _case("harmonization", "composite", "mask", size=(512, 512))
    out = tmp_path / "harmonized.jpg"
    assert main(["harmonize", str(files["composite"]), "--mask", str(files["mask"]), "-o", str(out), *TINY]) == 0
    img, got = load_image(files["composite"]), load_image(out)
    assert got.shape == img.shape


def test_cli_compose_real_photo(testdata: Path, tmp_path: Path) -> None:
    files = _case("composition", "image", "mask")
    img = load_image(files["image"])
    import cv2

    edges = cv2.Canny(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 100, 200)
    edited = tmp_path / "edited.png"
    Image.fromarray(np.roll(edges, 12, axis=1)).save(edited)
    out = tmp_path / "composed.png"
    argv = ["compose", str(files["image"]), "--edited-condition", str(edited), "--mask", str(files["mask"]),
            "--prompt", "A toy.", "-o", str(out), *TINY]
    assert main(argv) == 0
    _check_background(out, files["image"], files["mask"], _still(argv, out))


def test_cli_errors_are_one_line(testdata: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    files = _case("removal", "image", "mask")
    out = tmp_path / "x.png"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["remove", str(files["image"]), "--mask", str(files["mask"]), "-o", str(out),
                 "--engine", "freecompose", "--model", "nobody-here/no-such-model"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and err[-1].startswith("diffcompose: error: model 'nobody-here/no-such-model'")
    assert "--engine classical" in err[-1]
    code = main(["compose", str(files["image"]), "--edited-condition", str(files["mask"]),
                 "--condition-type", "sketch", "-o", str(out), *TINY])
    assert code == 2 and "--condition is required" in capsys.readouterr().err
