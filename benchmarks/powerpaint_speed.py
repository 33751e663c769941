"""PowerPaint speed, v1 and v2: our denoising step vs the public pipelines', and a bare SD-inpainting UNet step.

Everything runs in one process on the *same* module objects (an SD-1.5-inpainting-shaped UNet,
SD's VAE, CLIP-L-shaped text encoders, and for v2 an SD-1.5 base UNet sharing those tensors plus
a BrushNet_CA branch, all random: the real models' FLOPs without a download), the same DDIM
scheduler, seed and inputs. Contenders: v1 ours and public (``pipeline_PowerPaint.py``), v2 ours
and public (``pipeline_PowerPaint_Brushnet_CA.py``, the public ``UNet2DConditionModel`` and
``BrushNetModel`` holding our tensors), and the bare step. A step is the time between two consecutive
per-step events (our progress events, the public pipeline's ``callback``), the median over a
run's steps; runs alternate between the contenders (each leads a round in turn) and the fastest
round counts (robust to other load on a shared machine). The bare step is one guided UNet call on ``[uncond, cond]``
plus the scheduler update, with nothing else: the floor both pipelines sit on.

The public pipelines (open-mmlab/PowerPaint) are read from the mirror (``$DIFFCOMPOSE_MIRRORS``,
default ``/work/.mirror``, found as the tests find it); without it those rows are skipped, saying why. ``--versions 1`` or
``2`` runs one version only.
``--shape tiny`` runs the test-sized model (the suite's smoke run)::

    .venv/bin/python benchmarks/powerpaint_speed.py --shape sd --size 512 --steps 3 --rounds 2    # CPU: ~20 min
    .venv/bin/python benchmarks/powerpaint_speed.py --shape sd --size 512 --steps 10 --rounds 3   # GPU
    .venv/bin/python benchmarks/powerpaint_speed.py --shape sd --size 256 --steps 4 --rounds 2
    .venv/bin/python benchmarks/powerpaint_speed.py --shape tiny --size 64 --steps 2 --rounds 1    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import io
import json
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

REPO = Path(__file__).resolve().parents[1]
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


def build_v2(v1: SDComponents, plain) -> PowerPaintModel:
    """Our v2: a base UNet shaped like v1's with 4 input channels (v1's tensors, conv_in's first 4
    channels: no second copy in memory), a BrushNet_CA branch of that shape, ``plain`` as the base
    text encoder and v1's task-token encoder as the branch's."""
    from diffusers import UNet2DConditionModel

    from diffcompose.methods.brushnet.model import BrushNetModel, randomize_zero_convs

    with torch.device("meta"):
        base = UNet2DConditionModel(**{**dict(v1.unet.config), "in_channels": 4})
    state = dict(v1.unet.state_dict())
    state["conv_in.weight"] = state["conv_in.weight"][:, :4]
    base.load_state_dict(state, assign=True)
    torch.manual_seed(1)
    branch = randomize_zero_convs(BrushNetModel.from_unet(base.config, cross_attention=True), 2)
    branch.to(v1.device, v1.dtype).eval().requires_grad_(False)
    sd = SDComponents(root=v1.root.with_name("v2"), unet=base.eval(), vae=v1.vae, text_encoder=plain,
                      tokenizer=v1.tokenizer, scheduler=v1.scheduler, device=v1.device, dtype=v1.dtype)
    return PowerPaintModel(2, sd, v1.text_encoder, branch, modules=[*sd.modules, branch, v1.text_encoder])


def public_package():
    """The public ``powerpaint`` package's utils, v1 and v2 pipelines and models from the mirror, or the reason
    it is not there."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import mirror  # where the tests find the mirrors

    repo = mirror("open-mmlab/PowerPaint")
    if not repo.is_dir():
        return None, f"the public PowerPaint code is not mirrored at {repo} (set DIFFCOMPOSE_MIRRORS)"
    root = Path(tempfile.mkdtemp(prefix="powerpaint-public-"))
    data = subprocess.run(["git", "-C", str(repo), "archive", "HEAD", "powerpaint"], check=True,
                          capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(data)).extractall(root, filter="data")
    (root / "powerpaint" / "pipelines" / "__init__.py").write_text("")  # not the ControlNet pipeline
    stub = types.ModuleType("mmengine")
    stub.print_log = lambda *a, **k: None
    sys.modules.setdefault("mmengine", stub)
    sys.path.insert(0, str(root))
    import importlib

    return types.SimpleNamespace(
        utils=importlib.import_module("powerpaint.utils.utils"),
        v1=importlib.import_module("powerpaint.pipelines.pipeline_PowerPaint"),
        v2=importlib.import_module("powerpaint.pipelines.pipeline_PowerPaint_Brushnet_CA"),
        models=importlib.import_module("powerpaint.models")), ""


