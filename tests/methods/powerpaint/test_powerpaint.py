"""The PowerPaint engine end to end: the outpaint task, the CLI on real photos (far pixels kept bit for
bit), the task picked per request, ``auto`` with and without local weights, batch, progress."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

import powerpaint_public
from powerpaint_public import scene

engine, public, tiny_root = powerpaint_public.engine, powerpaint_public.public, powerpaint_public.tiny_root  # the shared fixtures
from diffcompose.errors import InputError
from diffcompose.methods.tasks import aspect_extend, parse_aspect, parse_extend, prepare
from diffcompose.regions import changed_region, default_margin

FAST = {"steps": 2, "resolution": 64}


# ------------------------------------------------------------------ the outpaint task

def test_outpaint_grows_the_canvas_and_marks_the_new_area() -> None:
    img = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    job = prepare("outpaint", {"image": img, "extend": "3,1,5,2"})
    assert job.size == (28, 13)
    assert np.array_equal(job.image[1:11, 3:23], img)  # the original at (left, top)
    assert job.paste_mask.sum() == 28 * 13 - 20 * 10 and not job.paste_mask[1:11, 3:23].any()
    assert job.arrays["extend"] == (3, 1, 5, 2)


@pytest.mark.parametrize("size,aspect,sides", [((200, 100), "1:1", (0, 50, 0, 50)), ((100, 100), "16:9", (39, 0, 39, 0)),
                                               ((101, 100), "3:1", (99, 0, 100, 0)), ((90, 160), "9:16", (0, 0, 0, 0))])
def test_aspect_grows_the_shorter_sides_evenly(size, aspect, sides) -> None:
    if sum(sides) == 0:
        with pytest.raises(InputError, match="already has that aspect"):
            aspect_extend(size, parse_aspect(aspect))
        return
    got = aspect_extend(size, parse_aspect(aspect))
    assert got == sides
    w, h = size[0] + got[0] + got[2], size[1] + got[1] + got[3]
    assert abs(w / h - parse_aspect(aspect)) < 1 / min(w, h)


@pytest.mark.parametrize("extend", ["-1,0,0,0", "0,0,0,0", "0", "nan", "1,2", "1e9", "a,b,c,d", "1.5,0,0,0",
                                    (0, 0, float("inf"), 0), True, b"1,2,3,4"])
def test_bad_extents_are_one_line(extend) -> None:
    with pytest.raises(InputError) as err:
        prepare("outpaint", {"image": np.zeros((10, 20, 3), np.uint8), "extend": extend})
    assert "\n" not in str(err.value) and "--extend" in str(err.value)


@pytest.mark.parametrize("aspect", ["0:1", "x", "1:2:3", "nan:1", "-4:3", "1:100000"])
def test_bad_aspects_are_one_line(aspect) -> None:
    with pytest.raises(InputError) as err:
        prepare("outpaint", {"image": np.zeros((10, 20, 3), np.uint8), "aspect": aspect})
    assert "\n" not in str(err.value)


def test_a_canvas_beyond_the_pixel_limit_is_refused_before_it_is_built() -> None:
    with pytest.raises(InputError, match="over the limit of 1000 .*--max-pixels"):
        prepare("outpaint", {"image": np.zeros((10, 20, 3), np.uint8), "extend": "10,10,10,10"}, max_pixels=1000)
    with pytest.raises(InputError, match="exactly one of --extend"):
        prepare("outpaint", {"image": np.zeros((10, 20, 3), np.uint8), "extend": "1", "aspect": "1:1"})
    assert parse_extend([1, 2, 3, 4]) == (1, 2, 3, 4) and parse_extend("7") == (7, 7, 7, 7)


# ------------------------------------------------------------------ the engine

@pytest.mark.parametrize("version", [1, 2])
def test_outpaint_keeps_the_original_bit_for_bit_beyond_the_seam(engine, version) -> None:
    img, _ = scene(96, 72)
    out = np.asarray(engine.run("outpaint", image=img, extend="0,0,40,16", version=version, **FAST))
    assert out.shape == (72 + 16, 96 + 40, 3)
    job = prepare("outpaint", {"image": img, "extend": "0,0,40,16"})
    far = ~changed_region(job.paste_mask, default_margin(job.image.shape))
    assert far.any() and np.array_equal(out[far], job.image[far])
    assert not np.array_equal(out[job.paste_mask], job.image[job.paste_mask])  # the new area was painted
    exact = np.asarray(engine.run("outpaint", image=img, extend="0,0,40,16", margin=0, version=version, **FAST))
    assert np.array_equal(exact[:72, :96], img)  # --margin 0: every original pixel


def test_each_task_samples_with_its_own_prompts(engine) -> None:
    """remove (context), inpaint object, inpaint shape at two fitting degrees: four different fills."""
    img, hole = scene()
    outs = [np.asarray(engine.run("remove", image=img, mask=hole, **FAST)),
            np.asarray(engine.run("inpaint", image=img, mask=hole, prompt="a red chair", **FAST)),
            np.asarray(engine.run("inpaint", image=img, mask=hole, prompt="a red chair", mode="shape", **FAST)),
            np.asarray(engine.run("inpaint", image=img, mask=hole, prompt="a red chair", mode="shape",
                                  fitting_degree=0.2, **FAST))]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not np.array_equal(outs[i], outs[j]), (i, j)


def test_task_words_in_user_text_are_refused(engine) -> None:
    img, hole = scene()
    with pytest.raises(InputError, match="P_obj"):
        engine.run("inpaint", image=img, mask=hole, prompt="a P_obj here", **FAST)
    with pytest.raises(InputError, match="--prompt"):
        engine.options("remove", {"prompt": "p_ctxt"})


def test_a_folder_without_the_asked_version_is_one_line(tmp_path) -> None:
    from diffcompose.errors import WeightsMissingError
    from diffcompose.methods.powerpaint.engine import PowerPaintEngine
    from diffcompose.methods.powerpaint.tiny import write_tiny_v1

    write_tiny_v1(tmp_path / "v1only")
    engine = PowerPaintEngine(device="cpu", model=str(tmp_path / "v1only")).load()
    with pytest.raises(WeightsMissingError, match="holds PowerPaint v1, not v2; pass --version 1"):
        engine.model_for(2)


# ------------------------------------------------------------------ auto

def test_auto_offers_powerpaint_for_removal_only_with_local_weights(monkeypatch, tmp_path, caplog) -> None:
    from diffcompose.methods import registry
    from diffcompose.methods.powerpaint import weights
    from diffcompose.methods.powerpaint.options import DEFAULT_MODELS
    from diffcompose.models import device

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv(weights.LOCAL_ENV, raising=False)
    monkeypatch.setattr(device, "accelerator_available", lambda: None)
    name, why = registry.resolve_engine("auto", "remove")
    assert name == "classical" and "powerpaint: no PowerPaint weights in the hub cache" in why
    monkeypatch.setattr(device, "accelerator_available", lambda: "cuda")
    name, why = registry.resolve_engine("auto", "remove")  # a GPU alone does not make it download weights
    assert name != "powerpaint" and "powerpaint: no PowerPaint weights in the hub cache" in why

    for repo, files in ((DEFAULT_MODELS[1], weights.PUBLIC_V1_FILES), (weights.V1_BASE, weights.BASE_FILES)):
        snap = tmp_path / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / "abc"
        for f in files:
            (snap / f).parent.mkdir(parents=True, exist_ok=True)
            (snap / f).write_text("{}")
    assert registry.resolve_engine("auto", "remove") == \
        ("powerpaint", "highest priority for remove (20) and a CUDA device is present")
    monkeypatch.setattr(device, "accelerator_available", lambda: None)
    name, why = registry.resolve_engine("auto", "remove")
    assert name == "classical" and "powerpaint wants a CUDA or MPS device" in why

    import diffcompose.api as api

    caplog.set_level(logging.INFO, logger="diffcompose.api")
    img, hole = scene()
    api.run("remove", {"image": img, "mask": hole}, engine="auto", method="telea")
    assert any("engine: classical" in r.getMessage() and "powerpaint" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ CLI and batch on real photos


@pytest.mark.slow
def test_cli_remove_and_outpaint_on_a_real_photo(testdata, tiny_root, tmp_path) -> None:
    from diffcompose.cli.main import main

    case = json.loads((testdata / "manifest.json").read_text())
    first = next(c for c in case if c["task"] == "removal")
    image, mask = testdata / first["files"]["image"], testdata / first["files"]["mask"]
    out = tmp_path / "removed.png"
    assert main(["remove", str(image), "--mask", str(mask), "--engine", "powerpaint", "--model", "tiny", "--device",
                 "cpu", "--steps", "2", "-o", str(out)]) == 0
    src = np.asarray(Image.open(image).convert("RGB"))
    job = prepare("remove", {"image": image, "mask": mask})
    far = ~changed_region(job.paste_mask, default_margin(src.shape))
    res = np.asarray(Image.open(out))
    assert res.shape == src.shape and np.array_equal(res[far], src[far])

    grown = tmp_path / "grown.png"
    assert main(["outpaint", str(image), "--aspect", "16:9", "--engine", "powerpaint", "--model", "tiny", "--device",
                 "cpu", "--steps", "2", "--resolution", "128", "--version", "2", "-o", str(grown)]) == 0
    job = prepare("outpaint", {"image": image, "aspect": "16:9"})
    res = np.asarray(Image.open(grown))
    assert res.shape[:2] == job.image.shape[:2] and abs(res.shape[1] / res.shape[0] - 16 / 9) < 0.01
    far = ~changed_region(job.paste_mask, default_margin(job.image.shape))
    assert np.array_equal(res[far], job.image[far])


@pytest.mark.slow
def test_batch_runs_outpaint_items(tmp_path) -> None:
    from diffcompose.cli.main import main

    img, _ = scene(80, 60)
    Image.fromarray(img).save(tmp_path / "a.png")
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"id": "wide", "task": "outpaint", "engine": "powerpaint", "model": "tiny",
                                    "inputs": {"image": "a.png", "extend": "0,0,48,0"},
                                    "options": FAST}) + "\n")
    assert main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    from diffcompose.batch.manifest import OUTPUTS

    res = np.asarray(Image.open(tmp_path / "out" / OUTPUTS / "wide.png"))
    assert res.shape == (60, 128, 3)


def test_the_public_v2_folder_asks_to_be_converted(tmp_path) -> None:
    from diffcompose.errors import WeightsMissingError
    from diffcompose.methods.powerpaint.convert import V2_BRUSHNET
    from diffcompose.methods.powerpaint.engine import PowerPaintEngine

    (tmp_path / V2_BRUSHNET).parent.mkdir(parents=True)
    (tmp_path / V2_BRUSHNET).write_bytes(b"")
    engine = PowerPaintEngine(device="cpu", model=str(tmp_path)).load()
    with pytest.raises(WeightsMissingError, match="convert it first") as err:
        engine.model_for(2)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_http_outpaint_returns_the_grown_canvas() -> None:
    import io

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from diffcompose.methods.manager import EngineManager
    from diffcompose.server import Settings, create_app
    from diffcompose.server.jobs import JobManager

    img, _ = scene(64, 48)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    settings = Settings()
    jobs = JobManager(EngineManager(), workers=settings.workers, queue_size=settings.queue_size,
                      result_ttl=settings.result_ttl, max_finished=settings.max_results,
                      preview_interval=settings.preview_interval)
    try:
        client = TestClient(create_app(settings, jobs=jobs), base_url="http://127.0.0.1:7860")
        request = {"task": "outpaint", "engine": "powerpaint", "model": "tiny", "extend": "16,0,16,8",
                   "options": FAST}
        r = client.post("/api/run", files={"image": ("image.png", buf.getvalue(), "image/png")},
                        data={"request": json.dumps(request)})
        assert r.status_code == 200, r.text
        out = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
        assert out.shape == (56, 96, 3)
        bad = dict(request, extend="0,0,0,0")
        r = client.post("/api/run", files={"image": ("image.png", buf.getvalue(), "image/png")},
                        data={"request": json.dumps(bad)})
        body = r.json()  # in the request's words, blamed on its field
        assert r.status_code == 400 and body["error"].startswith("extend grows no side") and body["field"] == "extend"
    finally:
        jobs.shutdown()


def test_the_fitting_degree_reaches_the_shape_context_only(engine, monkeypatch) -> None:
    """CI's pin of the fitting degree (the parity runs need the mirror): shape mode interpolates with it,
    the object task and removal with 1."""
    seen = []
    original = type(engine).task_context

    def spy(self, pp, prompts, t, guided):
        seen.append((prompts.positive, t))
        return original(self, pp, prompts, t, guided)

    monkeypatch.setattr(type(engine), "task_context", spy)
    img, hole = scene()
    engine.run("inpaint", image=img, mask=hole, prompt="a vase", mode="shape", fitting_degree=0.3, **FAST)
    engine.run("inpaint", image=img, mask=hole, prompt="a vase", fitting_degree=0.3, **FAST)
    engine.run("remove", image=img, mask=hole, **FAST)
    assert seen == [(("a vase P_shape", "a vase P_ctxt"), 0.3), (("a vase P_obj",) * 2, 1.0),
                    (("empty scene blur  P_ctxt",) * 2, 1.0)]


def test_v2_wiring_without_the_mirror(engine, monkeypatch) -> None:
    """CI's pins of v2's wiring (the parity runs need the mirror): the branch reads the task context and
    the latent of the image with its hole black, sampled from a generator of its own seeded with the
    seed; the base UNet reads the plain prompt's context."""
    import torch

    import diffcompose.methods.brushnet.model as branch_module
    from diffcompose.methods.powerpaint.prompts import task_prompts
    from diffcompose.methods.powerpaint.tokens import encode_text
    from diffcompose.models import codec
    from diffcompose.models.device import make_generator
    from diffcompose.progress import RunContext

    pp = engine.model_for(2)
    seen: dict[str, list] = {"branch": [], "unet": [], "encode": []}
    branch_forward, unet_call, encode = type(pp.brushnet).forward, branch_module.unet_with_residuals, codec.encode

    def spy_branch(self, sample, timestep, encoder_hidden_states, conditioning, conditioning_scale=1.0):
        seen["branch"].append(encoder_hidden_states)
        return branch_forward(self, sample, timestep, encoder_hidden_states, conditioning, conditioning_scale)

    def spy_unet(unet, sample, timestep, encoder_hidden_states, residuals):
        seen["unet"].append(encoder_hidden_states)
        return unet_call(unet, sample, timestep, encoder_hidden_states, residuals)

    def spy_encode(vae, images, generator=None, samples=1):
        state = None if generator is None else generator.get_state().clone()
        z = encode(vae, images, generator, samples)
        seen["encode"].append((images.clone(), state, z))
        return z

    monkeypatch.setattr(type(pp.brushnet), "forward", spy_branch)
    monkeypatch.setattr(branch_module, "unet_with_residuals", spy_unet)
    monkeypatch.setattr(codec, "encode", spy_encode)
    img, hole = scene()
    engine._remove(image=img, mask=hole, options=engine.options("remove", {"version": 2, "steps": 1}),
                   ctx=RunContext(5))
    prompts = task_prompts("context", "", "", 2)
    assert torch.equal(seen["branch"][0], engine.task_context(pp, prompts, 1.0, True))
    base = torch.cat([encode_text(pp.sd.tokenizer, pp.sd.text_encoder, t, engine.device) for t in ("", prompts.base)])
    assert torch.equal(seen["unet"][0], base)
    images, state, z = seen["encode"][0]
    assert images.shape[0] == 1 and z.shape[0] == 2  # encoded once, one posterior sample per guidance half
    assert not torch.equal(z[0], z[1])
    assert torch.all(images[:, :, hole] == -1) and torch.equal(images[0, :, ~hole],
                                                                codec.images_to_tensor(img)[0, :, ~hole])
    assert torch.equal(state, make_generator(5).get_state())  # a fresh generator of the seed


