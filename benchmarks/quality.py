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

Every engine is measured one way, through the project's own tools: the composites, masks
and true photos are written as PNG files with a ``diffcompose batch`` manifest (one line per
engine x case, the case's truth as ``ground_truth``), run with :func:`diffcompose.batch.run_batch`
and scored with :func:`diffcompose.evaluation.evaluate.evaluate` (the removal table's columns
are its ``fpsnr``, ``fssim``, ``fmae`` and ``texture``; the harmonization table's ``mse``,
``fmse`` and ``psnr``; seconds are the batch's per-item times). The baselines are not engines:
their outputs are written as a folder of outputs with its manifest, which ``evaluate`` reads
too. An LPIPS column is added when LPIPS's VGG16 weights load (``--vgg``).

    .venv/bin/python benchmarks/quality.py                 # all classical engines
    .venv/bin/python benchmarks/quality.py --engines classical:biharmonic,freecompose
    .venv/bin/python benchmarks/quality.py --tasks harmonize --opt strength=1.0
    .venv/bin/python benchmarks/quality.py --limit 1 --per-photo 1 --max-side 128 --speed-repeats 1   # smoke run
    .venv/bin/python benchmarks/quality.py --tasks insert --engines classical,objectstitch,pbe,pbsketch --model tiny \
        --metric-models tiny --max-side 128 --opt steps=2 --limit 1      # insertion pipeline smoke run
    .venv/bin/python benchmarks/quality.py --tasks remove --engines unipaint --model tiny --opt tune_steps=2 \
        --opt steps=4 --limit 2 --per-photo 1 --max-side 128 --speed-repeats 0 --smoke-metrics   # removal, tiny

Insertion (``--tasks insert``): the composition cases of the test data that have a box and an
object mask (the public ObjectStitch examples); each insert engine fills the box with the object
(an engine that takes a sketch, by its registration's ``takes``, gets the box's outline as one),
scored by CLIP-I and DINO (the box's crop against the object), bg-PSNR (background
preservation) and, when the Inception weights load, FID and local FID against the backgrounds.

``--smoke-metrics`` (removal) adds background preservation (``bg-psnr``: PSNR outside the hole
against the input) and FID of the outputs against the held-in true photos, computed by
``evaluate`` with a random-weight FID Inception: with ``--model tiny`` it shows the pipeline works
end to end (Uni-paint's row), its values mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
import typing
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

import diffcompose as dc
from diffcompose.batch import read_results, run_batch
from diffcompose.errors import WeightsMissingError
from diffcompose.evaluation.catalog import variant
from diffcompose.evaluation.evaluate import Models, evaluate
from diffcompose.inputs import Box, dilate_mask, load_image, load_mask, mask_to_box, resize_mask
from diffcompose.inputs.images import save_image
from diffcompose.methods import engines_for, get_engine_info
from diffcompose.methods.options import coerce
from diffcompose.methods.classical.harmonize import from_lab, to_lab
from diffcompose.regions.place import place

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TESTDATA = REPO.parent / "shared" / "testdata"
#: A perfect fill (e.g. a hole on a black letterbox bar) has infinite PSNR: per-image PSNR
#: is capped here before averaging.
PSNR_CAP = 60.0
#: The removal table's columns: (name, evaluate's metric, header, format, per-item value -> averaged value).
REMOVAL_METRICS: list[tuple[str, str, str, str, Callable]] = [
    ("psnr", "fpsnr", "PSNR (dB) ↑", ".2f", lambda v: min(PSNR_CAP, _value(v))),
    ("ssim", "fssim", "SSIM ↑", ".4f", float),
    ("mae", "fmae", "MAE ↓", ".2f", float),
    ("texture", "texture", "texture dist. ↓", ".2f", float),
]
LPIPS_COLUMN = ("lpips", "lpips", "LPIPS ↓", ".4f", float)
#: ``--smoke-metrics``: background preservation, and FID against the held-in true photos (random Inception).
SMOKE_METRICS = [("bg-psnr", "bg-psnr", "bg PSNR (dB) ↑", ".2f", lambda v: min(PSNR_CAP, _value(v)))]
SMOKE_FID = ("fid", "fid", "FID smoke (random Inception)", ".2f", float)


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
    """One row of a table: an engine with its options (``engine`` None: a baseline computed here)."""

    name: str
    engine: str | None
    options: dict
    run: Callable[..., np.ndarray] | None = None  # baselines only


def variants(task: str, wanted: set[str] | None, extra: dict[str, str]) -> Iterator[Variant]:
    """One variant per engine (and per value of its ``method`` option), filtered by ``--engines``.

    ``extra``: option values (``--opt KEY=VALUE``) given to every engine that has that option.
    """
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
                    opts[key] = coerce(key, hints[key], text, from_text=True)  # --opt values are text
                    name += f" {key}={text}"
            yield Variant(name, engine, opts)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


def write_cases(folder: Path, samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[dict[str, str]]:
    """Each (truth, composite, mask) as PNG files (lossless: the engines see exactly these pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, (truth, composite, mask) in enumerate(samples):
        f = {"image": f"cases/{k:04d}_composite.png", "mask": f"cases/{k:04d}_mask.png",
             "truth": f"cases/{k:04d}_truth.png"}
        save_image(composite, folder.parent / f["image"], force=True)
        save_image(mask.astype(np.uint8) * 255, folder.parent / f["mask"], force=True)
        save_image(truth, folder.parent / f["truth"], force=True)
        files.append(f)
    return files


def run_through_batch(work: Path, task: str, runs: list[Variant], samples: list, seed: int, metrics: str,
                      models: Models, model: str | None = None, sets: dict[str, dict] | None = None
                      ) -> dict[str, list[dict]]:
    """Engines via ``run_batch``, baselines as a folder of outputs; both scored by ``evaluate``.

    Returns the evaluated items of each variant, by variant name. ``model``: the ``model`` of the
    manifest lines of engines that take one (``--model``). ``sets``, when given, receives each engine
    variant's aggregate row (its set metrics, e.g. FID), by variant name.
    """
    files = write_cases(work / "cases", samples)
    lines, base_lines = [], []
    base_seconds: dict[str, float] = {}
    (work / "baselines").mkdir(parents=True, exist_ok=True)
    for v in runs:
        for k, f in enumerate(files):
            line = {"id": f"{_slug(v.name)}-{k:04d}", "task": task, "inputs": {"image": f["image"], "mask": f["mask"]},
                    "ground_truth": f["truth"], "seed": seed}
            if v.engine is None:
                t0 = time.perf_counter()
                out = v.run(load_image(work / f["image"]), load_mask(work / f["mask"]), seed)
                base_seconds[line["id"]] = time.perf_counter() - t0
                save_image(out, work / "baselines" / f"{line['id']}.png", force=True)
                base_lines.append(line)
            else:
                takes_model = model is not None and get_engine_info(v.engine).default_model is not None
                lines.append({**line, "engine": v.engine, "options": v.options, **({"model": model} if takes_model
                                                                                  else {})})
    by_id: dict[str, str] = {f"{_slug(v.name)}-{k:04d}": v.name for v in runs for k in range(len(files))}
    items: list[dict] = []
    if lines:
        (work / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        summary = run_batch(work / "manifest.jsonl", work / "batch", seed=seed, force=True)
        print(f"(batch: {summary.line()})", file=sys.stderr)
        evaluate(work / "batch", work / "evaluation", metrics=metrics, models=models, force=True)
        doc = json.loads((work / "evaluation" / "metrics.json").read_text())
        items += doc["items"]
        if sets is not None:
            names = {variant({"engine": v.engine, "options": v.options}): v.name for v in runs if v.engine}
            sets.update({names[a["engine"]]: a for a in doc["aggregate"] if a["engine"] in names})
    if base_lines:
        (work / "baselines.jsonl").write_text("".join(json.dumps(x) + "\n" for x in base_lines))
        evaluate(work / "baselines", work / "evaluation-baselines", manifest=work / "baselines.jsonl",
                 metrics=metrics, models=models, force=True)
        items += [{**i, "seconds": base_seconds.get(i["id"])}
                  for i in json.loads((work / "evaluation-baselines" / "metrics.json").read_text())["items"]]
    out: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        out[by_id[item["id"]]].append(item)
    return out


def table_rows(runs: list[Variant], scored: dict[str, list[dict]], columns: list[tuple[str, Callable]]) -> list[tuple]:
    """Per variant: its name, the mean of each column's per-item value, s / image (batch-measured)."""
    rows = []
    for v in runs:
        items = scored.get(v.name, [])
        failed = [i for i in items if i["status"] != "ok"]
        if failed:
            print(f"({v.name}: {len(failed)} items failed, e.g. {failed[0]['error']})", file=sys.stderr)
        ok = [i for i in items if i["status"] == "ok"]
        means = [float(np.mean([fn(i["scores"][key]) for i in ok if key in i["scores"]] or [np.nan]))
                 for key, fn in columns]
        secs = [i["seconds"] for i in ok if isinstance(i.get("seconds"), (int, float))]
        rows.append((v.name, *means, float(np.mean(secs)) if secs else float("nan")))
    return rows


def _value(v) -> float:
    return math.inf if v == "inf" else float(v)


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


def random_inception(seed: int):
    """The FID Inception with seeded random weights, He-initialised so its features are not all ~0 (the
    default initialisation's are about 1e-7, which makes every FID 0): a smoke run's network."""
    import torch

    from diffcompose.evaluation.fid import FIDInceptionV3

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FIDInceptionV3().eval()
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
    return net


def bench_removal(args: argparse.Namespace, wanted: set[str] | None, models: Models, lpips: bool) -> None:
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
    runs = [Variant("mean-fill (baseline)", None, {}, mean_fill), *variants("remove", wanted, args.opt)]
    metrics = REMOVAL_METRICS + ([LPIPS_COLUMN] if lpips else []) + (SMOKE_METRICS if args.smoke_metrics else [])
    sets: dict[str, dict] = {}
    if args.smoke_metrics:
        models._cache["inception"] = random_inception(args.seed)  # random weights: the FID column is a smoke run
    scored = run_through_batch(args.work_dir / "remove", "remove", runs, samples, args.seed,
                               ",".join(key for _, key, _, _, _ in metrics) + (",fid" if args.smoke_metrics else ""),
                               models, args.model, sets)
    rows = table_rows(runs, scored, [(key, fn) for _, key, _, _, fn in metrics])
    if args.smoke_metrics:  # the set metric: one value per engine row (none for the baseline)
        metrics = metrics + [SMOKE_FID]
        rows = [(name, *values, _value(sets.get(name, {}).get("fid") or math.nan), t) for name, *values, t in rows]
    print(f"\nRemoval: {len(samples)} composites = {min(len(photos), args.limit or len(photos))} real photos x "
          f"{args.per_photo} real object cut-outs pasted at random (seed {args.seed}); metrics over the hole "
          f"(PSNR capped at {PSNR_CAP:.0f} dB per image; texture distance: gradient-magnitude distributions, "
          f"0 = as sharp as the true background){'; LPIPS over the whole image' if lpips else ''}; run with "
          f"diffcompose batch, scored with diffcompose evaluate\n")
    print("| engine | " + " | ".join(header for _, _, header, _, _ in metrics) + " | s / image |")
    print("|---|" + "---:|" * (len(metrics) + 1))
    for name, *values, t in rows:
        cells = [format(v, fmt) for v, (_, _, _, fmt, _) in zip(values, metrics)]
        print(f"| {name} | " + " | ".join(cells) + f" | {t:.2f} |")
    if args.speed_repeats:
        speed_table(args.work_dir / "speed", runs[1:], args.seed, args.speed_repeats)


def speed_table(work: Path, runs: list[Variant], seed: int, repeats: int = 3) -> None:
    """Seconds for scikit-image's 512x512 astronaut with a 15% hole: per engine, a one-item warm-up batch, then
    a batch of ``repeats`` items; wall = the median of their ``seconds`` in results.jsonl (the engine call with
    the item's image reading and output writing), CPU = this process's CPU time for that batch / ``repeats``."""
    from skimage import data

    image = data.astronaut()
    hole = np.zeros(image.shape[:2], bool)
    hole[200:398, 150:348] = True  # 198 x 198: 15% of the photo, over her arm and the background
    work.mkdir(parents=True, exist_ok=True)
    save_image(image, work / "astronaut.png", force=True)
    save_image(hole.astype(np.uint8) * 255, work / "hole.png", force=True)
    print(f"\nSpeed: a 512x512 photo with a {hole.mean():.0%} hole (one part), median of {repeats} runs after a "
          f"warm-up (through diffcompose batch)\n")
    print("| engine | s (wall) | s (CPU) |")
    print("|---|---:|---:|")
    for v in runs:
        slug = _slug(v.name)
        line = {"task": "remove", "engine": v.engine, "options": v.options, "seed": seed,
                "inputs": {"image": "astronaut.png", "mask": "hole.png"}}
        (work / f"{slug}-warmup.jsonl").write_text(json.dumps({**line, "id": "warmup"}) + "\n")
        (work / f"{slug}.jsonl").write_text("".join(json.dumps({**line, "id": f"r{k}"}) + "\n"
                                                    for k in range(repeats)))
        run_batch(work / f"{slug}-warmup.jsonl", work / f"{slug}-warmup", seed=seed, force=True)
        c0 = time.process_time()
        run_batch(work / f"{slug}.jsonl", work / slug, seed=seed, force=True)
        cpu = (time.process_time() - c0) / repeats
        walls = [r["seconds"] for r in read_results(work / slug)]
        print(f"| {v.name} | {np.median(walls):.2f} | {cpu:.2f} |")


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


def bench_harmonization(args: argparse.Namespace, wanted: set[str] | None, models: Models, lpips: bool) -> None:
    cases = harmonization_cases(args.testdata, args.max_side)[: args.limit]
    others = real_photos(args.testdata, 256)
    samples = []
    for i, (_, img, m) in enumerate(cases):
        for j, kind in enumerate(("transfer", "gamma", "white-balance")):
            rng = np.random.default_rng([args.seed, i, j])
            other = others[int(rng.integers(len(others)))][1]
            samples.append((img, perturb(img, m, kind, other, rng), m))
    runs = [Variant("composite (baseline)", None, {}, lambda image, mask, seed: image),
            *variants("harmonize", wanted, args.opt)]
    columns = [("mse", float), ("fmse", float), ("psnr", _value)] + ([("lpips", float)] if lpips else [])
    scored = run_through_batch(args.work_dir / "harmonize", "harmonize", runs, samples, args.seed,
                               ",".join(key for key, _ in columns), models)
    rows = table_rows(runs, scored, columns)
    print(f"\nHarmonization: {len(cases)} real photos with real object masks x 3 colour perturbations "
          f"= {len(samples)} composites (seed {args.seed}); compared with the original photo (diffcompose batch "
          f"+ evaluate)\n")
    print("| engine | MSE ↓ | fMSE ↓ | PSNR (dB) ↑ |" + (" LPIPS ↓ |" if lpips else "") + " s / image |")
    print("|---|---:|---:|---:|" + ("---:|" if lpips else "") + "---:|")
    for name, a, f, p, *rest in rows:
        lp = f" {rest[0]:.4f} |" if lpips else ""
        print(f"| {name} | {a:.1f} | {f:.1f} | {p:.2f} |{lp} {rest[-1]:.2f} |")


# ----------------------------------------------------------------------------- insertion

def insertion_cases(testdata: Path, max_side: int) -> list[tuple[str, np.ndarray, Box, np.ndarray, np.ndarray]]:
    """Real composition cases with a box and an object mask: (name, background, box, object, object mask)."""
    out = []
    for c in manifest(testdata, "composition"):
        f = c["files"]
        if not {"background", "foreground", "foreground_mask"} <= set(f) or not ({"bbox_txt", "bbox_mask"} & set(f)):
            continue
        bg = load_image(testdata / f["background"], max_pixels=None)
        size = (bg.shape[1], bg.shape[0])
        if "bbox_txt" in f:
            x0, y0, x1, y1 = (int(v) for v in (testdata / f["bbox_txt"]).read_text().split()[:4])
            region = np.zeros(bg.shape[:2], dtype=bool)
            region[y0:y1, x0:x1] = True
        else:
            region = load_mask(testdata / f["bbox_mask"], size, max_pixels=None)
        bg, region = shrink(bg, region, max_side)
        obj = load_image(testdata / f["foreground"], max_pixels=None)
        obj_mask = load_mask(testdata / f["foreground_mask"], (obj.shape[1], obj.shape[0]), max_pixels=None)
        obj, obj_mask = shrink(obj, obj_mask, max_side)
        out.append((f["background"], bg, mask_to_box(region), obj, obj_mask))
    return out


def box_outline(shape: tuple[int, int], box: Box, width: int = 8) -> np.ndarray:
    """A sketch for engines that take one: the box's outline, ``width`` px inside its edge (white on
    black), i.e. "the object fills this shape" (nothing of the true object is drawn)."""
    out = np.zeros(shape, dtype=np.uint8)
    out[box.y0:box.y1, box.x0:box.x1] = 255
    out[box.y0 + width:box.y1 - width, box.x0 + width:box.x1 - width] = 0
    return out


def learned_metrics(models: Models, wanted: tuple[str, ...]) -> list[str]:
    """Those of ``wanted`` whose model loads (``--model-dir`` or the hub cache); the others are said and left out."""
    from diffcompose.evaluation.evaluate import METRIC_MODEL

    out = []
    for m in wanted:
        try:
            models.get(METRIC_MODEL[m])
            out.append(m)
        except WeightsMissingError as exc:
            print(f"(no {m} column: {exc})", file=sys.stderr)
    return out


def bench_insertion(args: argparse.Namespace, wanted: set[str] | None, models: Models) -> None:
    """Each insert engine puts a real object into a real background's box, through ``diffcompose batch``;
    ``evaluate`` scores the box's crop against the object (CLIP-I, DINO), the pixels outside the box
    against the background (bg-PSNR: background preservation), and per engine the outputs' FID and
    local FID against the backgrounds when the Inception weights load. With ``--model tiny`` it is a
    smoke run of that pipeline, not a quality claim."""
    cases = insertion_cases(args.testdata, args.max_side)[: args.limit]
    if not cases:
        print("(insertion: no composition cases with a box and an object mask in the test data)", file=sys.stderr)
        return
    work = args.work_dir / "insert"
    (work / "cases").mkdir(parents=True, exist_ok=True)
    runs = list(variants("insert", wanted, args.opt))
    lines = []
    for k, (_, bg, box, obj, obj_mask) in enumerate(cases):
        names = {"image": f"cases/{k:04d}_background.png", "reference": f"cases/{k:04d}_object.png",
                 "reference_mask": f"cases/{k:04d}_object_mask.png"}
        save_image(bg, work / names["image"], force=True)
        save_image(obj, work / names["reference"], force=True)
        save_image(obj_mask.astype(np.uint8) * 255, work / names["reference_mask"], force=True)
        sketch = f"cases/{k:04d}_sketch.png"
        save_image(box_outline(bg.shape[:2], box), work / sketch, force=True)
        for v in runs:
            inputs = {**names, "box": [box.x0, box.y0, box.x1, box.y1]}
            if "sketch" in get_engine_info(v.engine).takes.get("insert", ()):
                inputs["sketch"] = sketch
            line = {"id": f"{_slug(v.name)}-{k:04d}", "task": "insert", "engine": v.engine, "options": v.options,
                    "inputs": inputs, "seed": args.seed}
            if args.model and get_engine_info(v.engine).default_model is not None:
                line["model"] = args.model
            lines.append(line)
    if not lines:
        return
    (work / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    summary = run_batch(work / "manifest.jsonl", work / "batch", seed=args.seed, force=True)
    print(f"(batch: {summary.line()})", file=sys.stderr)
    metrics = ["bg-psnr", *learned_metrics(models, ("clip-i", "dino", "fid", "local-fid"))]
    evaluate(work / "batch", work / "evaluation", metrics=",".join(metrics), models=models, force=True)
    report = json.loads((work / "evaluation" / "metrics.json").read_text())
    by_id = {f"{_slug(v.name)}-{k:04d}": v.name for v in runs for k in range(len(cases))}
    scored: dict[str, list[dict]] = defaultdict(list)
    for item in report["items"]:
        scored[by_id[item["id"]]].append(item)
    per_item = [m for m in metrics if m not in ("fid", "local-fid")]
    rows = table_rows(runs, scored, [(m, _value) for m in per_item])
    sets = {a["engine"]: a for a in report.get("aggregate", [])}
    print(f"\nInsertion: {len(cases)} real backgrounds with a box and a real object with its mask (seed {args.seed}"
          f"{', model ' + args.model if args.model else ''}); diffcompose batch + evaluate\n")
    heads = {"bg-psnr": "bg-PSNR (dB) ↑", "clip-i": "CLIP-I ↑", "dino": "DINO ↑", "fid": "FID ↓",
             "local-fid": "local FID ↓"}
    set_cols = [m for m in metrics if m in ("fid", "local-fid")]
    print("| engine | " + " | ".join(heads[m] for m in per_item + set_cols) + " | s / image |")
    print("|---|" + "---:|" * (len(per_item) + len(set_cols)) + "---:|")
    for v, (name, *vals) in zip(runs, rows):
        agg = next((a for key, a in sets.items() if key.split(" ")[0] == v.engine), {})
        cells = [f"{x:.3f}" for x in vals[:-1]] + [f"{agg.get(m):.1f}" if agg.get(m) is not None else "n/a"
                                                   for m in set_cols]
        print(f"| {name} | " + " | ".join(cells) + f" | {vals[-1]:.2f} |")


def lpips_available(models: Models) -> bool:
    """Whether LPIPS's VGG16 weights load (locally or from the hub); the tables get an LPIPS column if so."""
    try:
        models.get("vgg")
        return True
    except WeightsMissingError as exc:
        print(f"(no LPIPS column: {exc})", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--testdata", type=Path, default=DEFAULT_TESTDATA, help="folder with manifest.json")
    ap.add_argument("--engines", default=None,
                    help="comma-separated engines or engine:method (default: every engine that needs no weights)")
    ap.add_argument("--tasks", default="remove,harmonize",
                    help="comma-separated: remove, harmonize, insert (insert runs the engines named in --engines)")
    ap.add_argument("--model", default=None, help="model of every torch engine named in --engines (e.g. tiny: a "
                                                  "smoke run of the pipeline, not a quality claim)")
    ap.add_argument("--metric-models", default=None,
                    help="folder of the learned metrics' weights (clip/, dinov2/, vgg16/), or 'tiny': random tiny "
                         "ones written to the work folder (a smoke run)")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="engine option for every engine that has it, e.g. --opt strength=1.0 (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="at most this many photos per task")
    ap.add_argument("--per-photo", type=int, default=3, help="removal: object pastes per photo")
    ap.add_argument("--max-side", type=int, default=640, help="photos are shrunk to this long side first")
    ap.add_argument("--speed-repeats", type=int, default=3,
                    help="removal speed table: timed runs per engine after the warm-up (0: no speed table)")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where the cases, manifests, batch outputs and reports go (default: a temporary folder, "
                         "removed at the end)")
    ap.add_argument("--smoke-metrics", action="store_true",
                    help="removal: add background preservation (bg-psnr) and FID against the held-in photos with a "
                         "random-weight FID Inception (a smoke run of the pipeline, not a quality claim)")
    ap.add_argument("--vgg", default=None, help="VGG16 for the LPIPS column (hub id or folder; default: "
                                                "timm/vgg16.tv_in1k when cached or reachable)")
    args = ap.parse_args(argv)
    args.opt = dict(o.split("=", 1) for o in args.opt)
    wanted = None if args.engines is None else {e.strip() for e in args.engines.split(",") if e.strip()}
    if not (args.testdata / "manifest.json").exists():
        print(f"(no test data at {args.testdata}: scikit-image photos only)", file=sys.stderr)
    tasks = {t.strip() for t in args.tasks.split(",")}
    with tempfile.TemporaryDirectory(prefix="diffcompose-quality-") as tmp:
        if args.work_dir is None:
            args.work_dir = Path(tmp)
        print(f"(work folder: {args.work_dir})", file=sys.stderr)
        model_dir = None if args.metric_models is None else Path(args.metric_models)
        if args.metric_models == "tiny":
            from diffcompose.evaluation.tiny import write_tiny_metric_models

            model_dir = write_tiny_metric_models(args.work_dir / "tiny-metric-models")
        models = Models(vgg=args.vgg, model_dir=model_dir)
        lpips = lpips_available(models) if tasks & {"remove", "harmonize"} else False
        if "remove" in tasks:
            bench_removal(args, wanted, models, lpips)
        if "harmonize" in tasks:
            bench_harmonization(args, wanted, models, lpips)
        if "insert" in tasks:
            bench_insertion(args, wanted, models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
