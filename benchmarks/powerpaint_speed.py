"""PowerPaint v1 speed: our denoising step vs the public pipeline's, and a bare SD-inpainting UNet step.

All three run on the *same* module objects (an SD-1.5-inpainting-shaped UNet, SD's VAE, a
CLIP-L-shaped text encoder, all random: the real model's FLOPs without a download), the same
DDIM scheduler, seed and inputs, in one process. A step is the time between two consecutive
per-step events (our progress events, the public pipeline's ``callback``), the median over a
run's steps; runs alternate between the contenders (each leads a round in turn) and the fastest
round counts (robust to other load on a shared machine). The bare step is one guided UNet call on ``[uncond, cond]``
plus the scheduler update, with nothing else: the floor both pipelines sit on.

The public pipeline (open-mmlab/PowerPaint ``pipeline_PowerPaint.py``) is read from the mirror
(``$DIFFCOMPOSE_MIRROR``, default ``/work/.mirror``); without it that row is skipped, saying why.
``--shape tiny`` runs the test-sized model (the suite's smoke run)::

    .venv/bin/python benchmarks/powerpaint_speed.py --shape sd --size 512 --steps 10 --rounds 3   # quiet machine / GPU
    .venv/bin/python benchmarks/powerpaint_speed.py --shape sd --size 256 --steps 4 --rounds 2
    .venv/bin/python benchmarks/powerpaint_speed.py --shape tiny --size 64 --steps 2 --rounds 1    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffcompose.methods.pbe.convert import PBE_UNET_CONFIG, PBE_VAE_CONFIG
from diffcompose.methods.powerpaint.engine import PowerPaintEngine, PowerPaintModel
from diffcompose.methods.powerpaint.prompts import TASK_TOKENS, VECTORS_PER_TOKEN, task_prompts
from diffcompose.methods.powerpaint.tiny import ensure_tiny_powerpaint
from diffcompose.methods.powerpaint.tokens import add_task_words, install_task_vectors
from diffcompose.models.device import pick_device, pick_dtype
from diffcompose.models.loader import SDComponents
from diffcompose.models.tiny import tiny_scheduler_config
from diffcompose.progress import RunContext

MIRROR = Path(os.environ.get("DIFFCOMPOSE_MIRROR", "/work/.mirror")) / "open-mmlab+PowerPaint" / "repo"
#: CLIP ViT-L/14's text tower (SD 1.5's text encoder), the vocabulary set from the tokenizer.
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")


def plain_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(x.split(" ")) for x in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:] if x]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build(shape: str, device: torch.device, dtype: torch.dtype) -> tuple[SDComponents, object]:
    """Our v1 components (task words and vectors added) and the plain text encoder they were made from."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tiny = ensure_tiny_powerpaint() / "v1"
    tokenizer = plain_tokenizer(tiny / "tokenizer")
    torch.manual_seed(0)
    if shape == "sd":
        unet, vae = UNet2DConditionModel(**PBE_UNET_CONFIG), AutoencoderKL(**PBE_VAE_CONFIG)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), eos_token_id=len(tokenizer) - 1,
                                            bos_token_id=len(tokenizer) - 2, pad_token_id=len(tokenizer) - 1, **CLIP_L))
    else:
        unet = UNet2DConditionModel.from_pretrained(str(tiny / "unet"))
        vae = AutoencoderKL.from_pretrained(str(tiny / "vae"))
        cfg = CLIPTextModel.from_pretrained(str(tiny / "text_encoder")).config
        text = CLIPTextModel(CLIPTextConfig(**{**cfg.to_dict(), "vocab_size": len(tokenizer)}))
    plain = copy.deepcopy(text)
    first = add_task_words(tokenizer)[0]
    width = text.config.hidden_size
    install_task_vectors(text, {t: torch.randn(VECTORS_PER_TOKEN, width) for t in TASK_TOKENS}, first)
    for m in (unet, vae, text, plain):
        m.to(device, dtype).eval().requires_grad_(False)
    sd = SDComponents(root=tiny, unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
                      scheduler=DDPMScheduler.from_config(tiny_scheduler_config()), device=device, dtype=dtype)
    return sd, plain


def public_pipeline_class():
    """The public v1 pipeline class from the mirror, or the reason it is not there."""
    if not MIRROR.is_dir():
        return None, f"the public PowerPaint code is not mirrored at {MIRROR} (set DIFFCOMPOSE_MIRROR)"
    root = Path(tempfile.mkdtemp(prefix="powerpaint-public-"))
    data = subprocess.run(["git", "-C", str(MIRROR), "archive", "HEAD", "powerpaint"], check=True,
                          capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(data)).extractall(root, filter="data")
    (root / "powerpaint" / "pipelines" / "__init__.py").write_text("")  # not the ControlNet pipeline
    stub = types.ModuleType("mmengine")
    stub.print_log = lambda *a, **k: None
    sys.modules.setdefault("mmengine", stub)
    sys.path.insert(0, str(root))
    import importlib

    utils = importlib.import_module("powerpaint.utils.utils")
    v1 = importlib.import_module("powerpaint.pipelines.pipeline_PowerPaint")
    return (v1.StableDiffusionInpaintPipeline, utils), ""


#: What a step's time is read from: on the CPU the process's CPU time (with one thread, other jobs on a shared
#: machine do not inflate it), on a GPU the wall clock (after synchronising).
CLOCK = time.perf_counter


