"""FreeCompose speed: one DDS iteration per task vs one bare batch-4 UNet forward.

Builds SD1.5-shaped networks with random weights (same shapes, so the same FLOPs as the
real ones; no download): the UNet (320/640/1280/1280, 2 layers per block, 768-d text),
the VAE, a full T2I-Adapter and VGG16. For each size it prints

* ``unet``: one bare batch-4 UNet forward (no_grad), the reference;
* ``remove-dds``: one removal iteration without the perceptual term (masked attention on);
* ``harmonize-dds``: one harmonization iteration without the perceptual terms;
* ``compose``: one composition iteration (adapter residuals + K/V injection on every step);
* ``remove``/``harmonize``: the full iterations, with their perceptual terms;
* ``perceptual``: what the perceptual terms add (decode with autograd + VGG16 fwd/bwd);

with the ratio to ``unet`` and the peak memory (CUDA: max allocated during the row; CPU:
the process's peak RSS so far). Rows run interleaved, one iteration each per round, and
the fastest round counts (robust to other load on a shared machine). ``--shape tiny`` runs
the same rows on the test-sized networks (the suite's smoke run; its timings mean nothing).
Examples::

    .venv/bin/python benchmarks/freecompose_speed.py --sizes 256 512 --rounds 2
    .venv/bin/python benchmarks/freecompose_speed.py --shape tiny --sizes 64 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import time
from typing import Callable

import numpy as np
import torch

from diffcompose.attention import AttentionEdit
from diffcompose.methods.freecompose import dds
from diffcompose.methods.freecompose.perceptual import MaskedPerceptual
from diffcompose.models import codec
from diffcompose.models.device import pick_device, pick_dtype
from diffcompose.models.loader import SDComponents
from diffcompose.models.lpips import find_heads, load_heads
from diffcompose.models.vgg import VGG16Features
from diffcompose.progress import Progress

#: The rows after ``unet`` (the reference, always timed), in their default order.
ROWS = ("remove-dds", "harmonize-dds", "compose", "perceptual", "remove", "harmonize")
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)


def build(device: torch.device, dtype: torch.dtype, shape: str = "sd15"
          ) -> tuple[SDComponents, torch.nn.Module, torch.nn.Module, list[torch.Tensor]]:
    """Random-weight networks: SD1.5's shapes (``sd15``) or the test-sized ones (``tiny``, for a smoke run).

    Returns the SD components, the T2I-Adapter, VGG16 and the LPIPS channel weights that fit it
    (the engine's own: read from the installed package for ``sd15``; random non-negative ones of
    the tiny widths, as the tiny model ships, for ``tiny``).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, T2IAdapter, UNet2DConditionModel

    from diffcompose.models import tiny

    def place(module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(device) if dtype == torch.float32 else module.to(device, dtype)  # no cast warning
        return module.eval().requires_grad_(False)

    torch.manual_seed(0)
    if shape == "sd15":
        unet_cfg, vae_cfg, vgg = SD15_UNET, SD15_VAE, VGG16Features()
        adapter_cfg = dict(in_channels=1, channels=[320, 640, 1280, 1280], num_res_blocks=2, downscale_factor=8)
    else:
        unet_cfg, vae_cfg, vgg = tiny.tiny_unet_config(), tiny.tiny_vae_config(), VGG16Features(tiny.TINY_VGG_WIDTHS)
        adapter_cfg = tiny.tiny_adapter_config()
    unet = place(UNet2DConditionModel(**unet_cfg))
    vae = place(AutoencoderKL(**vae_cfg))
    adapter = place(T2IAdapter(**adapter_cfg))
    vgg = vgg.to(device).eval().requires_grad_(False)
    heads = load_heads(find_heads(), vgg.widths) if shape == "sd15" else [torch.rand(w) for w in vgg.widths]
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    sd = SDComponents(root=None, unet=unet, vae=vae, text_encoder=None, tokenizer=None,  # type: ignore[arg-type]
                      scheduler=sched, device=device, dtype=dtype)
    return sd, adapter, vgg, heads


def float32_decoder(sd: SDComponents) -> Callable[[torch.Tensor], torch.Tensor]:
    """Latent -> image in [0, 1] through a float32 VAE, with autograd: the engine's decode for its perceptual terms."""
    vae = sd.vae if sd.dtype == torch.float32 else copy.deepcopy(sd.vae).float()
    return lambda z: (codec.decode(vae, z.float()).float() + 1.0) / 2.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def timed(fn: Callable[[int], None], device: torch.device) -> tuple[float, float]:
    """Seconds of one iteration of ``fn``; peak MiB during it."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    fn(1)
    sync(device)
    return time.perf_counter() - start, peak_mb(device)


def run_size(sd: SDComponents, adapter: torch.nn.Module, vgg: torch.nn.Module, heads: list[torch.Tensor], size: int,
             rounds: int, rows: list[str]) -> None:
    device, dtype = sd.device, sd.dtype
    lat = size // 8
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, lat, lat, generator=gen).to(device)
    emb = torch.randn(4, 77, sd.unet.config.cross_attention_dim, generator=gen).to(device, dtype)
    yy, xx = np.mgrid[:lat, :lat]
    m_lat = torch.from_numpy((((xx - lat * 0.5) / (lat * 0.2)) ** 2 + ((yy - lat * 0.5) / (lat * 0.3)) ** 2 <= 1)
                             .astype(np.float32)).to(device)
    weight = (m_lat + 0.2 * (1 - m_lat))[None, None]
    m_px = torch.nn.functional.interpolate(m_lat[None, None], size=(size, size), mode="nearest")
    ref = torch.rand(1, 3, size, size, generator=gen).to(device)
    with torch.no_grad():
        cond = torch.rand(2, 1, size, size, generator=gen).to(device, dtype)
        feats = [torch.cat([f, f]) * 0.9 for f in adapter(cond)]
    t = torch.tensor(500, device=device)
    decode32 = float32_decoder(sd)
    x4 = torch.randn(4, 4, lat, lat, generator=gen).to(device, dtype)

    def bare(n: int) -> None:
        with torch.no_grad():
            for _ in range(n):
                sd.unet(x4, t, encoder_hidden_states=emb)

    def task(branches: dds.Branches, attention: Callable[[], AttentionEdit | None], losses: Callable[[], list],
             weight_map: torch.Tensor | None = None) -> Callable[[int], None]:
        def go(n: int) -> None:
            cfg = dds.DDSConfig(iterations=n, weight_map=weight_map)
            dds.optimise(sd, z, branches, cfg, torch.Generator().manual_seed(1), progress=Progress("bench", n),
                         losses=losses(), attention=attention(), decode=decode32)
        return go

    plain = dds.Branches(emb)
    # the working-size pixel mask, point-sampled at each token grid (as the engine passes it)
    masked = lambda: AttentionEdit("mask", (lat, lat), mask=m_px[0, 0], min_layer=10, start_iter=0)  # noqa: E731
    inject = lambda: AttentionEdit("inject", (lat, lat), min_layer=10, start_iter=0)  # noqa: E731
    none = lambda: None  # noqa: E731
    background = MaskedPerceptual(vgg, heads, ref, 1 - m_px)  # built once per run
    inside = MaskedPerceptual(vgg, heads, ref, m_px)
    remove_losses = lambda: [(0.3, background)]  # noqa: E731
    harm_losses = lambda: [(0.3, background), (0.1, inside)]  # noqa: E731

    def perceptual(n: int) -> None:
        for _ in range(n):
            zz = z.clone().requires_grad_(True)
            (0.3 * background(decode32(zz))).backward()

    cases = {
        "unet": bare,
        "remove-dds": task(plain, masked, lambda: [], weight),
        "harmonize-dds": task(plain, none, lambda: []),
        "compose": task(dds.Branches(emb, feats), inject, lambda: []),
        "perceptual": perceptual,
        "remove": task(plain, masked, remove_losses, weight),
        "harmonize": task(plain, none, harm_losses),
    }
    names = ["unet", *[r for r in rows if r != "unet"]]
    bare(1)  # warm-up
    best = {n: (float("inf"), 0.0) for n in names}
    for _ in range(rounds):  # interleaved, so drifting load on a shared machine hits every row alike
        for name in names:
            sec, mem = timed(cases[name], device)
            best[name] = (min(best[name][0], sec), max(best[name][1], mem))
    for name in names:
        sec, mem = best[name]
        print(f"  {size:>4}  {name:<14} {sec:8.3f} s   x{sec / best['unet'][0]:.3f}   peak {mem:8.0f} MiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square working sizes in pixels")
    p.add_argument("--rounds", type=int, default=2, help="timing rounds (every row once per round; the minimum counts)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="which rows to time")
    p.add_argument("--shape", choices=["sd15", "tiny"], default="sd15",
                   help="sd15: the published shapes (the figures); tiny: the test-sized networks (a smoke run)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"dtype {str(dtype).replace('torch.', '')}, threads {torch.get_num_threads()}, rounds {args.rounds}, "
          f"{args.shape} networks", flush=True)
    sd, adapter, vgg, heads = build(device, dtype, args.shape)
    print("  size  row              s/iter   vs unet   memory")
    for size in args.sizes:
        if size % 64:
            p.error(f"sizes must be multiples of 64, got {size}")
        run_size(sd, adapter, vgg, heads, size, args.rounds, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
