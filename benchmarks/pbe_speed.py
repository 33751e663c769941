"""Paint-by-Example speed: our pipeline vs diffusers' PaintByExamplePipeline, per denoising step.

Both run on the *same* module objects (UNet, VAE; the exemplar encoder's weights copied
into diffusers' encoder), the same scheduler, seed and inputs, in one process. A step is
the time between two consecutive per-step callbacks (one guided UNet call + the scheduler
update); the median over the steps of a run counts, runs alternate between the two
pipelines, and the fastest round counts (robust to other load on a shared machine).

``--shape sd`` builds the published geometry with random weights (SD1.x UNet with 9 input
channels, SD VAE, CLIP ViT-L/14: same FLOPs as the real model, no download); ``--shape
tiny`` the test-sized model. Examples::

    .venv/bin/python benchmarks/pbe_speed.py --shape tiny --size 128 --steps 10 --rounds 3
    .venv/bin/python benchmarks/pbe_speed.py --shape sd --size 512 --steps 20 --rounds 3   # on a GPU
    .venv/bin/python benchmarks/pbe_speed.py --shape tiny --size 64 --steps 2 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image

from diffcompose.methods.pbe.components import PbEComponents
from diffcompose.methods.pbe.convert import PBE_SCHEDULER_CONFIG, PBE_UNET_CONFIG, PBE_VAE_CONFIG, PBE_VISION_CONFIG
from diffcompose.methods.pbe.encoder import ExemplarEncoder
from diffcompose.methods.pbe.engine import PaintByExampleEngine
from diffcompose.methods.pbe.options import PaintOptions
from diffcompose.methods.pbe.reference import prepare_reference
from diffcompose.methods.pbe.tiny import tiny_vision_config
from diffcompose.models.device import pick_device, pick_dtype
from diffcompose.models.sampling import make_scheduler
from diffcompose.models.tiny import tiny_scheduler_config, tiny_unet_config, tiny_vae_config
from diffcompose.progress import RunContext


def build(shape: str, device: torch.device, dtype: torch.dtype) -> PbEComponents:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig

    torch.manual_seed(0)
    if shape == "sd":
        unet_cfg, vae_cfg, vis_cfg, sched = PBE_UNET_CONFIG, PBE_VAE_CONFIG, PBE_VISION_CONFIG, PBE_SCHEDULER_CONFIG
    else:
        unet_cfg, vae_cfg = tiny_unet_config(in_channels=9), tiny_vae_config()
        vis_cfg, sched = tiny_vision_config(), tiny_scheduler_config()
    def place(m: torch.nn.Module) -> torch.nn.Module:
        m = m.to(device) if dtype == torch.float32 else m.to(device, dtype)  # no cast warning
        return m.eval().requires_grad_(False)

    return PbEComponents(root=None, unet=place(UNet2DConditionModel(**unet_cfg)), vae=place(AutoencoderKL(**vae_cfg)),
                         encoder=place(ExemplarEncoder(CLIPVisionConfig(**vis_cfg))), scheduler_config=dict(sched),
                         device=device, dtype=dtype)


def diffusers_pipeline(c: PbEComponents, scheduler: str):
    from diffusers import PaintByExamplePipeline
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder

    enc = PaintByExampleImageEncoder(c.encoder.config)
    enc.load_state_dict(c.encoder.state_dict())
    enc = enc.to(c.device, c.dtype).eval()
    pipe = PaintByExamplePipeline(vae=c.vae, image_encoder=enc, unet=c.unet,
                                  scheduler=make_scheduler(scheduler, c.scheduler_config), safety_checker=None,
                                  feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def step_time(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["tiny", "sd"], default="tiny")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=10, help="denoising steps per run (at least 2: a step is timed "
                                                         "between two callbacks)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scheduler", choices=["plms", "ddim", "euler", "dpm"], default="plms")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()
    if args.steps < 2:
        ap.error(f"--steps must be at least 2, got {args.steps}")

    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    c = build(args.shape, device, dtype)
    engine = PaintByExampleEngine.from_components(c)
    pipe = diffusers_pipeline(c, args.scheduler)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    mask = np.zeros((args.size, args.size), bool)
    mask[args.size // 4: 3 * args.size // 4, args.size // 4: 3 * args.size // 4] = True
    reference = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    side = c.encoder.image_size
    ref_tensor = torch.from_numpy(prepare_reference(reference, size=side, mode="crop"))[None].to(device, dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def ours() -> float:
        stamps: list[float] = []
        opts = PaintOptions(steps=args.steps, scheduler=args.scheduler, crop=False, reference_preprocess="crop")
        ctx = RunContext(seed=0, on_progress=lambda event: (sync(), stamps.append(time.perf_counter())))
        engine._paint(image=image, mask=mask, reference=reference, reference_mask=None, options=opts, ctx=ctx)
        return step_time(stamps)

    def theirs() -> float:
        stamps: list[float] = []
        pipe(example_image=ref_tensor, image=Image.fromarray(image), mask_image=Image.fromarray(mask),
             num_inference_steps=args.steps, guidance_scale=5.0, generator=torch.Generator().manual_seed(0),
             output_type="np", callback=lambda *a: (sync(), stamps.append(time.perf_counter())), callback_steps=1)
        return step_time(stamps)

    ours(), theirs()  # warm-up
    best = {"ours": float("inf"), "diffusers": float("inf")}
    for _ in range(args.rounds):
        best["ours"] = min(best["ours"], ours())
        best["diffusers"] = min(best["diffusers"], theirs())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name} ({dtype}), shape {args.shape}, {args.size}x{args.size}, {args.scheduler}, "
          f"{args.steps} steps, best of {args.rounds}")
    print(f"per step: ours {best['ours'] * 1000:.1f} ms, diffusers {best['diffusers'] * 1000:.1f} ms, "
          f"ratio {best['ours'] / best['diffusers']:.3f}")


if __name__ == "__main__":
    main()
