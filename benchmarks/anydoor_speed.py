"""AnyDoor speed: our batched guidance step vs the public two-pass step, per denoising step.

Both steps run on the *same* modules (an SD2.1-shaped UNet and its AnyDoor ControlNet with
random weights: the published geometry's FLOPs, no download), the same DDIM scheduler,
latents, hint and ID tokens, in one process. A step = ControlNet + UNet on the guidance
branches + classifier-free guidance + the DDIM update:

* ours: one call on the batch ``[uncond, cond]`` (:func:`diffcompose.methods.anydoor.model.guided_model_fn`);
* two-pass: the unconditional then the conditional call, batch 1 each, as the public
  ``ddim_hacked.py`` (:func:`~diffcompose.methods.anydoor.model.two_pass_prediction`).

The median step of a run counts; runs alternate and the fastest round counts (robust to
other load on a shared machine). Peak memory: on CUDA the allocator's peak per variant
(weights included); on the CPU the process's peak resident set (both variants together).
It also prints the parameter memory of the full published model (DINOv2 ViT-g/14, VAE,
UNet, ControlNet, counted on the meta device) in the chosen dtype. Examples::

    .venv/bin/python benchmarks/anydoor_speed.py --size 256 --steps 3 --rounds 2          # CPU
    .venv/bin/python benchmarks/anydoor_speed.py --size 512 --steps 20 --rounds 3 --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from diffcompose.methods.anydoor import model as M
from diffcompose.methods.anydoor.convert import SCHEDULER_CONFIG, VAE_CONFIG
from diffcompose.models.device import pick_device, pick_dtype
from diffcompose.models.sampling import guide, make_scheduler


def build(device: torch.device, dtype: torch.dtype, shape: str) -> M.AnyDoorModel:
    from diffusers import UNet2DConditionModel

    from diffcompose.methods.anydoor.tiny import tiny_anydoor_unet_config

    torch.manual_seed(0)
    cfg = M.sd21_unet_config() if shape == "sd21" else tiny_anydoor_unet_config()
    unet = UNet2DConditionModel(**cfg)
    controlnet = M.build_controlnet(unet, copy_unet_weights=False)
    with torch.no_grad():  # diffusers zero-initialises the output convs; random ones give real residual adds
        for conv in list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block]:
            conv.weight.normal_(0, 0.01)
    model = M.AnyDoorModel(unet, controlnet, id_extractor=None, vae=None, scheduler_config=SCHEDULER_CONFIG)
    model = model.to(device) if dtype == torch.float32 else model.to(device, dtype)
    return model.eval().requires_grad_(False)


def full_model_bytes(dtype: torch.dtype) -> dict[str, int]:
    """Parameter bytes of the published model's parts (built on the meta device: no memory used)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import Dinov2Config, Dinov2Model

    size = torch.tensor([], dtype=dtype).element_size()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**M.sd21_unet_config())
        parts = {"unet": unet, "controlnet": ControlNetModel(**M.controlnet_config(dict(unet.config))),
                 "dinov2_vitg14": Dinov2Model(Dinov2Config(**M.vitg14_config())), "vae": AutoencoderKL(**VAE_CONFIG)}
    return {k: sum(p.numel() for p in m.parameters()) * size for k, m in parts.items()}


def run(model: M.AnyDoorModel, batched: bool, steps: int, size: int, scale: float, device: torch.device,
        dtype: torch.dtype) -> list[float]:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, size // 8, size // 8, generator=g).to(device, dtype)
    hint = torch.randn(1, 4, size, size, generator=g).to(device, dtype)
    ctx_dim = model.unet.config.cross_attention_dim
    cond = torch.randn(1, 257, ctx_dim, generator=g).to(device, dtype)
    uncond = torch.randn(1, 257, ctx_dim, generator=g).to(device, dtype)
    sched = make_scheduler("ddim", SCHEDULER_CONFIG)
    sched.set_timesteps(steps, device=device)
    fn = M.guided_model_fn(model, hint, cond, uncond)
    times = []
    with torch.no_grad():
        for t in sched.timesteps:
            sync(device)
            start = time.perf_counter()
            if batched:
                eps = guide(*fn(torch.cat([latents, latents]), t).chunk(2), scale)
            else:
                eps = M.two_pass_prediction(model, latents, t, hint, cond, uncond, scale)
            latents = sched.step(eps, t, latents, eta=0.0).prev_sample
            sync(device)
            times.append(time.perf_counter() - start)
    return times


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["sd21", "tiny"], default="sd21")
    ap.add_argument("--size", type=int, default=256, help="working side in pixels (published: 512)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--guidance-scale", type=float, default=5.0)
    ap.add_argument("--attention-slicing", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    torch.set_grad_enabled(False)
    model = build(device, dtype, args.shape)
    if args.attention_slicing:
        M.set_attention_slicing(model, True)
    print(f"device {device}, dtype {str(dtype).replace('torch.', '')}, {args.shape} UNet + ControlNet, "
          f"{args.size}x{args.size}, {args.steps} DDIM steps x {args.rounds} rounds, guidance {args.guidance_scale}"
          f"{', attention slicing' if args.attention_slicing else ''}")
    run(model, True, 1, args.size, args.guidance_scale, device, dtype)  # warm-up
    best = {"batched": float("inf"), "two-pass": float("inf")}
    peak = {"batched": 0, "two-pass": 0}
    for r in range(args.rounds):
        for name in ("batched", "two-pass"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            med = statistics.median(run(model, name == "batched", args.steps, args.size, args.guidance_scale,
                                        device, dtype))
            if device.type == "cuda":
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated(device))
            best[name] = min(best[name], med)
            print(f"  round {r + 1} {name:8s} {med * 1000:9.1f} ms/step")
    print(f"ours (batched) {best['batched'] * 1000:.1f} ms/step, two-pass {best['two-pass'] * 1000:.1f} ms/step, "
          f"ratio {best['batched'] / best['two-pass']:.3f}")
    if device.type == "cuda":
        print(f"peak GPU memory: batched {peak['batched'] / 2**30:.2f} GiB, "
              f"two-pass {peak['two-pass'] / 2**30:.2f} GiB")
    else:
        print(f"peak process RSS (both variants): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    parts = full_model_bytes(dtype)
    listing = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in parts.items())
    print(f"published model parameters in {str(dtype).replace('torch.', '')}: {sum(parts.values()) / 2**30:.2f} GiB "
          f"({listing} GiB)")


if __name__ == "__main__":
    main()
