"""ObjectStitch end to end on the public repository's own example photos, with the tiny model:
the CLI, ``api.run`` and ``batch`` give the same image for the same seed, the far pixels are the
background's own, and the box is filled. Skips without the test data."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

NAME = "000000049931"


@pytest.fixture
def example(testdata):
    base = testdata / "composition" / "ObjectStitch-Image-Composition" / "examples"
    if not (base / "background" / f"{NAME}.png").is_file():
        pytest.skip("the ObjectStitch example photos are not in the test data")
    box = [int(v) for v in (base / "bbox" / f"{NAME}.txt").read_text().split()[:4]]
    return {"image": base / "background" / f"{NAME}.png", "reference": base / "foreground" / f"{NAME}.png",
            "reference_mask": base / "foreground_mask" / f"{NAME}.png", "box": box}


OPTIONS = {"steps": 2, "resolution": 64}


def test_cli_api_and_batch_agree_on_a_real_photo(example, tmp_path) -> None:
    import diffcompose as dc
    from diffcompose.batch import run_batch
    from diffcompose.cli.main import main
    from diffcompose.inputs import load_image

    api = np.asarray(dc.api.run("insert", {k: v for k, v in example.items()}, engine="objectstitch", model="tiny",
                                seed=4, **OPTIONS))
    background = load_image(example["image"])
    assert api.shape == background.shape
    x0, y0, x1, y1 = example["box"]
    far = np.ones(background.shape[:2], dtype=bool)
    far[max(0, y0 - 40):y1 + 40, max(0, x0 - 40):x1 + 40] = False
    np.testing.assert_array_equal(api[far], background[far])  # pasted back: the far pixels are the photo's own
    assert np.abs(api[y0:y1, x0:x1].astype(int) - background[y0:y1, x0:x1]).mean() > 5  # the box was filled

    out = tmp_path / "cli.png"
    code = main(["insert", str(example["image"]), "--reference", str(example["reference"]), "--reference-mask",
                 str(example["reference_mask"]), "--box", ",".join(map(str, example["box"])), "--engine",
                 "objectstitch", "--model", "tiny", "--seed", "4", "--steps", "2", "--resolution", "64", "-o", str(out)])
    assert code in (0, None)
    np.testing.assert_array_equal(load_image(out), api)

    manifest = tmp_path / "jobs.jsonl"
    inputs = {"image": str(example["image"]), "reference": str(example["reference"]),
              "reference_mask": str(example["reference_mask"]), "box": example["box"]}
    manifest.write_text(json.dumps({"id": "a", "task": "insert", "engine": "objectstitch", "model": "tiny",
                                    "inputs": inputs, "options": OPTIONS, "seed": 4}) + "\n")
    summary = run_batch(manifest, tmp_path / "batch")
    assert "1 ok" in summary.line()
    row = json.loads((tmp_path / "batch" / "results.jsonl").read_text().splitlines()[-1])
    np.testing.assert_array_equal(load_image(tmp_path / "batch" / row["outputs"][0]), api)
