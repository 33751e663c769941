"""The Uni-paint engine on the tiny model: the tuning phase (progress, cancel, a pristine loaded UNet),
the opt-in stroke, when the attention control applies, the converter, and real photos through the
CLI, ``api.run`` and batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).parents[2]))
sys.path.insert(0, str(Path(__file__).parents[1] / "pbe"))
import conftest  # noqa: E402
from diffcompose import api  # noqa: E402
from diffcompose.batch import read_results, run_batch  # noqa: E402
from diffcompose.cli.main import main  # noqa: E402
from diffcompose.errors import Cancelled, InputError  # noqa: E402
from diffcompose.inputs import load_image, load_mask  # noqa: E402
from diffcompose.methods.registry import resolve_engine  # noqa: E402
from diffcompose.methods.unipaint import attention  # noqa: E402
from diffcompose.progress import CancelToken  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402

FAST = {"steps": 2, "resolution": 64}


def first(result) -> np.ndarray:
    """The first image of a run's result (one image, or a list of them)."""
    return np.asarray(result[0] if isinstance(result, list) else result)


@pytest.fixture(scope="module")
def photo():
    rng = np.random.RandomState(1)
    image = (rng.rand(80, 96, 3) * 255).astype(np.uint8)
    mask = np.zeros((80, 96), bool)
    mask[20:60, 30:70] = True
    stroke = np.zeros_like(image)
    stroke[30:50, 40:60] = (250, 40, 40)
    return {"image": image, "mask": mask, "stroke": stroke}


def run(task, photo, **kw):
    inputs = {"image": photo["image"], "mask": photo["mask"]}
    if task == "inpaint":
        inputs["prompt"] = "a red ball"
    if task == "paint":
        inputs["reference"] = photo["image"][::-1].copy()
    return api.run(task, inputs, engine="unipaint", model="tiny", device="cpu", **{**FAST, **kw})


def test_the_tuning_reports_its_phase_first_cancels_within_a_step_and_leaves_the_model_alone(photo) -> None:
    events = []
    run("remove", photo, tune_steps=2, on_progress=events.append)
    # the engine core's start event (step 0), then the tuning's phase, then the sampler's
    assert [(e.task, e.step, e.total) for e in events] == [("remove", 0, 0), ("tune", 1, 2), ("tune", 2, 2),
                                                           ("remove", 1, 2), ("remove", 2, 2)]
    token, seen = CancelToken(), []

    def cancel_on_first_tuning_step(event):
        seen.append(event)
        if event.task == "tune":
            token.cancel()

    with pytest.raises(Cancelled):
        run("remove", photo, tune_steps=5, on_progress=cancel_on_first_tuning_step, cancel=token)
    assert [(e.task, e.step) for e in seen] == [("remove", 0), ("tune", 1)]


def test_a_job_tunes_a_copy_so_the_next_job_starts_from_the_loaded_weights(photo) -> None:
    first = run("remove", photo, tune_steps=2, seed=4)
    again = run("remove", photo, tune_steps=2, seed=4)  # the same engine, already loaded and used once
    untuned = run("remove", photo, tune_steps=0, seed=4)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(untuned))  # the tuning changes the fill


def test_the_stroke_is_opt_in_for_inpaint(photo) -> None:
    assert resolve_engine("auto", "inpaint", ("stroke",))[0] == "unipaint"
    with pytest.raises(InputError, match="takes no stroke"):
        api.run("inpaint", {"image": photo["image"], "mask": photo["mask"], "prompt": "x", "stroke": photo["stroke"]},
                engine="sd-inpaint", model="tiny")
    with pytest.raises(InputError, match="no coloured pixel inside the region"):
        api.run("inpaint", {"image": photo["image"], "mask": photo["mask"], "prompt": "x",
                            "stroke": np.zeros_like(photo["stroke"])}, engine="unipaint", model="tiny", **FAST)
    plain = first(run("inpaint", photo, tune_steps=0))
    stroked = api.run("inpaint", {"image": photo["image"], "mask": photo["mask"], "prompt": "a red ball",
                                  "stroke": photo["stroke"]}, engine="unipaint", model="tiny", tune_steps=0,
                      stroke_start=0.5, **FAST)
    assert not np.array_equal(plain, first(stroked))


