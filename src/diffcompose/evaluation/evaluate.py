"""``diffcompose evaluate``: the papers' metrics over a batch output, as tables and an HTML report.

Input: a ``diffcompose batch`` output folder (its ``results.jsonl``; see
:mod:`diffcompose.batch.manifest` for the format), the ``results.jsonl`` file itself, or a folder
of outputs plus the manifest that produced them (``<id>.png`` or ``<id>_<k>.png`` per line).

Per item, every metric that can run does; one that cannot (no ground truth, no prompt, no
reference, output of another size) is skipped for that item with the reason, never fatal.
An item with several images (``num_images``) scores the mean over them; in the set metrics
each of them is one output, and the item's real image counts once.
What each metric compares (``region``: the item's mask, else its box; ``base``: its input
image, ``image`` or ``background``; ``reference``: ``reference`` or ``obj``):

======================  ===========================================================  =========
metric                  compares                                                     needs
======================  ===========================================================  =========
mse, psnr, ssim, mae    output vs ground truth, whole image                          truth
fmse, fpsnr, fssim,     output vs ground truth over the region (fmse: iHarmony4's     truth,
fmae, texture           foreground MSE, the squared error summed over the region      region
                        and divided by its area (x channels))
bg-mse, bg-psnr         output vs base outside the region (background preservation)  region
lpips                   output vs ground truth (VGG16, v0.1 heads)                    truth
clip                    region crop of the output vs the prompt, 100 max(cos, 0)      prompt
clip-i, dino            region crop of the output vs the reference image (cosine)    reference
fid, local-fid          per task/variant: outputs vs real images (ground truth, else   2 items
                        the base); local: both cropped to the region's box
======================  ===========================================================  =========

A metric named in ``metrics`` whose weights are missing raises
:class:`~diffcompose.errors.WeightsMissingError`; with ``"all"`` it is skipped with the reason.
"""

from __future__ import annotations

import glob
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffcompose.errors import InputError, WeightsMissingError
from diffcompose.evaluation import metrics as px
from diffcompose.evaluation.catalog import (
    ALL_METRICS, PIXEL_METRICS, SET_METRICS, variant,
)

#: Sub-folder of ``--model-dir`` per model, and the CLI flag naming one directly.
MODEL_SUBDIRS = {"clip": "clip", "dino": "dinov2", "vgg": "vgg16", "inception": None}


def parse_metrics(text: str | list[str] | tuple[str, ...] | None) -> tuple[list[str], bool]:
    """(metric names, explicit): ``None`` = the pixel metrics, ``all`` = every one (missing weights skipped).

    ``text`` is the comma-separated ``--metrics``, or a list of names from Python. Naming none
    (``""``, ``[]``) is refused: it is a mistake, never a request for the default set.
    """
    if text is None:
        return list(PIXEL_METRICS), False
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        text = ",".join(text)
    if not isinstance(text, str):
        raise InputError(f"--metrics must be comma-separated names (a list of names in Python), got {text!r}")
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError(f"--metrics names no metric; choose from {', '.join(ALL_METRICS)}, pixel, all "
                         "(or leave it out for the pixel metrics)")
    if names == ["all"]:
        return list(ALL_METRICS), False
    out: list[str] = []
    for n in names:
        group = {"pixel": PIXEL_METRICS, "all": ALL_METRICS}.get(n)
        if group is None and n not in ALL_METRICS:
            raise InputError(f"--metrics: unknown metric '{n}' (choose from {', '.join(ALL_METRICS)}, pixel, all)")
        out += [m for m in (group or (n,)) if m not in out]
    return out, True


# ----------------------------------------------------------------------------- items

def _from_results(results: Path) -> list[dict]:
    """Items of a batch ``results.jsonl`` (paths made absolute; the last line per id wins, as in the batch)."""
    from diffcompose.batch.manifest import read_results_file

    root = results.parent
    items = []
    for row in read_results_file(results):  # a torn, foreign or undecodable line is skipped, not fatal
        items.append({
            "id": str(row["id"]), "task": row.get("task"), "engine": row.get("engine"),
            "status": row.get("status", "ok"), "error": row.get("error"), "seconds": row.get("seconds"),
            "outputs": [str(root / o) for o in row.get("outputs") or []],
            "inputs": dict(row.get("inputs") or {}), "ground_truth": row.get("ground_truth"),
            "options": row.get("options") or {},
        })
    return items


