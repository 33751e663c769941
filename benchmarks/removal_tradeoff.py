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

``--more`` adds the other ways tried to lift PatchMatch's SSIM (other patch radii;
PatchMatch's detail over Navier-Stokes' low frequencies; PatchMatch guided toward a blurred
FSR fill through PyPatchMatch's regularity term; OpenCV's shift-map inpainting, over the
whole photo) and two more tables of PatchMatch's and Navier-Stokes' SSIM: per pixel of the
hole by the true background's local contrast, and per composite by the hole's thickness.

    .venv/bin/python benchmarks/removal_tradeoff.py [--limit N] [--per-photo 3] [--seed 0] [--more]
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


#: Local standard deviation (grey levels, Gaussian sigma 1.5: SSIM's window) bins of the --more table.
CONTRAST_BINS = (0, 2, 4, 8, 16, 32, np.inf)


def local_std(image: np.ndarray, sigma: float) -> np.ndarray:
    """Per pixel, the standard deviation of the luma in a Gaussian window of ``sigma`` px."""
    import cv2

    luma = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.GaussianBlur(luma, (0, 0), sigma)
    return np.sqrt(np.maximum(cv2.GaussianBlur(luma * luma, (0, 0), sigma) - mean * mean, 0.0))


def texture_gate(fill: np.ndarray, threshold: float, sigma: float = 6.0) -> np.ndarray:
    """Per pixel, 0 where ``fill`` is smooth and 1 where it is textured: (H, W, 1) float32."""
    return np.clip((local_std(fill, sigma) - threshold / 2) / threshold, 0.0, 1.0)[..., None]


def more_variants(composite: np.ndarray, hole: np.ndarray, fills: dict[str, np.ndarray], seed: int) -> dict:
    """The other fills of ``--more`` (see the module docstring)."""
    import cv2
    import patchmatch

    from diffcompose.methods.classical import exemplar

    out = {}
    for r in (1, 2, 5, 8):
        out[f"patchmatch, patch radius {r}"] = np.asarray(
            dc.remove(composite, hole, engine="classical", method="patchmatch", patch=r, seed=seed), dtype=np.float32)
    for s in (2, 4, 8):
        low = cv2.GaussianBlur(fills["ns"], (0, 0), s) - cv2.GaussianBlur(fills["patchmatch"], (0, 0), s)
        out[f"patchmatch detail over ns, sigma {s}"] = fills["patchmatch"] + low
    guide = (cv2.GaussianBlur(fills["fsr-fast"], (0, 0), 3) / 255.0).astype(np.float32)
    for w in (0.25, 1.0):
        with exemplar._PATCHMATCH_LOCK:
            patchmatch.set_random_seed(seed)
            g = patchmatch.inpaint_regularity(composite, hole.astype(np.uint8), guide, patch_size=3, guide_weight=w)
        out[f"patchmatch guided to blurred fsr-fast, weight {w:g}"] = exemplar.seam_correct(g, hole).astype(np.float32)
    lab = np.zeros_like(composite)
    known = np.where(hole, 0, 255).astype(np.uint8)
    cv2.xphoto.inpaint(cv2.cvtColor(composite, cv2.COLOR_RGB2Lab), known, lab, cv2.xphoto.INPAINT_SHIFTMAP)
    out["shift-map (whole photo)"] = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB).astype(np.float32)
    return out


def ssim_by_contrast(out: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum of the SSIM map, pixel count) over the hole per :data:`CONTRAST_BINS` of the truth."""
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(out, truth, data_range=255, channel_axis=-1, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, full=True)
    bins = np.digitize(local_std(truth, 1.5)[hole], CONTRAST_BINS[1:-1])
    k = len(CONTRAST_BINS) - 1
    return np.bincount(bins, smap.mean(axis=2)[hole], k), np.bincount(bins, minlength=k).astype(float)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--testdata", type=Path, default=quality.DEFAULT_TESTDATA)
    p.add_argument("--max-side", type=int, default=640)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--per-photo", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--more", action="store_true", help="also the other fills tried, and SSIM by local contrast")
    args = p.parse_args(argv)
    photos = quality.real_photos(args.testdata, args.max_side)
    objects = quality.objects_with_masks(args.testdata, args.max_side)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    k = len(CONTRAST_BINS) - 1
    by_contrast = {m: [np.zeros(k), np.zeros(k)] for m in ("patchmatch", "ns")}
    thickness: list[float] = []  # per composite: twice the largest distance from the hole's border
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
            if args.more:
                import cv2

                variants.update(more_variants(composite, hole, fills, args.seed))
                thickness.append(2 * float(cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5).max()))
            for name, v in variants.items():
                out = composite.copy()
                out[hole] = np.clip(np.rint(v[hole]), 0, 255).astype(np.uint8)
                rows.setdefault(name, []).append((min(quality.PSNR_CAP, psnr(out, bg, hole)), ssim(out, bg, hole),
                                                  texture_distance(out, bg, hole)))
                if args.more and name in by_contrast:
                    for acc, part in zip(by_contrast[name], ssim_by_contrast(out, bg, hole)):
                        acc += part
    print(f"\n{n} composites (seed {args.seed}); metrics over the hole\n")
    print("| fill | PSNR (dB) ↑ | SSIM ↑ | texture dist. ↓ |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        m = np.mean(values, axis=0)
        print(f"| {name} | {m[0]:.2f} | {m[1]:.4f} | {m[2]:.2f} |")
    if args.more:
        edges = [f"{a:g}-{b:g}" for a, b in zip(CONTRAST_BINS[:-1], CONTRAST_BINS[1:])]
        print("\nSSIM per hole pixel by the truth's local standard deviation (grey levels, sigma 1.5)\n")
        print("| fill | " + " | ".join(edges) + " |")
        print("|---|" + "---:|" * len(edges))
        total = by_contrast["ns"][1]
        print("| share of pixels | " + " | ".join(f"{c / total.sum():.3f}" for c in total) + " |")
        for name, (sums, counts) in by_contrast.items():
            print(f"| {name} | " + " | ".join(f"{s / max(c, 1):.3f}" for s, c in zip(sums, counts)) + " |")
        thick = np.array(thickness)
        quarters = [q for q in np.array_split(np.argsort(thick, kind="stable"), 4) if len(q)]  # by rank
        print("\nSSIM over the hole by the hole's thickness (px), in quarters of the composites\n")
        print("| fill | " + " | ".join(f"{thick[q].min():.0f}-{thick[q].max():.0f}" for q in quarters) + " |")
        print("|---|" + "---:|" * len(quarters))
        for name in ("patchmatch", "ns"):
            values = np.array([v[1] for v in rows[name]])
            print(f"| {name} | " + " | ".join(f"{values[q].mean():.4f}" for q in quarters) + " |")


if __name__ == "__main__":
    main()