def test_masked_attention_applies_only_to_guided_sampling(photo, monkeypatch) -> None:
    calls = []
    original = attention.mask_probabilities

    def counting(probs, region, cross):
        calls.append(cross)
        return original(probs, region, cross)

    monkeypatch.setattr(attention, "mask_probabilities", counting)
    run("remove", photo, tune_steps=1)  # unconditional: scale 1, the public unguided call has no mask
    assert calls == []
    run("inpaint", photo, tune_steps=1)  # guided: self and cross layers, never during the tuning
    assert set(calls) == {True, False}
    calls.clear()
    run("inpaint", photo, tune_steps=0, masked_attention=False)
    assert calls == []


# ----------------------------------------------------------------------------- converter

def ldm_checkpoint(root: Path) -> dict:
    """The tiny model in the original LDM layout (UNet and VAE keys via Paint-by-Example's test mapping)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from test_pbe_convert import unet_to_ldm, vae_to_ldm
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    vae = AutoencoderKL.from_pretrained(str(root / "vae"))
    attn_up = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    state = {"model.diffusion_model." + unet_to_ldm(k, unet.config.layers_per_block, attn_up): v
             for k, v in unet.state_dict().items()}
    levels = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        if "mid.attn_1" in vae_to_ldm(k, levels) and v.ndim == 2:
            v = v[:, :, None, None]
        state["first_stage_model." + vae_to_ldm(k, levels)] = v
    text = CLIPTextModel.from_pretrained(str(root / "text_encoder"))
    state |= {"cond_stage_model.transformer." + k: v for k, v in text.state_dict().items()}
    state |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7),
              "betas": torch.zeros(1000), "alphas_cumprod": torch.zeros(1000)}
    return state


def test_convert_maps_every_key_family_and_refuses_unknown_ones(tmp_path) -> None:
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from diffcompose.models.tiny import ensure_tiny_model
    from diffcompose.methods.unipaint.convert import convert_unipaint

    root = ensure_tiny_model()
    state = ldm_checkpoint(root)
    ckpt = tmp_path / "sd.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    out = convert_unipaint(ckpt, tmp_path / "out", like=root)
    a = UNet2DConditionModel.from_pretrained(str(out / "unet")).state_dict()
    b = UNet2DConditionModel.from_pretrained(str(root / "unet")).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    engine_out = api.run("remove", {"image": np.zeros((64, 64, 3), np.uint8), "mask": np.pad(np.ones((20, 20), bool),
                                                                                            22)},
                         engine="unipaint", model=str(out), device="cpu", tune_steps=0, **FAST)
    engine_tiny = api.run("remove", {"image": np.zeros((64, 64, 3), np.uint8), "mask": np.pad(np.ones((20, 20), bool),
                                                                                             22)},
                          engine="unipaint", model="tiny", device="cpu", tune_steps=0, **FAST)
    assert np.array_equal(np.asarray(engine_out), np.asarray(engine_tiny))
    save_file({**{k: v.contiguous() for k, v in state.items()}, "cond_stage_model.mapper.w": torch.zeros(1)},
              str(tmp_path / "extra.safetensors"))
    with pytest.raises(InputError, match="no SD 1.x part: cond_stage_model.mapper.w"):
        convert_unipaint(tmp_path / "extra.safetensors", tmp_path / "out2", like=root)
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("first_stage_model.")},
              str(tmp_path / "novae.safetensors"))
    with pytest.raises(InputError, match="no 'first_stage_model.\\*' weights"):
        convert_unipaint(tmp_path / "novae.safetensors", tmp_path / "out3", like=root)


# ----------------------------------------------------------------------------- real photos

def test_real_photos_through_the_cli_the_api_and_batch(testdata: Path, tmp_path: Path) -> None:
    case = next(iter(conftest.testdata_cases("text_inpaint")), None)
    paint = next((c for c in conftest.testdata_cases("composition") if "reference" in c["files"]), None)
    removal = next(iter(conftest.testdata_cases("removal")), None)
    if case is None or paint is None or removal is None:
        pytest.skip("no text_inpaint, composition or removal case")
    files = case["files"]
    img = load_image(files["image"])
    m = load_mask(files["mask"], (img.shape[1], img.shape[0]))
    stroke = np.zeros_like(img)
    stroke[m] = (40, 200, 60)
    Image.fromarray(stroke).save(tmp_path / "stroke.png")
    out = tmp_path / "out.png"
    argv = ["inpaint", str(files["image"]), "--mask", str(files["mask"]), "--prompt", case.get("prompt") or "a plant",
            "--stroke", str(tmp_path / "stroke.png"), "-o", str(out), "--engine", "unipaint", "--model", "tiny",
            "--steps", "2", "--tune-steps", "1", "--resolution", "64", "--device", "cpu"]
    assert main(argv) == 0
    outside = ~changed_region(m, default_margin(img.shape))
    got = load_image(out)
    assert got.shape == img.shape and np.array_equal(got[outside], img[outside])

    pf = paint["files"]
    result = api.run("paint", {"image": pf["image"], "mask": pf["mask"], "reference": pf["reference"]},
                     engine="unipaint", model="tiny", device="cpu", tune_steps=1, exemplar_word="x", **FAST)
    pimg = load_image(pf["image"])
    pm = load_mask(pf["mask"], (pimg.shape[1], pimg.shape[0]))
    keep = ~changed_region(pm, default_margin(pimg.shape))
    assert np.array_equal(first(result)[keep], pimg[keep])

    rf = removal["files"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "rm", "task": "remove", "engine": "unipaint", "model": "tiny",
                                    "inputs": {"image": str(rf["image"]), "mask": str(rf["mask"])},
                                    "options": {**FAST, "tune_steps": 1}}) + "\n")
    run_batch(manifest, tmp_path / "batch")
    rows = read_results(tmp_path / "batch")
    assert [r["status"] for r in rows] == ["ok"], rows


def test_http_takes_the_stroke_upload_and_picks_unipaint(photo) -> None:
    import io

    from diffcompose.server import schema
    from diffcompose.server.validate import build_submission

    def png(a) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    files = {"image": png(photo["image"]), "mask": png(photo["mask"].astype(np.uint8) * 255),
             "stroke": png(photo["stroke"])}
    sub = build_submission({"task": "inpaint", "prompt": "a ball", "model": "tiny"}, files, max_pixels=None)
    assert sub.engine == "unipaint" and sub.job.arrays["stroke"].shape == photo["image"].shape
    with pytest.raises(InputError, match="engine 'sd-inpaint' takes no stroke"):
        build_submission({"task": "inpaint", "prompt": "a ball", "engine": "sd-inpaint"}, files, max_pixels=None)
    inputs = {i["name"]: i for t in schema.tasks() if t["name"] == "inpaint" for i in t["inputs"]}
    assert inputs["stroke"]["engines"] == ["unipaint"]


def test_the_stroke_is_cut_to_the_window_with_the_image(photo, monkeypatch) -> None:
    from diffcompose.methods.unipaint.engine import UnipaintEngine

    seen = {}
    original = UnipaintEngine._inpaint

    def spy(self, **kw):
        seen.update(kw)
        return original(self, **kw)

    monkeypatch.setattr(UnipaintEngine, "_inpaint", spy)
    big = {k: np.kron(v, np.ones((4, 4) + (1,) * (v.ndim - 2), v.dtype)) for k, v in photo.items()}  # 320x384
    api.run("inpaint", {"image": big["image"], "mask": big["mask"], "prompt": "a ball", "stroke": big["stroke"]},
            engine="unipaint", model="tiny", device="cpu", tune_steps=0, **FAST)
    assert seen["stroke"].shape == seen["image"].shape and seen["image"].shape[0] < 320
    inside = seen["stroke"][seen["mask"]]
    assert (inside == (250, 40, 40)).all(axis=-1).mean() > 0.2  # the strokes came along, inside the region


def test_a_tuning_after_another_accelerate_run_in_the_process(photo) -> None:
    """accelerate's state is process-wide: a trainer's bf16 run before must not make the tuning fail."""
    from accelerate import Accelerator

    from diffcompose.methods.unipaint.tuning import reset_accelerate

    try:
        Accelerator(cpu=True, mixed_precision="bf16")  # the process's first (tunings leave no state behind)
        events = []
        run("remove", photo, tune_steps=1, on_progress=events.append)
        assert [e.task for e in events if e.step] == ["tune", "remove", "remove"]  # the start event aside
        Accelerator(cpu=True, mixed_precision="bf16")  # and a trainer after it still chooses its own
    finally:
        reset_accelerate()  # leave the process's state as this test found it: none
