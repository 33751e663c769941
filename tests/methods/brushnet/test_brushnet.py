"""The BrushNet engine: the public pipeline's loop restated (CI), the blending step, the one-pass branch,
the base option, errors, the CLI on a real photo, batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import conftest  # noqa: E402
from diffcompose.errors import InputError, WeightsMissingError  # noqa: E402
from diffcompose.inputs import load_image, load_mask  # noqa: E402
from diffcompose.methods.brushnet.blend import blend  # noqa: E402
from diffcompose.methods.brushnet.tiny import build_tiny_brushnet  # noqa: E402
from diffcompose.progress import RunContext  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402

from test_brushnet_parity import _photo, reference_branch, reference_unet  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    from diffcompose.methods.brushnet.engine import BrushNetEngine

    e = BrushNetEngine(model="tiny", device="cpu", dtype="float32").load()
    e.base(e.options("inpaint", {}))
    return e


def _run(engine, img, mask, seed=3, **opts):
    options = engine.options("inpaint", {"steps": 3, "scheduler": "ddim", "resolution": 64, **opts})
    return engine._inpaint(image=img, mask=mask, prompt="a red ball", negative_prompt="", options=options,
                           ctx=RunContext(seed))


@torch.no_grad()
def reference_pipeline(sd, branch, img, mask, *, steps, guidance, scale, seed):
    """The public ``StableDiffusionBrushNetPipeline.__call__`` with the example script's inputs, restated
    (CI's pin where the fork is absent): the hole painted black; the mask image white on the hole,
    normalised to [-1, 1] and read as ``sum over channels < 0`` (1 = keep), nearest-resized to the
    latents; conditioning ``[masked latent, mask]``; ``[uncond, cond]`` through branch and UNet; DDIM."""
    import torch.nn.functional as F
    from diffusers import DDIMScheduler

    g = torch.Generator().manual_seed(seed)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 * 2 - 1  # noqa: E731
    image = to_t(img * (1 - mask[:, :, None].astype(np.uint8)))
    original_mask = to_t(np.repeat(mask[:, :, None].astype(np.uint8) * 255, 3, axis=2))
    original_mask = (original_mask.sum(1)[:, None] < 0).float()
    tok = sd.tokenizer(["", "a red ball"], padding="max_length", max_length=sd.tokenizer.model_max_length,
                       truncation=True, return_tensors="pt")
    embeds = sd.text_encoder(tok.input_ids)[0]
    guided = guidance > 1
    if not guided:
        embeds = embeds[1:]
    sched = DDIMScheduler.from_config(sd.scheduler.config)
    sched.set_timesteps(steps)
    h, w = img.shape[0] // 8, img.shape[1] // 8
    latents = torch.randn((1, 4, h, w), generator=g) * sched.init_noise_sigma
    cond = sd.vae.encode(image).latent_dist.mean * sd.vae.config.scaling_factor
    cond = torch.cat([cond, F.interpolate(original_mask, size=(h, w))], 1)
    if guided:
        cond = torch.cat([cond] * 2)
    for t in sched.timesteps:
        x = sched.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
        down, mid, up = reference_branch(branch, x, t, embeds, cond, scale)
        eps = reference_unet(sd.unet, x, t, embeds, down, mid, up)
        if guided:
            u, c = eps.chunk(2)
            eps = u + guidance * (c - u)
        latents = sched.step(eps, t, latents, eta=0.0, generator=g).prev_sample
    out = sd.vae.decode(latents / sd.vae.config.scaling_factor).sample
    return ((out[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@torch.no_grad()
def test_a_windows_conditioning_is_the_black_holed_latent_and_the_keep_mask(engine):
    """The branch's 5 channels for a window, as the public example script and pipeline make them: the VAE
    latent of the photo with the hole painted black (pixel 0, -1 after normalising), then the mask image
    read as ``sum < 0`` after normalising (1 = keep), nearest-resized to the latents."""
    import torch.nn.functional as F

    img, mask = _photo()
    sd = engine.sd
    cond = engine.conditioning(img, mask, sd, (8, 8))
    black = torch.from_numpy(np.where(mask[:, :, None], 0, img)).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    z = sd.vae.encode(black).latent_dist.mean * sd.vae.config.scaling_factor
    mask_image = torch.from_numpy(mask.astype(np.float32) * 255)[None, None].repeat(1, 3, 1, 1) / 255 * 2 - 1
    keep = F.interpolate((mask_image.sum(1, keepdim=True) < 0).float(), size=(8, 8))
    torch.testing.assert_close(cond, torch.cat([z, keep], 1), atol=1e-5, rtol=1e-5)
    assert 0 < float(keep.mean()) < 1


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_denoising_matches_the_written_out_public_pipeline(engine, guidance):
    """Ours (batched guidance, the branch run once for both halves) == the public loop restated, within 1/255."""
    img, mask = _photo()
    ours = _run(engine, img, mask, seed=21, guidance_scale=guidance, conditioning_scale=0.6, blend=False)[0]
    ref = reference_pipeline(engine.sd, engine.branch, img, mask, steps=3, guidance=guidance, scale=0.6, seed=21)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    other = reference_pipeline(engine.sd, engine.branch, img, mask, steps=3, guidance=guidance, scale=0.0, seed=21)
    assert np.abs(other.astype(int) - ref.astype(int)).max() > 2  # the branch's residuals show in the image


def test_blend_is_the_public_scripts_blending_step():
    """``test_brushnet.py``'s ``blended`` branch, restated: blur(mask * 255, 21x21, sigma from the size) / 255,
    united with the mask, original * (1 - m) + generated * m, truncated to uint8."""
    import cv2

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    hole = np.zeros((48, 64), bool)
    hole[10:30, 20:45] = True
    mask_np = 1.0 * hole[:, :, None]
    blurred = cv2.GaussianBlur(mask_np * 255, (21, 21), 0) / 255
    mask_np = 1 - (1 - mask_np) * (1 - blurred[:, :, None])
    want = (original * (1 - mask_np) + generated * mask_np).astype(np.uint8)
    got = blend(original, generated, hole)
    assert np.array_equal(got, want)
    assert np.array_equal(got[hole], generated[hole])  # the region itself is untouched
    assert np.array_equal(got[:, :5], original[:, :5])  # far pixels are the photo's
    band = np.zeros_like(hole)
    band[8:32, 18:47] = True
    band &= ~hole
    assert (got[band] != original[band]).any()  # a soft seam just outside


def test_the_engine_blends_by_default_and_can_be_told_not_to(engine):
    """Blending on (default): the window's own pixels far outside the hole, the raw decode in the hole;
    off: the VAE's round trip everywhere."""
    img, mask = _photo()
    raw = _run(engine, img, mask, blend=False)[0]
    blended = _run(engine, img, mask)[0]
    assert np.array_equal(blended, blend(img, raw, mask))
    far = ~changed_region(mask, 15)  # the 21x21 kernel reaches 10 pixels per axis: 14.2 on the diagonal
    assert np.array_equal(blended[far], img[far])
    assert not np.array_equal(raw[far], img[far])
    assert np.array_equal(blended[mask], raw[mask])


def test_one_branch_pass_for_both_guidance_halves_equals_the_doubled_batch(engine):
    """The attention-free branch ignores the text: running it on one half and repeating the residuals gives
    what the public pipeline's doubled batch gives (the speed-up of docs/engines/brushnet.md)."""
    sd = engine.sd
    z = torch.randn(2, 4, 8, 8)
    cond = torch.cat([torch.randn(2, 4, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()], 1)
    context = torch.randn(4, 77, sd.text_encoder.config.hidden_size)
    fast = engine.model_fn(sd.unet, context, cond, 0.8, guided=True)
    x = torch.cat([z, z])
    with torch.no_grad():
        want = reference_unet(sd.unet, x, torch.tensor(500), context,
                              *reference_branch(engine.branch, x, torch.tensor(500), context, torch.cat([cond, cond]),
                                                0.8))
        torch.testing.assert_close(fast(x, torch.tensor(500)), want, atol=1e-5, rtol=1e-5)
    assert not engine.branch.has_cross_attention


def test_a_cross_attention_branch_reads_the_prompt(engine):
    """PowerPaint v2's variant: the branch sees each half's own text, so it runs on the whole batch."""
    sd = engine.sd
    saved = engine.branch
    engine.branch = build_tiny_brushnet(dict(sd.unet.config), cross_attention=True, seed=4)
    try:
        z = torch.randn(1, 4, 8, 8)
        cond = torch.cat([torch.randn(1, 4, 8, 8), torch.ones(1, 1, 8, 8)], 1)
        context = torch.randn(2, 77, sd.text_encoder.config.hidden_size)
        with torch.no_grad():
            a = engine.model_fn(sd.unet, context, cond, 1.0, guided=True)(torch.cat([z, z]), torch.tensor(400))
            b = reference_unet(sd.unet, torch.cat([z, z]), torch.tensor(400), context,
                               *reference_branch(engine.branch, torch.cat([z, z]), torch.tensor(400), context,
                                                 torch.cat([cond, cond]), 1.0))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    finally:
        engine.branch = saved


def test_conditioning_scale_zero_is_the_plain_base_model(engine):
    sd = engine.sd
    x = torch.randn(2, 4, 8, 8)
    context = torch.randn(2, 77, sd.text_encoder.config.hidden_size)
    cond = torch.randn(1, 5, 8, 8)
    with torch.no_grad():
        plain = sd.unet(x, 300, encoder_hidden_states=context).sample
        assert torch.equal(engine.model_fn(sd.unet, context, cond, 0.0, guided=True)(x, torch.tensor(300)), plain)
        assert not torch.allclose(engine.model_fn(sd.unet, context, cond, 1.0, guided=True)(x, torch.tensor(300)),
                                  plain)


def test_base_option_errors_and_missing_weights(engine, tmp_path, photo):
    from diffcompose.methods.brushnet.engine import BrushNetEngine
    from diffcompose.models.tiny import ensure_tiny_inpainting_model

    with pytest.raises(InputError, match="inpainting one"):
        engine.base(engine.options("inpaint", {"base": str(ensure_tiny_inpainting_model())}))
    engine.base(engine.options("inpaint", {}))  # back to the model folder's own base
    with pytest.raises(WeightsMissingError, match="no BrushNet weights are given"):
        BrushNetEngine(device="cpu").load()
    with pytest.raises(WeightsMissingError, match="not a BrushNet folder"):
        BrushNetEngine(device="cpu", model=str(tmp_path)).load()
    for bad in ({"blend_kernel": 4}, {"conditioning_scale": 9.0}, {"base": " "}):
        with pytest.raises(InputError):
            engine.options("inpaint", bad)


def test_a_published_branch_folder_with_another_base(engine, tmp_path):
    """``--model`` a bare branch folder (the public layout: config.json + weights) and ``--base`` an SD folder."""
    from diffcompose.methods.brushnet.engine import BrushNetEngine
    from diffcompose.models.tiny import ensure_tiny_model

    engine.branch.save_pretrained(tmp_path / "branch")
    e = BrushNetEngine(device="cpu", model=str(tmp_path / "branch")).load()
    img, mask = _photo()
    with pytest.raises(WeightsMissingError):  # the default base is a hub id: offline in tests, one line
        e.base(e.options("inpaint", {}))
    out = _run(e, img, mask, base=str(ensure_tiny_model()))[0]
    assert out.shape == img.shape


def test_cli_end_to_end_on_a_real_photo_and_batch(testdata, tmp_path, capsys):
    from diffcompose.batch import read_results, run_batch
    from diffcompose.cli.main import main

    case = next(c for c in conftest.testdata_cases("text_inpaint") if "BrushNet" in str(c["files"]["image"]))
    files = case["files"]
    argv = ["inpaint", str(files["image"]), "--mask", str(files["mask"]), "--prompt", case["prompt"],
            "-o", str(tmp_path / "out.png"), "--engine", "brushnet", "--model", "tiny", "--steps", "2",
            "--resolution", "64", "--device", "cpu", "--conditioning-scale", "0.5"]
    assert main(argv) == 0
    img, got = load_image(files["image"]), load_image(tmp_path / "out.png")
    m = load_mask(files["mask"], (img.shape[1], img.shape[0]))
    assert got.shape == img.shape
    outside = ~changed_region(m, default_margin(img.shape))
    assert np.array_equal(got[outside], img[outside])
    assert not np.array_equal(got[m], img[m])
    capsys.readouterr()
    assert main(argv[:-2] + ["--blend-kernel", "4", "--force"]) == 2
    assert "--blend-kernel" in capsys.readouterr().err
    inputs = {"image": str(files["image"]), "mask": str(files["mask"]), "prompt": case["prompt"]}
    line = {"task": "inpaint", "engine": "brushnet", "inputs": inputs,
            "model": "tiny", "options": {"steps": 2, "resolution": 64, "conditioning_scale": 0.5}}
    (tmp_path / "m.jsonl").write_text(json.dumps(line) + "\n")
    summary = run_batch(tmp_path / "m.jsonl", tmp_path / "batch", device="cpu")
    assert summary.ok == 1, read_results(tmp_path / "batch")
    batch = load_image(tmp_path / "batch" / read_results(tmp_path / "batch")[0]["outputs"][0])
    assert np.array_equal(batch, got)  # the same seed (0) and options as the CLI run
