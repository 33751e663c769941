"""The public pipelines' denoising and ours, on the same tiny random weights and seeds, within 1/255.

v1: ``pipeline_PowerPaint.StableDiffusionInpaintPipeline`` (the fine-tuned inpainting UNet with the
task-token text encoder); v2: ``pipeline_PowerPaint_Brushnet_CA`` (the public ``BrushNetModel`` and
PowerPaint's own UNet, holding our tiny model's weights: loading them strictly also checks that every
key family of the branch maps one to one). Inputs as the public demo builds them (v2: the image with
its hole painted black, the white-is-hole mask, the global seed set first) at the working size, so
that both run the same number of steps on the same latents; ours is the engine's per-window method.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import powerpaint_public
from powerpaint_public import plain_tokenizer, public_text_encoder, scene

engine, public, tiny_root = powerpaint_public.engine, powerpaint_public.public, powerpaint_public.tiny_root  # the shared fixtures
from diffcompose.methods.powerpaint.prompts import task_prompts
from diffcompose.progress import RunContext

STEPS, SEED = 3, 7
DEMO_TASK = {"context": "object-removal", "object": "text-guided", "shape": "shape-guided"}


def _ours(engine, task: str, version: int, image, hole, **opts) -> np.ndarray:
    run = RunContext(SEED)
    values = {"version": version, "steps": STEPS, "scheduler": "ddim", "guidance_scale": 7.5, **opts}
    if task == "context":
        return engine._remove(image=image, mask=hole, options=engine.options("remove", values), ctx=run)
    return engine._inpaint(image=image, mask=hole, prompt="a red chair", negative_prompt="",
                           options=engine.options("inpaint", {"mode": task, **values}), ctx=run)[0]


def _scheduler(pp):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(dict(pp.sd.scheduler.config))


def _close(ours: np.ndarray, public: np.ndarray) -> None:
    theirs = np.round(np.clip(public, 0, 1) * 255.0)
    diff = np.abs(ours.astype(np.float64) - theirs)
    assert diff.max() <= 1.0, f"max |ours - public| = {diff.max()} / 255"


@pytest.mark.slow
@pytest.mark.parametrize("task,t", [("context", 1.0), ("object", 1.0), ("shape", 0.4)])
def test_v1_denoising_matches_the_public_pipeline(public, engine, tmp_path, task, t) -> None:
    pp = engine.model_for(1)
    tok, text = public_text_encoder(public, pp.task_encoder, plain_tokenizer(pp.sd.root / "tokenizer", tmp_path))
    pipe = public.v1.StableDiffusionInpaintPipeline(
        vae=pp.sd.vae, text_encoder=text, tokenizer=tok, unet=pp.sd.unet, scheduler=_scheduler(pp),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    image, hole = scene()
    prompt = "" if task == "context" else "a red chair"
    a, b, na, nb = public.add_task(prompt, "", DEMO_TASK[task], "ppt-v1")
    out = pipe(promptA=a, promptB=b, tradoff=t, tradoff_nag=t, negative_promptA=na, negative_promptB=nb,
               image=Image.fromarray(image), mask=Image.fromarray((hole * 255).astype(np.uint8)).convert("RGB"),
               height=64, width=64, guidance_scale=7.5, num_inference_steps=STEPS,
               generator=torch.Generator().manual_seed(SEED), output_type="np").images[0]
    fitting = {"fitting_degree": t} if task == "shape" else {}
    _close(_ours(engine, task, 1, image, hole, **fitting), out)


def _public_v2(public, engine, tmp_path):
    pp = engine.model_for(2)
    tok, text = public_text_encoder(public, pp.task_encoder, plain_tokenizer(pp.sd.root / "tokenizer", tmp_path))
    unet = public.models.UNet2DConditionModel.from_config(dict(pp.sd.unet.config))
    unet.load_state_dict(pp.sd.unet.state_dict())
    brushnet = public.models.BrushNetModel.from_unet(unet)
    brushnet.load_state_dict(pp.brushnet.state_dict())  # strict: every key of ours is the public one
    return public.v2.StableDiffusionPowerPaintBrushNetPipeline(
        vae=pp.sd.vae, text_encoder=pp.sd.text_encoder, text_encoder_brushnet=text, tokenizer=tok,
        unet=unet.eval(), brushnet=brushnet.eval(), scheduler=_scheduler(pp), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)


@pytest.mark.slow
@pytest.mark.parametrize("task,t", [("context", 1.0), ("shape", 0.4)])
def test_v2_denoising_matches_the_public_pipeline(public, engine, tmp_path, task, t) -> None:
    pipe = _public_v2(public, engine, tmp_path)
    image, hole = scene()
    prompt = "" if task == "context" else "a red chair"
    if task == "context":  # the demo's v2 removal suffix (see test_powerpaint_prompts)
        prompt += " empty scene blur"
    a, b, na, nb = public.add_task(prompt, "", DEMO_TASK[task], "ppt-v2")
    black = (image * (1 - hole[..., None])).astype(np.uint8)  # the demo: np_inpimg * (1 - np_inmask)
    torch.manual_seed(SEED)  # the demo's set_seed: the branch's latent is sampled from the global generator
    with torch.no_grad():
        out = pipe(promptA=a, promptB=b, promptU=prompt, tradoff=t, tradoff_nag=t, image=Image.fromarray(black),
                   mask=Image.fromarray((hole * 255).astype(np.uint8)).convert("RGB"), num_inference_steps=STEPS,
                   generator=torch.Generator().manual_seed(SEED), brushnet_conditioning_scale=1.0,
                   negative_promptA=na, negative_promptB=nb, negative_promptU="", guidance_scale=7.5,
                   height=64, width=64, output_type="np").images[0]
    fitting = {"fitting_degree": t} if task == "shape" else {}
    _close(_ours(engine, task, 2, image, hole, **fitting), out)


def test_task_prompts_used_by_the_parity_runs_are_the_engines() -> None:
    """The parity runs feed the public pipelines the demo's strings; the engine builds the same ones."""
    assert task_prompts("context", "", "", 1).positive == ("empty scene blur  P_ctxt",) * 2
    assert task_prompts("shape", "a red chair", "", 2).positive == (" P_shape", " P_ctxt")
