"""Quality benchmark of every removal and harmonization engine on real photos (not a test).

Removal: a real object cut-out (the ``subjects`` cases of ../shared/testdata, with their
U-2-Net masks) is pasted at a seeded random place and size onto a real photo; each engine
removes it and the filled hole is compared with the photo's true pixels there (PSNR, SSIM,
MAE over the hole, which all reward blur, and the texture distance, which penalises it:
:func:`diffcompose.evaluation.texture_distance`, 0 = the true background's edge strengths).
Baseline ``mean-fill``: the hole filled with the mean colour of an 8-pixel ring around it.

Harmonization (the iHarmony4 recipe): a real photo and a real object mask; the object's
colours are perturbed (Lab statistics of another real photo, a gamma curve, or a
white-balance shift: each case gets all three); each engine harmonizes the composite and
is compared with the original photo: MSE (whole image), fMSE (object only), PSNR. Baseline
``composite``: the perturbed composite untouched.

Engines come from the registry: every engine of ``remove`` / ``harmonize``, one row
per choice of its ``method`` option when it has one. Engines that need torch/weights run
only when named in ``--engines``. Photos are worked at most ``--max-side`` pixels long.

    .venv/bin/python benchmarks/quality.py                 # all classical engines
    .venv/bin/python benchmarks/quality.py --engines classical:biharmonic,freecompose
    .venv/bin/python benchmarks/quality.py --tasks harmonize --opt strength=1.0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import typing
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

import diffcompose as dc
from diffcompose.evaluation import fmse, mae, mse, psnr, ssim, texture_distance
from diffcompose.inputs import Box, dilate_mask, load_image, load_mask, mask_to_box, resize_mask
from diffcompose.methods import engines_for, get_engine_info
from diffcompose.methods.options import coerce
from diffcompose.methods.classical.harmonize import from_lab, to_lab
from diffcompose.regions.place import place

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TESTDATA = REPO.parent / "shared" / "testdata"
#: A perfect fill (e.g. a hole on a black letterbox bar) has infinite PSNR: per-image PSNR
#: is capped here before averaging.
PSNR_CAP = 60.0
#: The removal table's metrics over the hole, in its column order: (name, header, format, metric).
REMOVAL_METRICS: list[tuple[str, str, str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]]] = [
    ("psnr", "PSNR (dB) ↑", ".2f", lambda out, truth, hole: min(PSNR_CAP, psnr(out, truth, hole))),
    ("ssim", "SSIM ↑", ".4f", ssim),
    ("mae", "MAE ↓", ".2f", mae),
    ("texture", "texture dist. ↓", ".2f", texture_distance),
]


# ----------------------------------------------------------------------------- data

def shrink(image: np.ndarray, mask: np.ndarray | None, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = image.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return image, mask
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, (None if mask is None else resize_mask(mask, size))


def manifest(testdata: Path, task: str) -> list[dict]:
    path = testdata / "manifest.json"
    if not path.exists():
        return []
    return [c for c in json.loads(path.read_text()) if c["task"] == task]


def real_photos(testdata: Path, max_side: int) -> list[tuple[str, np.ndarray]]:
    """Backgrounds: the removal photos of the test data, plus scikit-image's bundled photos."""
    from skimage import data

    photos = [(f"skimage:{n}", getattr(data, n)()) for n in ("astronaut", "coffee", "chelsea")]
    for c in manifest(testdata, "removal"):
        photos.append((c["files"]["image"], load_image(testdata / c["files"]["image"])))
    return [(name, shrink(img, None, max_side)[0]) for name, img in photos]