def _written_out_v1(pp, context, image: np.ndarray, hole: np.ndarray, steps: int, guidance: float, seed: int):
    """``pipeline_PowerPaint.py``'s v1 sampling restated (its steps 5-10 and the loop): the image in
    [-1, 1] with the hole zeroed (``image * (mask < 0.5)``), the initial noise drawn before the
    masked image's posterior sample from one generator, the mask resized to the latent (nearest),
    the UNet on ``[z_t, mask, z_masked]`` with ``context`` (``[negative, positive]``), then the
    guidance and the DDIM update."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDIMScheduler

    sd = pp.sd
    g = torch.Generator().manual_seed(seed)
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    mask = torch.from_numpy(hole.astype(np.float32))[None, None]
    sched = DDIMScheduler.from_config(dict(sd.scheduler.config))
    sched.set_timesteps(steps)
    h, w = image.shape[0] // 8, image.shape[1] // 8
    with torch.no_grad():
        latents = torch.randn((1, 4, h, w), generator=g) * sched.init_noise_sigma
        z_masked = sd.vae.encode(img * (mask < 0.5)).latent_dist.sample(g) * sd.vae.config.scaling_factor
        cond = torch.cat([F.interpolate(mask, size=(h, w)), z_masked], 1).repeat(2, 1, 1, 1)
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents] * 2), t)
            uncond, text = sd.unet(torch.cat([x, cond], 1), t, encoder_hidden_states=context).sample.chunk(2)
            latents = sched.step(uncond + guidance * (text - uncond), t, latents).prev_sample
        out = sd.vae.decode(latents / sd.vae.config.scaling_factor).sample
    return (out / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("task,t", [("context", 1.0), ("shape", 0.4)])
def test_v1_denoising_matches_the_written_out_public_loop(engine, task, t) -> None:
    """CI's pin of v1's sampling (the parity runs need the mirror): ours within 1/255 of the public loop
    restated, with the task context of the pinned prompt tests."""
    from diffcompose.methods.powerpaint.prompts import task_prompts
    from diffcompose.progress import RunContext

    pp = engine.model_for(1)
    img, hole = scene()
    prompt = "" if task == "context" else "a red chair"
    values = {"version": 1, "steps": 3, "scheduler": "ddim", "guidance_scale": 7.5}
    if task == "context":
        ours = engine._remove(image=img, mask=hole, options=engine.options("remove", values), ctx=RunContext(7))
    else:
        ours = engine._inpaint(image=img, mask=hole, prompt=prompt, negative_prompt="", ctx=RunContext(7),
                               options=engine.options("inpaint", {**values, "mode": task, "fitting_degree": t}))[0]
    context = engine.task_context(pp, task_prompts(task, prompt, "", 1), t, guided=True)
    want = np.round(_written_out_v1(pp, context, img, hole, 3, 7.5, 7) * 255.0)
    assert np.abs(ours.astype(np.float64) - want).max() <= 1.0
    assert np.abs(ours.astype(np.float64) - np.round(_written_out_v1(pp, context, img, hole, 3, 1.5, 7) * 255)
                  ).max() > 2  # guidance shows: the comparison can fail