def public_pipelines(pub, sd: SDComponents, plain, v2: PowerPaintModel | None, versions: list[int]) -> dict:
    """The public pipelines on our modules: the wrapped tokenizer and a task-token text encoder made
    by the public ``add_tokens`` from a copy of ``plain``; v2's public UNet and branch hold our
    tensors (``assign``: the same storage)."""
    from diffusers import DDIMScheduler

    tiny_tok = ensure_tiny_powerpaint() / "v1" / "tokenizer"
    tok = pub.utils.TokenizerWrapper(from_pretrained=str(tiny_tok))
    tok.wrapped = plain_tokenizer(tiny_tok)
    task_text = copy.deepcopy(plain)
    if not hasattr(task_text, "text_model"):  # transformers 5 flattened CLIPTextModel; the public code reaches in
        task_text.__dict__["text_model"] = task_text
    pub.utils.add_tokens(tokenizer=tok, text_encoder=task_text, placeholder_tokens=list(TASK_TOKENS),
                         initialize_tokens=["a"] * 3, num_vectors_per_token=VECTORS_PER_TOKEN)
    task_text.to(sd.device, sd.dtype)
    common = dict(vae=sd.vae, tokenizer=tok, scheduler=DDIMScheduler(**tiny_scheduler_config()), safety_checker=None,
                  feature_extractor=None, requires_safety_checker=False)
    pipes = {}
    if 1 in versions:
        pipes[1] = pub.v1.StableDiffusionInpaintPipeline(text_encoder=task_text, unet=sd.unet, **common)
    if 2 in versions:
        with torch.device("meta"):
            unet = pub.models.UNet2DConditionModel(**dict(v2.sd.unet.config))
            branch = pub.models.BrushNetModel(**{k: v for k, v in v2.brushnet.config.items() if not k.startswith("_")})
        unet.load_state_dict(v2.sd.unet.state_dict(), assign=True)
        branch.load_state_dict(v2.brushnet.state_dict(), assign=True)  # strict: the same keys as ours
        pipes[2] = pub.v2.StableDiffusionPowerPaintBrushNetPipeline(
            text_encoder=plain, text_encoder_brushnet=task_text, unet=unet.eval(), brushnet=branch.eval(), **common)
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


#: What a step's time is read from: on the CPU the process's CPU time (with one thread, other jobs on a shared
#: machine do not inflate it), on a GPU the wall clock (after synchronising).
CLOCK = time.perf_counter
SYNC = lambda: None  # noqa: E731  (torch.cuda.synchronize on a GPU)


def stamp(stamps: list[float]) -> None:
    SYNC()
    stamps.append(CLOCK())


