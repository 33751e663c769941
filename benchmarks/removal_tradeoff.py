"""Where the removal methods sit between texture and SSIM: PatchMatch blended with the smooth fills.

Not a test. The cases are ``benchmarks/quality.py``'s removal cases (real object cut-outs
pasted at seeded random places on real photos, the hole compared with the photo's true
pixels). Each photo's fills by ``patchmatch``, ``ns`` and ``fsr-fast`` are computed once, then
mixed inside the hole: ``a * smooth + (1 - a) * patchmatch`` for a few weights ``a``, and
gated: PatchMatch kept where its own fill is textured (local standard deviation of the luma,
Gaussian sigma 6 px, above ``t``), Navier-Stokes where it is smooth, with a linear ramp from
``t / 2`` to ``3 t / 2``. The table shows that on these photos every step toward SSIM is a
step away from texture: no blend beats Navier-Stokes on SSIM while keeping most of
PatchMatch's texture, because SSIM scores a plausible texture that is not the true one below
a flat fill. The gate is the better trade (it reaches Navier-Stokes' SSIM keeping about half
of PatchMatch's gain in texture distance) but it smears grass and foliage whose contrast is
below the threshold, which PatchMatch alone rebuilds.

    .venv/bin/python benchmarks/removal_tradeoff.py [--limit N] [--per-photo 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the benchmark's own case generator)

import diffcompose as dc  # noqa: E402
from diffcompose.evaluation import psnr, ssim, texture_distance  # noqa: E402

WEIGHTS = (0.3, 0.5, 0.7)
GATES = (16.0, 24.0, 32.0)


def texture_gate(fill: np.ndarray, threshold: float, sigma: float = 6.0) -> np.ndarray:
    """Per pixel, 0 where ``fill`` is smooth and 1 where it is textured: (H, W, 1) float32."""
    import cv2

    luma = cv2.cvtColor(np.clip(fill, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.GaussianBlur(luma, (0, 0), sigma)
    std = np.sqrt(np.maximum(cv2.GaussianBlur(luma * luma, (0, 0), sigma) - mean * mean, 0.0))
    return np.clip((std - threshold / 2) / threshold, 0.0, 1.0)[..., None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--testdata", type=Path, default=quality.DEFAULT_TESTDATA)
    p.add_argument("--max-side", type=int, default=640)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--per-photo", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    photos = quality.real_photos(args.testdata, args.max_side)
    objects = quality.objects_with_masks(args.testdata, args.max_side)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    n = 0
    for i, (_, bg) in enumerate(photos[: args.limit]):
        for j in range(args.per_photo):
            rng = np.random.default_rng([args.seed, i, j])  # the same draws as quality.py
            _, obj, om = objects[int(rng.integers(len(objects)))]
            composite, hole = quality.random_paste(bg, obj, om, rng)
            if not hole.any() or hole.all():
                continue
            n += 1
            fills = {m: np.asarray(dc.remove(composite, hole, engine="classical", method=m, seed=args.seed),
                                   dtype=np.float32) for m in ("patchmatch", "ns", "fsr-fast")}
            variants = {"patchmatch": fills["patchmatch"], "ns": fills["ns"], "fsr-fast": fills["fsr-fast"]}
            for smooth in ("ns", "fsr-fast"):
                for a in WEIGHTS:
                    mixed = a * fills[smooth] + (1 - a) * fills["patchmatch"]
                    variants[f"{a:.1f} {smooth} + {1 - a:.1f} patchmatch"] = mixed
            for t in GATES:
                gate = texture_gate(fills["patchmatch"], t)
                variants[f"patchmatch gated to ns, t {t:g}"] = gate * fills["patchmatch"] + (1 - gate) * fills["ns"]
            for name, v in variants.items():
                out = composite.copy()
                out[hole] = np.clip(np.rint(v[hole]), 0, 255).astype(np.uint8)
                rows.setdefault(name, []).append((min(quality.PSNR_CAP, psnr(out, bg, hole)), ssim(out, bg, hole),
                                                  texture_distance(out, bg, hole)))
    print(f"\n{n} composites (seed {args.seed}); metrics over the hole\n")
    print("| fill | PSNR (dB) ↑ | SSIM ↑ | texture dist. ↓ |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        m = np.mean(values, axis=0)
        print(f"| {name} | {m[0]:.2f} | {m[1]:.4f} | {m[2]:.2f} |")


if __name__ == "__main__":
    main()
