"""BrushNet speed: our denoising step vs the public pipeline's, and the branch's overhead over a bare UNet step.

In one process, on the same random weights (SD-1.5's geometry by default: the same FLOPs as the
published model, no download), per guided denoising step (the time between two consecutive
per-step callbacks: network calls + the scheduler update; the median over a run's steps, the
fastest of ``--rounds`` rounds, runs alternating; on the CPU the process's CPU time with one
thread, so other work on a shared machine does not count):

* **ours**: the engine's model function on the shared loop (the attention-free branch run once
  for both guidance halves, the base UNet on the batched ``[uncond, cond]``);
* **public**: TencentARC's ``StableDiffusionBrushNetPipeline`` (loaded from the fetched mirror as
  ``tests/methods/brushnet/brushnet_public.py`` does; skipped with the reason when absent), its
  branch and UNet sharing our tensors (no copy);
* **bare**: an SD-1.5 inpainting UNet (9 input channels, otherwise the same tensors) on the same
  loop, what the branch's cost is measured against.

The VAE is a small one with SD's 8x stride and the text embeddings are random (neither is part
of a denoising step). Examples::

    .venv/bin/python benchmarks/brushnet_speed.py --size 512 --steps 4 --rounds 2     # SD-1.5 shapes
    .venv/bin/python benchmarks/brushnet_speed.py --small --size 64 --steps 2 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from diffcompose.methods.brushnet.convert import SD15_UNET_CONFIG
from diffcompose.methods.brushnet.engine import BrushNetEngine
from diffcompose.methods.brushnet.model import BrushNetModel, brushnet_conditioning, randomize_zero_convs
from diffcompose.models.device import pick_device, pick_dtype
from diffcompose.models.sampling import denoise, make_scheduler
from diffcompose.models.tiny import tiny_scheduler_config, tiny_unet_config, tiny_vae_config
from diffcompose.progress import RunContext

REPO = Path(__file__).resolve().parents[1]
GUIDANCE = 7.5


def build(small: bool, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Base UNet, branch, a 9-channel inpainting UNet sharing the base's tensors, a small VAE."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    cfg = tiny_unet_config() if small else {**SD15_UNET_CONFIG, "sample_size": 64}

    def place(m: torch.nn.Module) -> torch.nn.Module:
        m = m.to(device) if dtype == torch.float32 else m.to(device, dtype)
        return m.eval().requires_grad_(False)

    unet = place(UNet2DConditionModel(**cfg))
    branch = place(randomize_zero_convs(BrushNetModel.from_unet(unet.config), 1))
    with torch.device("meta"):
        inpaint = UNet2DConditionModel(**{**cfg, "in_channels": 9})
    state = dict(unet.state_dict())
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, w, w[:, :1]], 1)
    inpaint.load_state_dict(state, assign=True)
    vae = place(AutoencoderKL(**tiny_vae_config()))
    return {"cfg": cfg, "unet": unet, "branch": branch, "inpaint": inpaint.eval(), "vae": vae,
            "text_dim": cfg["cross_attention_dim"]}


def public_pipeline(parts: dict[str, Any], fork: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """The fork's pipeline on our tensors (``assign``: the same storage, no copy)."""
    from diffusers import DDIMScheduler

    with torch.device("meta"):
        pub_unet = fork.UNet2DConditionModel(**parts["cfg"])
        pub_branch = fork.BrushNetModel(**{k: v for k, v in parts["branch"].config.items() if not k.startswith("_")})
    pub_unet.load_state_dict(parts["unet"].state_dict(), assign=True)
    pub_branch.load_state_dict(parts["branch"].state_dict(), assign=True)
    pipe = fork.StableDiffusionBrushNetPipeline(
        vae=parts["vae"], text_encoder=None, tokenizer=None, unet=pub_unet.eval(), brushnet=pub_branch.eval(),
        scheduler=DDIMScheduler(**tiny_scheduler_config()), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def step_time(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (a multiple of 64)")
    ap.add_argument("--small", action="store_true", help="the tiny test geometry instead of SD-1.5's (smoke runs)")
    ap.add_argument("--steps", type=int, default=4, help="denoising steps per run (at least 2: a step is timed "
                                                        "between two callbacks)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()
    if args.steps < 2 or args.size % 64:
        ap.error("--steps must be at least 2 and --size a multiple of 64")

    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU time of one thread: comparable however busy the machine is
    parts = build(args.small, device, dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # CPU: this process's CPU time (one thread), robust to other work on a shared machine; GPU: wall time
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    side = args.size // 8
    g = torch.Generator().manual_seed(0)
    context = torch.randn(2, 77, parts["text_dim"], generator=g).to(device, dtype)
    hole = torch.zeros(1, 1, side, side)
    hole[:, :, side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 1
    cond = brushnet_conditioning(torch.randn(1, 4, side, side, generator=g), hole).to(device, dtype)
    cond9 = torch.cat([hole, torch.randn(1, 4, side, side, generator=g)], 1).to(device, dtype)
    cond9 = torch.cat([cond9, cond9])
    engine = BrushNetEngine(device=str(device))
    engine.branch = parts["branch"]

    def loop(model: Callable) -> float:
        stamps: list[float] = []
        sched = make_scheduler("ddim", tiny_scheduler_config())
        sched.set_timesteps(args.steps, device=device)
        latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        ctx = RunContext(0, on_progress=lambda e: (sync(), stamps.append(clock())) if e.step else None)
        with torch.no_grad():
            denoise(model, sched, latents, guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(2),
                    progress=ctx.progress("inpaint", args.steps))
        return step_time(stamps)

    ours_fn = engine.model_fn(parts["unet"], context, cond, 1.0, guided=True)
    runs: dict[str, Callable[[], float]] = {
        "ours": lambda: loop(ours_fn),
        "bare": lambda: loop(lambda x, t: parts["inpaint"](torch.cat([x, cond9], 1), t,
                                                           encoder_hidden_states=context).sample),
    }
    skipped = None
    try:
        sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "methods" / "brushnet")]  # its conftest too
        import brushnet_public

        import tempfile

        fork = brushnet_public.load_brushnet_fork(Path(tempfile.mkdtemp(prefix="brushnet-public-")))
        pipe = public_pipeline(parts, fork, device, dtype)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
        mask = np.zeros((args.size, args.size, 3), np.uint8)
        mask[args.size // 4: 3 * args.size // 4, args.size // 4: 3 * args.size // 4] = 255

        def public() -> float:
            stamps: list[float] = []
            with torch.no_grad():
                pipe(prompt_embeds=context[1:], negative_prompt_embeds=context[:1], image=image,
                     mask=Image.fromarray(mask), num_inference_steps=args.steps, guidance_scale=GUIDANCE,
                     generator=torch.Generator().manual_seed(0), output_type="latent",
                     callback=lambda *a: (sync(), stamps.append(clock())), callback_steps=1)
            return step_time(stamps)

        runs["public"] = public
    except LookupError as exc:
        skipped = f"public pipeline skipped: {exc}"

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    for run in runs.values():  # warm-up
        run()
    best = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name} ({dtype}, {torch.get_num_threads()} threads), {'tiny' if args.small else 'SD-1.5'} shapes, "
          f"{args.size}x{args.size}, ddim, guidance {GUIDANCE}, {args.steps} steps, best of {args.rounds}")
    print("per step: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in best.items()))
    if skipped:
        print(skipped)
    else:
        print(f"ours / public: {best['ours'] / best['public']:.3f}")
    print(f"BrushNet overhead over the bare inpainting UNet step: ours x{best['ours'] / best['bare']:.2f}"
          + ("" if skipped else f", public x{best['public'] / best['bare']:.2f}"))


if __name__ == "__main__":
    main()
