"""Paint-by-Sketch end to end on real photos with the tiny model: the CLI, ``api.run``, batch and the HTTP
request check; an engine that takes no sketch refuses one in one line, ``auto`` picks one that does; the
sketch is cut to the engine's window with the image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from conftest import testdata_cases as cases_of  # noqa: E402
from diffcompose import api  # noqa: E402
from diffcompose.cli.main import main  # noqa: E402
from diffcompose.errors import InputError  # noqa: E402
from diffcompose.inputs import load_image, load_mask  # noqa: E402
from diffcompose.methods.pbsketch.extract import canny_edges, thicken  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--model", "tiny", "--steps", "2", "--resolution", "64"]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Paint-by-Example's first example (scene, mask, reference) and a sketch: the scene's own edges
    in the region, thickened (the lines the fill should follow), written as files."""
    cases = [c for c in cases_of("composition") if {"image", "mask", "reference"} <= set(c["files"])]
    if not cases:
        pytest.skip("../shared/testdata is not present")
    files = cases[0]["files"]
    image = load_image(files["image"], "image")
    mask = load_mask(files["mask"], (image.shape[1], image.shape[0]))
    sketch = thicken(canny_edges(image) / 255.0, 3) * mask
    folder = tmp_path_factory.mktemp("pbsketch-e2e")
    Image.fromarray((sketch * 255).astype(np.uint8)).save(folder / "sketch.png")
    return {"image": files["image"], "mask": files["mask"], "reference": files["reference"],
            "sketch": folder / "sketch.png", "folder": folder, "array": image, "hole": mask}


def _kept_outside(out: np.ndarray, case) -> None:
    image, hole = case["array"], case["hole"]
    assert out.shape == image.shape
    outside = ~changed_region(hole, default_margin(image.shape))
    assert np.array_equal(out[outside], image[outside])


@pytest.mark.slow
def test_cli_paints_along_the_sketch_and_other_engines_refuse_it(case, capsys) -> None:
    out = case["folder"] / "cli.png"
    args = ["paint", str(case["image"]), "--mask", str(case["mask"]), "--reference", str(case["reference"]),
            "--sketch", str(case["sketch"])]
    assert main(args + ["-o", str(out), "--sketch-steps", "0.5"] + FAST) == 0  # auto: the engine that takes it
    _kept_outside(np.asarray(Image.open(out)), case)
    capsys.readouterr()
    assert main(args + ["-o", str(case["folder"] / "x.png"), "--engine", "pbe"] + FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["diffcompose: error: engine 'pbe' takes no sketch for paint; engines that do: pbsketch"]


@pytest.mark.slow
def test_api_insert_with_a_sketch_into_a_box(case) -> None:
    hole = case["hole"]
    ys, xs = np.nonzero(hole)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    out = api.run("insert", {"image": case["image"], "box": box, "reference": case["reference"],
                             "sketch": case["sketch"]}, model="tiny", steps=2, resolution=64, seed=3)
    assert out.size == (case["array"].shape[1], case["array"].shape[0])
    with pytest.raises(InputError, match="engine 'anydoor' takes no sketch for insert"):
        api.run("insert", {"image": case["image"], "box": box, "reference": case["reference"],
                           "sketch": case["sketch"]}, engine="anydoor", model="tiny")


@pytest.mark.slow
def test_batch_runs_a_sketch_line(case, tmp_path) -> None:
    from diffcompose.batch import read_results, run_batch

    line = {"id": "s", "task": "paint", "options": {"steps": 2, "resolution": 64}, "model": "tiny",
            "inputs": {k: str(case[k]) for k in ("image", "mask", "reference", "sketch")}}
    (tmp_path / "m.jsonl").write_text(json.dumps(line) + "\n")
    run_batch(tmp_path / "m.jsonl", tmp_path / "out")
    (row,) = read_results(tmp_path / "out")
    assert row["status"] == "ok" and row["engine"] == "pbsketch", row
    _kept_outside(np.asarray(Image.open(tmp_path / "out" / row["outputs"][0])), case)


def test_http_request_picks_the_engine_that_takes_the_sketch(case) -> None:
    from diffcompose.server import schema
    from diffcompose.server.validate import build_submission

    files = {k: Path(case[k]).read_bytes() for k in ("image", "mask", "reference", "sketch")}
    sub = build_submission({"task": "paint", "model": "tiny"}, files, max_pixels=None)
    assert sub.engine == "pbsketch" and sub.job.arrays["sketch"].shape == case["hole"].shape
    with pytest.raises(InputError, match="engine 'pbe' takes no sketch"):
        build_submission({"task": "paint", "engine": "pbe"}, files, max_pixels=None)
    inputs = {i["name"]: i for t in schema.tasks() if t["name"] == "insert" for i in t["inputs"]}
    assert inputs["sketch"]["engines"] == ["pbsketch"] and "engines" not in inputs["mask"]


def test_the_sketch_is_cut_to_the_window_with_the_image(case, monkeypatch) -> None:
    from diffcompose.methods.pbsketch.engine import PaintBySketchEngine

    seen = {}
    engine = PaintBySketchEngine(model="tiny", device="cpu")
    original = PaintBySketchEngine._sketch

    def spy(self, sketch, hole, image, options):
        seen.update(sketch=sketch, hole=hole, image=image)
        return original(self, sketch, hole, image, options)

    monkeypatch.setattr(PaintBySketchEngine, "_sketch", spy)
    engine.paint(case["image"], case["mask"], case["reference"], sketch=case["sketch"], steps=1, resolution=64)
    assert seen["sketch"].shape == seen["hole"].shape == seen["image"].shape[:2] == (64, 64)
    assert (seen["sketch"] * seen["hole"]).max() > 0.5  # the strokes came along, inside the hole
    with pytest.raises(InputError, match="no strokes inside the region"):
        empty_inside = np.zeros(case["hole"].shape, np.uint8)
        empty_inside[:8, :8] = 255  # a stroke in a corner, far from the region
        assert not case["hole"][:60, :60].any()
        engine.paint(case["image"], case["mask"], case["reference"], sketch=empty_inside, steps=1, resolution=64)