def median_step(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def run_ours(engine: PowerPaintEngine, version: int, image, hole, steps: int) -> float:
    stamps: list[float] = []
    ctx = RunContext(0, lambda e: stamp(stamps))
    opts = engine.options("remove", {"version": version, "steps": steps, "scheduler": "ddim", "guidance_scale": 7.5})
    engine._remove(image=image, mask=hole, options=opts, ctx=ctx)
    return median_step(stamps[1:] if len(stamps) > steps else stamps)  # the step-0 start event is not a step


def run_public(pipe, version: int, image, hole, steps: int, size: int) -> float:
    """The public removal as the demo calls it (v2: the image with its hole black, the plain prompt
    ``empty scene blur`` on the base UNet)."""
    stamps: list[float] = []
    prompts = task_prompts("context", "", "", version)
    (a, b), (na, nb) = prompts.positive, prompts.negative
    mask = Image.fromarray((hole * 255).astype(np.uint8)).convert("RGB")
    extra = {}
    if version == 2:
        image = np.where(hole[..., None], 0, image).astype(np.uint8)
        extra = dict(promptU=prompts.base, negative_promptU=prompts.base_negative, brushnet_conditioning_scale=1.0)
    stamp(stamps)
    with torch.no_grad():
        pipe(promptA=a, promptB=b, negative_promptA=na, negative_promptB=nb, image=Image.fromarray(image), mask=mask,
             height=size, width=size, guidance_scale=7.5, num_inference_steps=steps,
             generator=torch.Generator().manual_seed(0), output_type="latent",
             callback=lambda i, t, z: stamp(stamps), callback_steps=1, **extra)
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
            stamp(stamps)
    return median_step(stamps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("sd", "tiny"), default="sd")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--versions", type=int, nargs="+", choices=(1, 2), default=[1, 2])
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    device = pick_device(args.device)
    dtype = pick_dtype(device, None)
    global CLOCK, SYNC
    if device.type == "cpu":
        torch.set_num_threads(1)
        CLOCK = time.process_time
    elif device.type == "cuda":
        SYNC = torch.cuda.synchronize
    sd, plain = build(args.shape, device, dtype)
    engine = PowerPaintEngine(device=str(device))
    engine.load()
    engine.versions[1] = PowerPaintModel(1, sd, sd.text_encoder, modules=sd.modules)
    v2 = build_v2(sd, plain) if 2 in args.versions else None
    engine.versions[2] = v2
    yy, xx = np.mgrid[:args.size, :args.size]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    hole = ((xx - args.size / 2) ** 2 + (yy - args.size / 2) ** 2) <= (args.size / 4) ** 2

    pub, why = public_package()
    pipes = public_pipelines(pub, sd, plain, v2, args.versions) if pub else {}
    if not pub:
        print(f"public pipelines skipped: {why}")

    print(f"shape {args.shape}, {args.size}x{args.size}, ddim, {args.steps} steps, best of {args.rounds}, "
          f"{device.type} {str(dtype).replace('torch.', '')}, {torch.get_num_threads()} threads, "
          f"{'CPU' if CLOCK is time.process_time else 'wall'} time")
    runs = {"bare": lambda: run_bare(sd, args.steps, args.size)}
    for v in args.versions:
        runs[f"v{v} ours"] = lambda v=v: run_ours(engine, v, image, hole, args.steps)
        if v in pipes:
            runs[f"v{v} public"] = lambda v=v: run_public(pipes[v], v, image, hole, args.steps, args.size)
    best: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for r in range(args.rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:  # each contender leads in turn
            best[name].append(runs[name]())
        print(f"round {r + 1}: " + "  ".join(f"{k} {min(v) * 1e3:.1f} ms" for k, v in best.items() if v))
    bare = min(best["bare"])
    for v in args.versions:
        ours = min(best[f"v{v} ours"])
        line = f"v{v} per step: ours {ours * 1e3:.1f} ms, bare UNet {bare * 1e3:.1f} ms (ours/bare {ours / bare:.2f})"
        if best.get(f"v{v} public"):
            public = min(best[f"v{v} public"])
            line += f", public {public * 1e3:.1f} ms, ratio ours/public {ours / public:.2f}"
            if v == 2:
                line += f"; BrushNet overhead over the bare step: ours x{ours / bare:.2f}, public x{public / bare:.2f}"
        print(line)


if __name__ == "__main__":
    main()