def median_step(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def run_ours(engine: PowerPaintEngine, image, hole, steps: int) -> float:
    stamps: list[float] = []
    ctx = RunContext(0, lambda e: stamps.append(CLOCK()))
    opts = engine.options("remove", {"steps": steps, "scheduler": "ddim", "guidance_scale": 7.5})
    engine._remove(image=image, mask=hole, options=opts, ctx=ctx)
    return median_step(stamps[1:] if len(stamps) > steps else stamps)  # the step-0 start event is not a step


def run_public(pipe, image, hole, steps: int, size: int) -> float:
    stamps: list[float] = []
    a, b = task_prompts("context", "", "", 1).positive
    na, nb = task_prompts("context", "", "", 1).negative
    stamps.append(CLOCK())
    with torch.no_grad():
        pipe(promptA=a, promptB=b, negative_promptA=na, negative_promptB=nb, image=Image.fromarray(image),
             mask=Image.fromarray((hole * 255).astype(np.uint8)), height=size, width=size, guidance_scale=7.5,
             num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="latent",
             callback=lambda i, t, z: stamps.append(CLOCK()), callback_steps=1)
    return median_step(stamps[1:])


def run_bare(sd: SDComponents, steps: int, size: int) -> float:
    """One guided 9-channel UNet call and the scheduler update per step, nothing else."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**tiny_scheduler_config())
    sched.set_timesteps(steps)
    h = size // 8
    dev, dt = sd.device, sd.dtype
    z = torch.randn(1, 4, h, h, device=dev, dtype=dt)
    cond = torch.randn(2, 5, h, h, device=dev, dtype=dt)
    ctx = torch.randn(2, 77, sd.unet.config.cross_attention_dim, device=dev, dtype=dt)
    stamps = [CLOCK()]
    with torch.no_grad():
        for t in sched.timesteps:
            eps = sd.unet(torch.cat([torch.cat([z, z]), cond], 1), t, encoder_hidden_states=ctx).sample
            u, c = eps.chunk(2)
            z = sched.step(u + 7.5 * (c - u), t, z).prev_sample
            if dev.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(CLOCK())
    return median_step(stamps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("sd", "tiny"), default="sd")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    device = pick_device(args.device)
    dtype = pick_dtype(device, None)
    global CLOCK
    if device.type == "cpu":
        torch.set_num_threads(1)
        CLOCK = time.process_time
    sd, plain = build(args.shape, device, dtype)
    engine = PowerPaintEngine(device=str(device))
    engine.load()
    engine.versions[1] = PowerPaintModel(1, sd, sd.text_encoder, modules=sd.modules)
    yy, xx = np.mgrid[:args.size, :args.size]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    hole = ((xx - args.size / 2) ** 2 + (yy - args.size / 2) ** 2) <= (args.size / 4) ** 2

    found, why = public_pipeline_class()
    pipe = None
    if found:
        cls, utils = found
        tok = utils.TokenizerWrapper(from_pretrained=str(ensure_tiny_powerpaint() / "v1" / "tokenizer"))
        tok.wrapped = plain_tokenizer(ensure_tiny_powerpaint() / "v1" / "tokenizer")
        if not hasattr(plain, "text_model"):  # transformers 5 flattened CLIPTextModel; the public code reaches in
            plain.__dict__["text_model"] = plain
        utils.add_tokens(tokenizer=tok, text_encoder=plain, placeholder_tokens=list(TASK_TOKENS),
                         initialize_tokens=["a"] * 3, num_vectors_per_token=VECTORS_PER_TOKEN)
        plain.to(device, dtype)
        from diffusers import DDIMScheduler

        pipe = cls(vae=sd.vae, text_encoder=plain, tokenizer=tok, unet=sd.unet,
                   scheduler=DDIMScheduler(**tiny_scheduler_config()), safety_checker=None, feature_extractor=None,
                   requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
    else:
        print(f"public pipeline skipped: {why}")

    print(f"shape {args.shape}, {args.size}x{args.size}, ddim, {args.steps} steps, best of {args.rounds}, "
          f"{device.type} {str(dtype).replace('torch.', '')}, {torch.get_num_threads()} threads, "
          f"{'CPU' if CLOCK is time.process_time else 'wall'} time")
    best = {"ours": [], "public": [], "bare": []}
    runs = {"ours": lambda: run_ours(engine, image, hole, args.steps),
            "public": (lambda: run_public(pipe, image, hole, args.steps, args.size)) if pipe is not None else None,
            "bare": lambda: run_bare(sd, args.steps, args.size)}
    order = [k for k, fn in runs.items() if fn is not None]
    for r in range(args.rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:  # each contender leads in turn
            best[name].append(runs[name]())
        row = "  ".join(f"{k} {min(v) * 1e3:.1f} ms" for k, v in best.items() if v)
        print(f"round {r + 1}: {row}")
    ours, bare = min(best["ours"]), min(best["bare"])
    line = f"per step: ours {ours * 1e3:.1f} ms, bare UNet {bare * 1e3:.1f} ms (ours/bare {ours / bare:.2f})"
    if best["public"]:
        public = min(best["public"])
        line += f", public {public * 1e3:.1f} ms, ratio ours/public {ours / public:.2f}"
    print(line)


if __name__ == "__main__":
    main()