def _from_manifest(outputs: Path, manifest: Path) -> list[dict]:
    """Items of a manifest whose outputs sit in ``outputs`` as ``<id>.png`` / ``<id>_<k>.png``.

    The manifest is read by the batch's own reader (same ids, same resolved paths); a bad
    line, or an item without an output file, is an item with an error.
    """
    from diffcompose.batch.manifest import read_manifest

    items = []
    for item in read_manifest(manifest):
        found = sorted(outputs.glob(f"{item.id}.png")) or _numbered(outputs, item.id)
        error = item.error or (None if found else "no output file")
        items.append({"id": item.id, "task": item.task, "engine": item.engine, "status": "error" if error else "ok",
                      "error": error, "seconds": None, "outputs": [str(p) for p in found], "inputs": item.inputs,
                      "ground_truth": item.ground_truth, "options": item.options})
    return items


def _numbered(outputs: Path, ident: str) -> list[Path]:
    """``<ident>_<k>.png`` in ``outputs`` (k digits only: never another id's file), in the order of k."""
    pattern = re.compile(re.escape(ident) + r"_(\d+)\.png")
    found = [(int(m.group(1)), p) for p in outputs.glob(f"{glob.escape(ident)}_*.png")
             if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def load_items(source: str | Path, manifest: str | Path | None = None) -> list[dict]:
    """The items to score, from a batch folder, its ``results.jsonl``, or outputs + ``manifest``."""
    source = Path(source)
    if manifest is not None:
        if not source.is_dir():
            raise InputError(f"{source} is not a folder of outputs")
        if not Path(manifest).is_file():
            raise InputError(f"manifest not found: {manifest}")
        items = _from_manifest(source, Path(manifest))
    else:
        results = source / "results.jsonl" if source.is_dir() else source
        if not results.is_file():
            raise InputError(f"no results.jsonl in {source} (give a batch output folder, its results.jsonl, "
                             "or a folder of outputs with --manifest)")
        items = _from_results(results)
    if not items:
        raise InputError(f"{source} lists no items")
    return items


# ----------------------------------------------------------------------------- models

@dataclass
class Models:
    """Where the learned metrics' weights come from; loaded on first use, once."""

    model_dir: Path | None = None
    clip: str | None = None
    dino: str | None = None
    vgg: str | None = None
    inception: str | None = None
    device: str | None = None  # None: the best available (resolved at the first load; torch is imported then)
    _cache: dict[str, Any] = field(default_factory=dict)

    def _source(self, kind: str) -> str | None:
        given = getattr(self, kind)
        if given:
            return given
        sub = MODEL_SUBDIRS[kind]
        if self.model_dir is not None and sub and (self.model_dir / sub).is_dir():
            return str(self.model_dir / sub)
        return None

    def get(self, kind: str) -> Any:
        """The loaded model of ``kind`` (clip, dino, vgg, inception), or the WeightsMissingError it raised."""
        if kind not in self._cache:
            try:
                self._cache[kind] = self._load(kind)
            except WeightsMissingError as exc:
                self._cache[kind] = exc
        got = self._cache[kind]
        if isinstance(got, Exception):
            raise got
        return got

    def _load(self, kind: str) -> Any:
        from diffcompose.models.device import pick_device

        source = self._source(kind)
        self.device = str(pick_device(self.device))  # a named device is checked (InputError), not passed on raw
        if kind == "clip":
            from diffcompose.evaluation.embeddings import ClipEmbedder
            return ClipEmbedder.load(source, self.device)
        if kind == "dino":
            from diffcompose.evaluation.embeddings import DinoEmbedder
            return DinoEmbedder.load(source, self.device)
        if kind == "vgg":
            from diffcompose.evaluation.lpips import LPIPS
            return LPIPS.load(source, self.device)
        from diffcompose.evaluation.fid import load_inception
        return load_inception(source, self.model_dir, self.device)


METRIC_MODEL = {"lpips": "vgg", "clip": "clip", "clip-i": "clip", "dino": "dino", "fid": "inception",
                "local-fid": "inception"}


# ----------------------------------------------------------------------------- one item

class Skip(Exception):
    """A metric cannot run on this item; the message says why."""


@dataclass
class Loaded:
    output: np.ndarray
    base: np.ndarray | None
    truth: np.ndarray | None
    region: np.ndarray | None
    reference: np.ndarray | None
    prompt: str | None
    no_truth: str = "no ground truth"  # why ``truth`` is None: only the metrics needing it are skipped

    def need_truth(self) -> np.ndarray:
        if self.truth is None:
            raise Skip(self.no_truth)
        return self.truth

    def need_region(self) -> np.ndarray:
        if self.region is None:
            raise Skip("no mask or box")
        return self.region

    def need_base(self) -> np.ndarray:
        if self.base is None:
            raise Skip("no input image")
        return self.base

    def crop(self, image: np.ndarray) -> np.ndarray:
        """``image`` cut to the region's bounding box (the whole image without a region)."""
        if self.region is None:
            return image
        from diffcompose.inputs import mask_to_box

        return image[mask_to_box(self.region).slices]


def _load_item(item: dict) -> list[Loaded]:
    """One :class:`Loaded` per output image of ``item`` (several for ``num_images``), sharing its inputs."""
    from dataclasses import replace

    from diffcompose.inputs import load_image, load_mask, parse_box

    output = load_image(Path(item["outputs"][0]), f"{item['id']} output", max_pixels=None)
    size = (output.shape[1], output.shape[0])
    inputs = item.get("inputs") or {}
    base_path = inputs.get("image") or inputs.get("background")
    base = load_image(base_path, f"{item['id']} image", max_pixels=None) if isinstance(base_path, str) else None
    if base is not None and base.shape != output.shape:
        base = None  # an output of another size (e.g. no paste-back): no background comparison
    truth, no_truth = _ground_truth(item, output)
    region = None
    if isinstance(inputs.get("mask"), str):
        region = load_mask(inputs["mask"], size, name=f"{item['id']} mask", max_pixels=None, allow_empty=True)
    elif inputs.get("box") is not None:
        box = parse_box(inputs["box"], size, name=f"{item['id']} box")
        region = np.zeros(output.shape[:2], bool)
        region[box.slices] = True
    if region is not None and not region.any():
        region = None
    ref_path = inputs.get("reference") or inputs.get("obj")
    reference = load_image(ref_path, f"{item['id']} reference", max_pixels=None) if isinstance(ref_path, str) else None
    prompt = inputs.get("prompt") if isinstance(inputs.get("prompt"), str) and inputs.get("prompt") else None
    first = Loaded(output, base, truth, region, reference, prompt, no_truth)
    loaded = [first]
    for k, more in enumerate(item["outputs"][1:], start=1):
        image = load_image(Path(more), f"{item['id']} output {k}", max_pixels=None)
        if image.shape != output.shape:
            raise InputError(f"{item['id']}: output {k} is {image.shape[1]}x{image.shape[0]}, output 0 "
                             f"{size[0]}x{size[1]}")
        loaded.append(replace(first, output=image))
    return loaded


def _ground_truth(item: dict, output: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(the item's ground truth, why it is None): a missing, unreadable or wrong-size one costs only the
    metrics that compare with it; the background and prompt metrics of the item still come out."""
    if not isinstance(item.get("ground_truth"), str) or not item["ground_truth"]:
        return None, "no ground truth"
    from diffcompose.inputs import load_image

    try:
        truth = load_image(item["ground_truth"], f"{item['id']} ground truth", max_pixels=None)
    except InputError as exc:
        return None, " ".join(str(exc).split())
    if truth.shape != output.shape:
        return None, (f"ground truth is {truth.shape[1]}x{truth.shape[0]}, the output "
                      f"{output.shape[1]}x{output.shape[0]}")
    return truth, ""


def _pixel(name: str, d: Loaded) -> float:
    o = d.output
    if name in ("mse", "psnr", "ssim", "mae"):
        return getattr(px, name)(o, d.need_truth())
    if name in ("fmse", "fpsnr", "fssim", "fmae", "texture"):
        truth, region = d.need_truth(), d.need_region()
        fn = {"fmse": px.fmse, "fpsnr": px.psnr, "fssim": px.ssim, "fmae": px.mae, "texture": px.texture_distance}
        return fn[name](o, truth, region)
    base, region = d.need_base(), d.need_region()
    if region.all():
        raise Skip("the region covers the whole image")
    return (px.mse if name == "bg-mse" else px.psnr)(o, base, ~region)


def _model_metric(name: str, d: Loaded, models: Models) -> float:
    from diffcompose.evaluation.embeddings import clip_score, image_similarity

    if name == "lpips":
        truth = d.need_truth()
        return models.get("vgg")(d.output, truth)
    if name == "clip":
        if d.prompt is None:
            raise Skip("no prompt")
        return clip_score(models.get("clip"), d.crop(d.output), d.prompt)
    if d.reference is None:
        raise Skip("no reference image")
    return image_similarity(models.get("clip" if name == "clip-i" else "dino"), d.crop(d.output), d.reference)


def score_item(item: dict, metrics: list[str], models: Models, explicit: bool,
               features: dict[str, dict[str, list]] | None = None) -> dict:
    """``item`` with ``scores`` {metric: value} and ``skipped`` {metric: reason}. A set metric (FID)
    has no per-item value: the item's Inception features go into ``features[metric]`` (its group's)."""
    scores: dict[str, float] = {}
    skipped: dict[str, str] = {}
    item = {**item, "scores": scores, "skipped": skipped}
    if item.get("status") != "ok" or not item.get("outputs"):
        for m in metrics:
            skipped[m] = "the item failed" if item.get("status") != "ok" else "no output"
        return item
    try:
        outputs = _load_item(item)
    except InputError as exc:
        for m in metrics:
            skipped[m] = str(exc)
        return item
    for m in metrics:  # an item with several images scores their mean
        try:
            if m in SET_METRICS:  # each image is one fake; the item's real image counts once
                for k, d in enumerate(outputs):
                    _collect(m, d, models, (features or {}).setdefault(m, {}), real_too=k == 0)
                continue
            values = [_pixel(m, d) if m in PIXEL_METRICS else _model_metric(m, d, models) for d in outputs]
            scores[m] = float(np.mean(values))
        except Skip as exc:
            skipped[m] = str(exc)
        except WeightsMissingError as exc:
            if explicit:
                raise
            skipped[m] = f"weights missing: {exc}"
        except ValueError as exc:  # e.g. SSIM on a region thinner than its window
            skipped[m] = str(exc).splitlines()[0]
    return item


def _collect(name: str, d: Loaded, models: Models, features: dict[str, list], real_too: bool = True) -> None:
    """Inception features of this item's output (and, with ``real_too``, its real image) for the set
    metric ``name``."""
    from diffcompose.evaluation.fid import inception_features

    real = d.truth if d.truth is not None else d.base
    if real is None:
        raise Skip("no ground truth or input image to compare with")
    if name == "local-fid":
        d.need_region()
        pair = [d.crop(d.output), d.crop(real)]
    else:
        pair = [d.output, real]
    f = inception_features(models.get("inception"), pair if real_too else pair[:1])
    features.setdefault("fake", []).append(f[0])
    if real_too:
        features.setdefault("real", []).append(f[1])


# ----------------------------------------------------------------------------- the whole set

def _mean(values: list[float]) -> float | None:
    if not values:
        return None
    return math.inf if any(math.isinf(v) for v in values) else float(np.mean(values))


def evaluate_items(items: list[dict], metrics: list[str], models: Models, explicit: bool = False,
                   on_item: Callable[[int, int], None] | None = None) -> tuple[list[dict], list[dict]]:
    """(scored items, one aggregate row per task and :func:`variant`). See the module docstring."""
    if explicit:  # fail before any work when a named metric cannot load its model
        for m in metrics:
            if m in METRIC_MODEL:
                models.get(METRIC_MODEL[m])
    groups: dict[tuple, dict[str, dict[str, list]]] = defaultdict(lambda: {m: {} for m in SET_METRICS})
    scored = []
    for i, item in enumerate(items):
        s = score_item(item, metrics, models, explicit, features=groups[(item.get("task"), variant(item))])
        scored.append(s)
        if on_item:
            on_item(i + 1, len(items))
    aggregates = []
    for key in sorted({(s.get("task"), variant(s)) for s in scored}, key=lambda k: tuple(map(str, k))):
        rows = [s for s in scored if (s.get("task"), variant(s)) == key]
        agg: dict[str, Any] = {"task": key[0], "engine": key[1], "items": len(rows),
                               "ok": sum(r.get("status") == "ok" for r in rows),
                               "seconds": _mean([r["seconds"] for r in rows
                                                 if isinstance(r.get("seconds"), (int, float))])}
        for m in metrics:
            if m in SET_METRICS:
                from diffcompose.evaluation.fid import fid_from_features

                f = groups[key][m]
                n = len(f.get("fake", []))
                enough = n >= 2 and len(f.get("real", [])) >= 2  # a covariance needs two of each
                agg[m] = fid_from_features(np.array(f["fake"]), np.array(f["real"])) if enough else None
                agg[f"{m}_n"] = n
            else:
                agg[m] = _mean([r["scores"][m] for r in rows if m in r["scores"]])
        aggregates.append(agg)
    return scored, aggregates


# ----------------------------------------------------------------------------- writing

def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else None)
    return v


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return _json_value(obj)


def write_tables(folder: Path, scored: list[dict], aggregates: list[dict], metrics: list[str]) -> None:
    """``metrics.json`` (items + aggregates; ``"inf"`` for infinite PSNR) and ``metrics.csv`` (one row per item)."""
    import csv

    per_item = [m for m in metrics if m not in SET_METRICS]
    doc = {"metrics": metrics,
           "items": [{k: s.get(k) for k in ("id", "task", "engine", "options", "status", "error", "seconds",
                                            "outputs", "scores", "skipped")} for s in scored],
           "aggregate": aggregates}
    (folder / "metrics.json").write_text(json.dumps(_clean(doc), indent=1), encoding="utf-8")
    # Text that cannot be encoded (a lone surrogate from a shell argument or a Python caller) is
    # written escaped, never the reason the tables are missing.
    with open(folder / "metrics.csv", "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "task", "engine", "status", "seconds", *per_item, "skipped"])
        for s in scored:
            w.writerow([s["id"], s.get("task"), s.get("engine"), s.get("status"), s.get("seconds"),
                        *(_json_value(s["scores"].get(m, "")) for m in per_item),
                        "; ".join(f"{k}: {v}" for k, v in s["skipped"].items())])


def evaluate(source: str | Path, out_dir: str | Path, *, metrics: str | list[str] | None = None,
             manifest: str | Path | None = None, models: Models | None = None, force: bool = False,
             title: str | None = None, on_item: Callable[[int, int], None] | None = None) -> Path:
    """Score ``source`` and write ``metrics.csv``, ``metrics.json`` and ``report.html`` to ``out_dir``.

    ``out_dir`` is refused when it would overwrite anything this tool did not write
    (:mod:`diffcompose.outdir`); it is built beside and moved into place when complete.
    ``on_item(done, total)`` is called after each item. Returns the report's path.
    """
    from diffcompose.batch.manifest import VALUE_INPUTS
    from diffcompose.evaluation.report import item_rows, write_report
    from diffcompose.outdir import EVALUATION, building, check_out_dir

    from diffcompose.models.device import check_device_name

    names, explicit = parse_metrics(metrics)
    check_device_name(models.device if models is not None else None)  # before any item is read
    items = load_items(source, manifest)
    src = Path(source).expanduser().resolve()
    if Path(out_dir).expanduser().resolve() == src:  # --force would replace the very outputs being scored
        raise InputError(f"output directory {out_dir} is the folder being evaluated; name another folder")
    # Every file read is an input: --force may replace an earlier evaluation, never a folder holding them.
    inputs = [src] + ([Path(manifest)] if manifest is not None else [])
    inputs += [Path(p) for it in items for p in [*it["outputs"], it.get("ground_truth")] if isinstance(p, str)]
    inputs += [Path(v) for it in items for k, v in (it.get("inputs") or {}).items()
               if isinstance(v, str) and k not in VALUE_INPUTS]
    target = check_out_dir(Path(out_dir), inputs, force=force, kind=EVALUATION)
    models = models or Models()
    scored, aggregates = evaluate_items(items, names, models, explicit, on_item)
    with building(target, "evaluate", EVALUATION) as build:
        write_tables(build, scored, aggregates, names)
        write_report(build, item_rows(scored), aggregates, names, title=title or f"diffcompose evaluate: {source}")
    return target / "report.html"