def objects_with_masks(testdata: Path, max_side: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Real photos with a real object mask: the subjects (U-2-Net masks) and the object-shaped removal masks.

    Without the test data: scikit-image photos with GrabCut masks (so the script still runs).
    """
    out = []
    for c in manifest(testdata, "subjects"):
        if "mask_u2net" in c["files"]:
            img = load_image(testdata / c["files"]["image"], max_pixels=None)
            m = load_mask(testdata / c["files"]["mask_u2net"], (img.shape[1], img.shape[0]), max_pixels=None)
            out.append((c["files"]["image"], *shrink(img, m, max_side)))
    if not out:
        from skimage import data

        for name, box in (("chelsea", (60, 20, 400, 300)), ("astronaut", (150, 20, 350, 300)),
                          ("coffee", (150, 20, 430, 320))):
            img = getattr(data, name)()
            m = np.asarray(dc.segment(img, box)) > 0
            out.append((f"skimage:{name} (GrabCut mask)", img, m))
    return out


def harmonization_cases(testdata: Path, max_side: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    cases = objects_with_masks(testdata, max_side)
    for c in manifest(testdata, "removal"):
        if "box" in c.get("note", ""):
            continue  # rectangles, not objects
        img = load_image(testdata / c["files"]["image"])
        m = load_mask(testdata / c["files"]["mask"], (img.shape[1], img.shape[0]))
        if 0.01 <= m.mean() <= 0.5:
            cases.append((c["files"]["image"], *shrink(img, m, max_side)))
    return cases


# ----------------------------------------------------------------------------- engines

@dataclasses.dataclass
class Variant:
    name: str
    run: Callable[..., np.ndarray]


def variants(task: str, wanted: set[str] | None, extra: dict[str, str]) -> Iterator[Variant]:
    """One variant per engine (and per value of its ``method`` option), filtered by ``--engines``.

    ``extra``: option values (``--opt KEY=VALUE``) given to every engine that has that option.
    """
    api_call = getattr(dc, task)
    for engine in engines_for(task):
        info = get_engine_info(engine)
        hints = typing.get_type_hints(info.tasks[task])
        fields = {f.name: f for f in dataclasses.fields(info.tasks[task])}
        methods = typing.get_args(hints["method"]) if "method" in hints else (None,)
        for method in methods:
            name = engine if method is None else f"{engine}:{method}"
            chosen = wanted is None or engine in wanted or name in wanted
            if not chosen or (info.needs_torch and wanted is None):
                if info.needs_torch and wanted is None:
                    print(f"(skipping {name}: needs torch/weights; name it in --engines to run it)", file=sys.stderr)
                continue
            opts: dict = {} if method is None else {"method": method}
            for key, text in extra.items():
                if key in fields:
                    opts[key] = coerce(key, hints[key], text)
                    name += f" {key}={text}"

            def run(image: np.ndarray, mask: np.ndarray, seed: int, _e: str = engine,
                    _o: dict = opts) -> np.ndarray:
                return np.asarray(api_call(image, mask, engine=_e, seed=seed, **_o))

            yield Variant(name, run)


def score(runs: list[Variant], samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
          metrics: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]], seed: int) -> list[tuple]:
    """Per variant: its name, the mean of each metric over ``(truth, composite, mask)`` samples, s / image."""
    rows = []
    for v in runs:
        scores: dict[str, list[float]] = defaultdict(list)
        secs = 0.0
        for truth, composite, mask in samples:
            t0 = time.perf_counter()
            out = v.run(composite, mask, seed)
            secs += time.perf_counter() - t0
            for name, metric in metrics.items():
                scores[name].append(metric(out, truth, mask))
        rows.append((v.name, *(np.mean(scores[name]) for name in metrics), secs / len(samples)))
    return rows


# ----------------------------------------------------------------------------- removal

def random_paste(background: np.ndarray, obj: np.ndarray, obj_mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste the object at a random place, its box covering 3..10% of the photo."""
    h, w = background.shape[:2]
    crop = mask_to_box(obj_mask)
    aspect = crop.width / crop.height
    area = rng.uniform(0.03, 0.10) * w * h
    bw = min(int(math.sqrt(area * aspect)), int(0.6 * w))
    bh = min(int(bw / aspect), int(0.6 * h))
    bw = max(8, min(bw, int(bh * aspect) + 1))
    x0 = int(rng.integers(0, w - bw + 1))
    y0 = int(rng.integers(0, h - bh + 1))
    return place(background, obj, obj_mask, Box(x0, y0, x0 + bw, y0 + bh))


def mean_fill(image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    ring = dilate_mask(mask, 8) & ~mask
    out = image.copy()
    out[mask] = np.rint(image[ring].mean(axis=0)).astype(np.uint8)
    return out


def bench_removal(args: argparse.Namespace, wanted: set[str] | None) -> None:
    photos = real_photos(args.testdata, args.max_side)
    objects = objects_with_masks(args.testdata, args.max_side)
    samples = []
    for i, (_, bg) in enumerate(photos[: args.limit]):
        for j in range(args.per_photo):
            rng = np.random.default_rng([args.seed, i, j])
            _, obj, om = objects[int(rng.integers(len(objects)))]
            composite, hole = random_paste(bg, obj, om, rng)
            if hole.any() and not hole.all():
                samples.append((bg, composite, hole))
    runs = [Variant("mean-fill (baseline)", mean_fill), *variants("remove", wanted, args.opt)]
    rows = score(runs, samples, {name: metric for name, _, _, metric in REMOVAL_METRICS}, args.seed)
    print(f"\nRemoval: {len(samples)} composites = {min(len(photos), args.limit or len(photos))} real photos x "
          f"{args.per_photo} real object cut-outs pasted at random (seed {args.seed}); metrics over the hole "
          f"(PSNR capped at {PSNR_CAP:.0f} dB per image; texture distance: gradient-magnitude distributions, "
          f"0 = as sharp as the true background)\n")
    print("| engine | " + " | ".join(header for _, header, _, _ in REMOVAL_METRICS) + " | s / image |")
    print("|---|" + "---:|" * (len(REMOVAL_METRICS) + 1))
    for name, *values, t in rows:
        cells = [format(v, fmt) for v, (_, _, fmt, _) in zip(values, REMOVAL_METRICS)]
        print(f"| {name} | " + " | ".join(cells) + f" | {t:.2f} |")
    speed_table(runs[1:], args.seed)


def speed_table(runs: list[Variant], seed: int, repeats: int = 3) -> None:
    """Seconds (wall and CPU, median of ``repeats``) for scikit-image's 512x512 astronaut with a 15% hole."""
    from skimage import data

    image = data.astronaut()
    hole = np.zeros(image.shape[:2], bool)
    hole[200:398, 150:348] = True  # 198 x 198: 15% of the photo, over her arm and the background
    print(f"\nSpeed: a 512x512 photo with a {hole.mean():.0%} hole (one part), median of {repeats} runs after a "
          f"warm-up\n")
    print("| engine | s (wall) | s (CPU) |")
    print("|---|---:|---:|")
    for v in runs:
        v.run(image, hole, seed)
        walls, cpus = [], []
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            v.run(image, hole, seed)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        print(f"| {v.name} | {np.median(walls):.2f} | {np.median(cpus):.2f} |")


# ----------------------------------------------------------------------------- harmonization

def perturb(image: np.ndarray, mask: np.ndarray, kind: str, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The iHarmony4 recipe: change the object's colours only."""
    obj = image[mask]
    if kind == "transfer":  # the object takes the Lab statistics of another real photo
        lab = to_lab(obj[None])[0]
        ref = to_lab(other).reshape(-1, 3)
        lab = (lab - lab.mean(0)) / np.maximum(lab.std(0), 1e-3) * ref.std(0) + ref.mean(0)
        new = from_lab(lab[None])[0]
    elif kind == "gamma":
        g = float(rng.choice([rng.uniform(0.5, 0.8), rng.uniform(1.25, 2.0)]))
        new = np.clip(np.rint(255.0 * (obj / 255.0) ** g), 0, 255).astype(np.uint8)
    else:  # white balance: per-channel gains, as from a wrong colour temperature
        gains = rng.uniform(0.7, 1.3, size=3)
        new = np.clip(np.rint(obj * gains), 0, 255).astype(np.uint8)
    out = image.copy()
    out[mask] = new
    return out


def bench_harmonization(args: argparse.Namespace, wanted: set[str] | None) -> None:
    cases = harmonization_cases(args.testdata, args.max_side)[: args.limit]
    others = real_photos(args.testdata, 256)
    samples = []
    for i, (_, img, m) in enumerate(cases):
        for j, kind in enumerate(("transfer", "gamma", "white-balance")):
            rng = np.random.default_rng([args.seed, i, j])
            other = others[int(rng.integers(len(others)))][1]
            samples.append((img, perturb(img, m, kind, other, rng), m))
    runs = [Variant("composite (baseline)", lambda image, mask, seed: image), *variants("harmonize", wanted, args.opt)]
    rows = score(runs, samples, {
        "mse": lambda out, truth, m: mse(out, truth),
        "fmse": fmse,
        "psnr": lambda out, truth, m: psnr(out, truth),
    }, args.seed)
    print(f"\nHarmonization: {len(cases)} real photos with real object masks x 3 colour perturbations "
          f"= {len(samples)} composites (seed {args.seed}); compared with the original photo\n")
    print("| engine | MSE ↓ | fMSE ↓ | PSNR (dB) ↑ | s / image |")
    print("|---|---:|---:|---:|---:|")
    for name, a, f, p, t in rows:
        print(f"| {name} | {a:.1f} | {f:.1f} | {p:.2f} | {t:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--testdata", type=Path, default=DEFAULT_TESTDATA, help="folder with manifest.json")
    ap.add_argument("--engines", default=None,
                    help="comma-separated engines or engine:method (default: every engine that needs no weights)")
    ap.add_argument("--tasks", default="remove,harmonize", help="remove, harmonize or both")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="engine option for every engine that has it, e.g. --opt strength=1.0 (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="at most this many photos per task")
    ap.add_argument("--per-photo", type=int, default=3, help="removal: object pastes per photo")
    ap.add_argument("--max-side", type=int, default=640, help="photos are shrunk to this long side first")
    args = ap.parse_args(argv)
    args.opt = dict(o.split("=", 1) for o in args.opt)
    wanted = None if args.engines is None else {e.strip() for e in args.engines.split(",") if e.strip()}
    if not (args.testdata / "manifest.json").exists():
        print(f"(no test data at {args.testdata}: scikit-image photos only)", file=sys.stderr)
    tasks = {t.strip() for t in args.tasks.split(",")}
    if "remove" in tasks:
        bench_removal(args, wanted)
    if "harmonize" in tasks:
        bench_harmonization(args, wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
