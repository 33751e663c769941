"""The SAM engine (``segment`` from clicks and/or a box) with a tiny random SAM built in code.

A random SAM's masks mean nothing, so these tests pin what does not depend on the weights:
the prompts reach the model at the right coordinates (in a window too), the preprocessing
matches the reference processor's, the mask comes back at the input's size (inside the box
when there is one), runs repeat exactly, bad points fail in one line before any work, and
missing weights fail in one line. ``tests/methods/test_engine_contract.py`` runs the shared contract.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import diffcompose as dc
import diffcompose.api as api
from diffcompose.errors import InputError, WeightsMissingError
from diffcompose.methods.tasks import prepare

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")

W, H = 150, 90  # not square, not the model's input size
BOX = (40, 20, 110, 75)


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    img[((xx - 75) / 25) ** 2 + ((yy - 47) / 18) ** 2 < 1] = (230, 40, 40)
    return img


@pytest.fixture(scope="module")
def engine():
    import torch

    from diffcompose.methods.sam.engine import SamEngine

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SamEngine(device="cpu", model="tiny").load()
    torch.set_num_threads(before)


@pytest.fixture
def prompts(engine, monkeypatch):
    """The prompt tensors each call hands to ``SamModel.forward``."""
    seen: list[dict] = []
    forward = engine.sam.forward

    def spy(*args, **kw):
        seen.append({k: v.clone() for k, v in kw.items() if k.startswith("input_")})
        seen[-1]["multimask_output"] = kw.get("multimask_output")
        return forward(*args, **kw)

    monkeypatch.setattr(engine.sam, "forward", spy)
    return seen


def _scaled(xy, w: int, h: int) -> np.ndarray:
    """Image coordinates in SAM's 64-pixel input: longest side to 64, each axis by its rounded size."""
    k = 64 / max(w, h)
    return np.asarray(xy, float) * np.array([round(w * k) / w, round(h * k) / h] * (len(np.ravel(xy)) // 2))


def _mask(out) -> np.ndarray:
    assert out.mode == "L" and out.size == (W, H)
    a = np.asarray(out)
    assert set(np.unique(a)) <= {0, 255}
    return a > 127


def test_box_gives_a_mask_of_the_input_size_inside_the_box(engine, prompts) -> None:
    m = _mask(engine.run("segment", image=_image(), box=BOX))
    inside = np.zeros((H, W), bool)
    inside[BOX[1]:BOX[3], BOX[0]:BOX[2]] = True
    assert m[inside].any() and not m[~inside].any()
    # the box reached SAM scaled to its 64-pixel input, with one mask asked for
    assert np.allclose(prompts[0]["input_boxes"].numpy().ravel(), _scaled(BOX, W, H), atol=1e-4)
    assert "input_points" not in prompts[0] and prompts[0]["multimask_output"] is False


def test_points_give_a_mask_and_reach_the_model_with_their_labels(engine, prompts) -> None:
    m = _mask(engine.run("segment", image=_image(), points="75,47,1;5,5,0"))
    assert m.any()
    got = prompts[0]
    assert np.allclose(got["input_points"].numpy().ravel(), _scaled([75, 47, 5, 5], W, H), atol=1e-4)
    assert got["input_labels"].numpy().ravel().tolist() == [1, 0]
    assert got["multimask_output"] is False  # several points are not ambiguous
    engine.run("segment", image=_image(), points=[[75, 47, 1]])
    assert prompts[1]["multimask_output"] is True  # one click: SAM picks among three candidates


def test_points_are_mapped_into_a_cropped_window(engine, prompts) -> None:
    """With ``crop`` SAM sees a window around the prompts; a point keeps its place in the picture."""
    big_w, big_h = 600, 400
    img = np.random.default_rng(1).integers(0, 255, (big_h, big_w, 3), dtype=np.uint8)
    out = engine.run("segment", image=img, points=[[400, 300, 1], [420, 310, 0]], crop=True, context=1.0)
    assert out.size == (big_w, big_h)
    job = prepare("segment", {"image": img, "points": [[400, 300, 1], [420, 310, 0]]})
    win = engine.window_policy("segment", engine.options("segment", {"crop": True})).plan(job.size, job.region).box
    assert (win.width, win.height) == (63, 43)  # the prompts' 21x11 box plus its context, not the whole image
    want = _scaled([400 - win.x0, 300 - win.y0, 420 - win.x0, 310 - win.y0], win.width, win.height)
    assert np.allclose(prompts[0]["input_points"].numpy().ravel(), want, atol=1e-4)
    whole = engine.run("segment", image=img, points=[[400, 300, 1], [420, 310, 0]])
    assert np.allclose(prompts[1]["input_points"].numpy().ravel(), _scaled([400, 300, 420, 310], big_w, big_h),
                       atol=1e-4)
    assert whole.size == out.size


def test_box_and_points_together(engine, prompts) -> None:
    m = _mask(engine.run("segment", image=_image(), box=BOX, points=[[75, 47, 1]]))
    assert not m[:, :BOX[0]].any() and not m[:BOX[1]].any()
    assert {"input_points", "input_boxes"} <= set(prompts[0])


def test_same_inputs_same_mask_and_the_seed_changes_nothing(engine) -> None:
    """SAM makes no random choice: repeated runs and other seeds give the same mask."""
    a = np.asarray(engine.run("segment", image=_image(), points="75,47,1", seed=1))
    b = np.asarray(engine.run("segment", image=_image(), points="75,47,1", seed=1))
    c = np.asarray(engine.run("segment", image=_image(), points="75,47,1", seed=2))
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_clicks_on_the_same_image_reuse_its_embedding(engine, monkeypatch) -> None:
    """The ViT encoder runs once per image: further clicks only run the prompt encoder and decoder."""
    calls: list[tuple] = []
    encode = engine.sam.get_image_embeddings
    monkeypatch.setattr(engine.sam, "get_image_embeddings", lambda px, **kw: calls.append(px.shape) or encode(px, **kw))
    from diffcompose.methods.sam.preprocess import Preprocessor

    prepared: list[tuple] = []  # nor is the image resized and normalised again
    pixels = Preprocessor.pixels
    monkeypatch.setattr(Preprocessor, "pixels", lambda self, im: prepared.append(im.shape) or pixels(self, im))
    engine.embeddings.clear()
    img = _image()
    first = np.asarray(engine.run("segment", image=img, points="75,47,1"))
    engine.run("segment", image=img, points="75,47,1;5,5,0")
    again = np.asarray(engine.run("segment", image=img, points="75,47,1"))
    assert len(calls) == len(prepared) == 1 and np.array_equal(first, again)
    other = img.copy()
    other[0, 0] += 1  # one pixel differs: a new image
    engine.run("segment", image=other, points="75,47,1")
    assert len(calls) == 2


def test_threshold_moves_the_mask_edge(engine) -> None:
    lo = _mask(engine.run("segment", image=_image(), box=BOX, threshold=-5.0))
    hi = _mask(engine.run("segment", image=_image(), box=BOX, threshold=5.0))
    assert lo.sum() >= hi.sum() and (hi & ~lo).sum() == 0 and lo.sum() > hi.sum()


@pytest.mark.parametrize("points, message", [
    ("500,10,1", "outside the 150x90 image"),
    ("-1,10,1", "outside"),
    ("10,10,2", "label must be 1"),
    ("10,10", "bad point"),
    ("a,b,1", "bad points"),
    ([[float("nan"), 3, 1]], "finite"),
    ("3,inf,1", "finite"),
    ([[True, 3, 1]], "bad point"),
    ([], "1 to 64 points"),
    ([[1, 1, 1]] * 65, "1 to 64 points"),
    ("10,10,0", "at least one object point"),  # background clicks alone say nothing about the object
    (42, "bad points"),
])
def test_bad_points_are_input_errors(points, message) -> None:
    with pytest.raises(InputError, match=message) as exc:
        prepare("segment", {"image": _image(), "points": points})
    assert "\n" not in str(exc.value)


def test_segment_needs_a_box_or_points() -> None:
    with pytest.raises(InputError, match="--box"):
        prepare("segment", {"image": _image()})


def test_grabcut_takes_the_box_and_refuses_points_alone() -> None:
    """The classical engine must not crash on points: with a box it ignores them, alone it says what to do."""
    box_only = dc.segment(_image(), BOX, engine="classical")
    both = api.run("segment", {"image": _image(), "box": BOX, "points": "75,47,1"}, engine="classical")
    assert np.array_equal(np.asarray(box_only), np.asarray(both))
    with pytest.raises(InputError, match="--engine sam"):
        api.run("segment", {"image": _image(), "points": "75,47,1"}, engine="classical")


def test_auto_still_picks_grabcut() -> None:
    """``auto`` must work without SAM's weights (offline, fresh install): GrabCut ranks above SAM."""
    from diffcompose.methods import resolve_engine

    assert resolve_engine("auto", "segment")[0] == "classical"


def test_preprocessing_matches_the_reference_processor() -> None:
    """Resize (longest side), normalise and pad like ``SamImageProcessor``; prompts scaled alike."""
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    from diffcompose.inputs.boxes import Box
    from diffcompose.methods.sam.preprocess import Preprocessor

    img = np.random.default_rng(2).integers(0, 255, (300, 700, 3), dtype=np.uint8)
    ref = SamProcessor(image_processor=SamImageProcessorPil())(
        images=img, input_points=[[[100.0, 50.0]]], input_boxes=[[[10, 20, 300, 200]]], return_tensors="pt")
    x, geo = Preprocessor().pixels(img)
    assert np.abs(x - ref["pixel_values"][0].numpy()).max() < 1e-6
    assert np.allclose(geo.points(np.array([[100.0, 50.0]])), ref["input_points"].numpy().reshape(1, 2))
    assert np.allclose(geo.box(Box(10, 20, 300, 200)), ref["input_boxes"].numpy().ravel())


def test_postprocessing_matches_the_reference_processor() -> None:
    import torch
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    from diffcompose.methods.sam.preprocess import Geometry, logits_to_mask

    logits = torch.from_numpy(np.random.default_rng(3).normal(size=(1, 1, 256, 256)).astype(np.float32))
    logits = torch.nn.functional.avg_pool2d(logits, 9, 1, 4) * 9  # smooth blobs, like a decoder's
    geo = Geometry.of((700, 300), 1024)
    ref = SamImageProcessorPil().post_process_masks([logits], [[300, 700]], [[geo.resized[1], geo.resized[0]]])
    ours = logits_to_mask(logits[0, 0].numpy(), geo, 0.0)
    assert ours.shape == (300, 700)
    assert (ours != ref[0][0, 0].numpy()).mean() < 0.005  # bilinear in OpenCV vs torch: edge pixels only


def test_offline_without_weights_is_one_line(tmp_path, monkeypatch) -> None:
    from diffcompose.methods.sam.engine import SamEngine

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsMissingError) as exc:
        SamEngine(device="cpu").load()
    msg = str(exc.value)
    assert "\n" not in msg and "facebook/sam-vit-base" in msg and "--model DIR" in msg
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(WeightsMissingError, match="missing model.safetensors"):
        SamEngine(device="cpu", model=str(tmp_path / "half")).load()


def test_a_local_checkpoint_directory_loads_like_a_hub_one(tmp_path) -> None:
    """``--model DIR``: config.json + model.safetensors (+ preprocessor_config.json), through the shared loader."""
    from diffcompose.methods.sam.engine import SamEngine
    from diffcompose.methods.sam.tiny import write_tiny_sam

    root = write_tiny_sam(tmp_path / "sam", seed=1)
    (root / "model_index.json").unlink()  # a real checkpoint has none
    engine = SamEngine(device="cpu", model=str(root)).load()
    assert engine.prep.square == 64 and engine.memory_bytes() > 0
    assert _mask(engine.run("segment", image=_image(), box=BOX)).any()


def test_cli_points_and_offline_exit_codes(tmp_path, monkeypatch, capsys) -> None:
    from PIL import Image

    from diffcompose.cli.main import main

    src = tmp_path / "in.png"
    Image.fromarray(_image()).save(src)
    out = tmp_path / "mask.png"
    assert main(["segment", str(src), "--points", "75,47,1;5,5,0", "--engine", "sam", "--model", "tiny",
                 "--device", "cpu", "-o", str(out)]) == 0
    assert Image.open(out).size == (W, H)
    assert main(["segment", str(src), "--points", "75,47,7", "--engine", "sam", "-o", str(tmp_path / "x.png")]) == 2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    capsys.readouterr()
    assert main(["segment", str(src), "--points", "75,47,1", "--engine", "sam", "-o", str(tmp_path / "y.png")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "error" in line]) == 1 and "SAM model" in err[-1]
    assert not (tmp_path / "y.png").exists() and not (tmp_path / "x.png").exists()
