"""FreeCompose diagnostic: how strong is the perceptual anchor next to the DDS step?

For one iteration of ``remove`` (background term, weight 0.3) and ``harmonize`` (background
0.3 + object 0.1), on SD1.5-shaped networks with random weights (the real shapes, no
download; see ``freecompose_speed.py``), prints the norm of the latent step each term makes
with SGD at the default lr: the DDS term ``lr * 20000/(latent pixels) * w * (e_tgt - e_src)``
and the perceptual term ``lr * d(weight * LPIPS)/dz``, with LPIPS's learned channel weights
(what the engine uses) and with a uniform 1/C channel mean (what it used before). The
perceptual backward runs in float32, as in the engine. Random weights make the absolute
figures meaningless for real images; the ratio between the two channel weightings is not::

    .venv/bin/python benchmarks/freecompose_gradients.py --size 256
    .venv/bin/python benchmarks/freecompose_gradients.py --shape tiny --size 64   # smoke run
"""

from __future__ import annotations

import argparse

import torch
from freecompose_speed import build, float32_decoder

from diffcompose.methods.freecompose import dds
from diffcompose.methods.freecompose.perceptual import MaskedPerceptual
from diffcompose.models import codec
from diffcompose.models.device import pick_device, pick_dtype

LR = 0.05


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--shape", choices=["sd15", "tiny"], default="sd15",
                    help="sd15: the published shapes (the figures); tiny: the test-sized networks (a smoke run)")
    args = ap.parse_args()
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    sd, _, vgg, lpips = build(device, dtype, args.shape)
    decode32 = float32_decoder(sd)
    uniform = [torch.full_like(h, 1.0 / h.numel()) for h in lpips]

    gen = torch.Generator().manual_seed(0)
    size, lat = args.size, args.size // 8
    image = torch.rand(1, 3, size, size, generator=gen).to(device)
    with torch.no_grad():
        z_src = codec.encode(sd.vae, (image * 2 - 1).to(dtype)).float()
    mask = torch.zeros(1, 1, size, size, device=device)
    mask[..., size // 4: 3 * size // 4, size // 3: 2 * size // 3] = 1
    m_lat = torch.nn.functional.interpolate(mask, size=(lat, lat), mode="area")
    emb = torch.randn(4, 77, sd.unet.config.cross_attention_dim, generator=gen).to(device, dtype)
    noise = torch.randn(z_src.shape, generator=gen).to(device)
    alphas = sd.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    delta = dds.dds_gradient(sd, z_src, z_src, 500, noise, dds.Branches(emb), 7.5, alphas)
    scale = dds.dds_scale(z_src)

    def perceptual_step(terms: list[tuple[float, torch.Tensor]], heads: list[torch.Tensor]) -> float:
        z = z_src.clone().requires_grad_(True)
        decoded = decode32(z)
        total = sum(w * MaskedPerceptual(vgg, heads, image, region)(decoded) for w, region in terms)
        total.backward()
        return LR * float(z.grad.norm())

    tasks = {
        "remove": (m_lat + 0.2 * (1 - m_lat), [(0.3, 1 - mask)]),
        "harmonize": (torch.ones_like(m_lat), [(0.3, 1 - mask), (0.1, mask)]),
    }
    shape = "SD1.5" if args.shape == "sd15" else "tiny"
    print(f"{shape}-shaped random weights, {size}x{size}, {device} {str(dtype).replace('torch.', '')}, lr {LR}")
    print("| task | DDS step | perceptual step, LPIPS weights | ratio | perceptual step, uniform 1/C | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for task, (weight, terms) in tasks.items():
        dds_step = LR * scale * float((weight * delta).norm())
        learned, flat = perceptual_step(terms, lpips), perceptual_step(terms, uniform)
        print(f"| {task} | {dds_step:.3e} | {learned:.3e} | {learned / dds_step:.2e} | {flat:.3e} | "
              f"{flat / dds_step:.2e} |")


if __name__ == "__main__":
    main()
