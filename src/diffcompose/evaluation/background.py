"""Background preservation of text inpainting (the metric SmartBrush motivates).

A user's region (a mask, or a box) is usually larger than the object painted into it; an
inpainting model that repaints the whole region changes background it did not need to.
For a result and its original photo this measures the error (:func:`~.metrics.mse`, 0..65025;
:func:`~.metrics.psnr`, dB, ``inf`` when identical) over three sets of pixels:

* ``outside_user``: outside the user's region (what paste-back keeps exactly, so ~0 with it);
* ``outside_predicted``: outside the object mask the engine reports (``--mask-output``;
  SmartBrush's mask head): all the background the engine claims to keep;
* ``region_background``: inside the user's region but outside the predicted mask: the
  background an engine that repaints the whole region would lose (absent when the
  predicted mask fills the region).

On a folder: ``manifest.jsonl`` in it lists the cases, paths relative to the folder::

    {"image": "photo.jpg", "box": [40, 30, 200, 220], "result": "out.png", "predicted_mask": "out_mask.png"}
    {"image": "cat.jpg", "mask": "cat_region.png", "result": "cat_out.png"}

(``predicted_mask`` optional: without it the user's region is taken as predicted.)
``python -m diffcompose.evaluation.background FOLDER`` prints one row per case and the means.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffcompose.errors import InputError
from diffcompose.evaluation.metrics import mse, psnr
from diffcompose.training.manifest import read_json_lines

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class BackgroundScores:
    """MSE (0..65025) and PSNR (dB) over each set of pixels; ``None`` where the set is empty."""

    mse_outside_user: float | None
    psnr_outside_user: float | None
    mse_outside_predicted: float | None
    psnr_outside_predicted: float | None
    mse_region_background: float | None
    psnr_region_background: float | None
    kept_share: float  # share of the user's region outside the predicted mask (0: the whole region repainted)


def _pair(selection: np.ndarray, original: np.ndarray, result: np.ndarray) -> tuple[float | None, float | None]:
    if not selection.any():
        return None, None
    return mse(result, original, selection), psnr(result, original, selection)


def background_scores(original: np.ndarray, result: np.ndarray, user_mask: np.ndarray,
                      predicted_mask: np.ndarray | None = None) -> BackgroundScores:
    """The scores of one result (``(H, W, 3)`` arrays; bool ``(H, W)`` masks, True = region / object)."""
    original, result = np.asarray(original), np.asarray(result)
    if original.shape != result.shape:
        raise ValueError(f"result {result.shape} and original {original.shape} differ in size")
    user = np.asarray(user_mask, dtype=bool)
    pred = user if predicted_mask is None else np.asarray(predicted_mask, dtype=bool)
    if user.shape != original.shape[:2] or pred.shape != original.shape[:2]:
        raise ValueError("masks must have the image's height and width")
    band = user & ~pred
    return BackgroundScores(*_pair(~user, original, result), *_pair(~pred, original, result),
                            *_pair(band, original, result),
                            kept_share=float(band.sum()) / max(1, int(user.sum())))


def _case(folder: Path, n: int, entry: Any) -> dict[str, Any]:
    from diffcompose.inputs import load_image, load_mask, parse_box

    where = f"{folder / MANIFEST}:{n}"
    if not isinstance(entry, dict) or "image" not in entry or "result" not in entry:
        raise InputError(f"{where}: expected an object with \"image\" and \"result\"")
    if ("mask" in entry) == ("box" in entry):
        raise InputError(f"{where}: give the user's region as exactly one of \"mask\" or \"box\"")
    original = load_image(folder / entry["image"], f"{where} image", max_pixels=None)
    result = load_image(folder / entry["result"], f"{where} result", max_pixels=None)
    if result.shape != original.shape:
        raise InputError(f"{where}: result is {result.shape[1]}x{result.shape[0]}, the image "
                         f"{original.shape[1]}x{original.shape[0]}")
    size = (original.shape[1], original.shape[0])
    if "mask" in entry:
        user = load_mask(folder / entry["mask"], size, name=f"{where} mask", max_pixels=None)
    else:
        box = parse_box(entry["box"], size, name=f"{where} box")
        user = np.zeros(original.shape[:2], dtype=bool)
        user[box.slices] = True
    pred = None
    if entry.get("predicted_mask"):
        pred = load_mask(folder / entry["predicted_mask"], size, name=f"{where} predicted_mask", allow_empty=True,
                         max_pixels=None)
    return {"result": str(entry["result"]), **asdict(background_scores(original, result, user, pred))}


def evaluate_folder(folder: str | Path) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """(one row per case of ``folder/manifest.jsonl``, the mean of each score over the cases that have it).

    Identical pixels have infinite PSNR; a mean with any ``inf`` is ``inf``."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InputError(f"no {MANIFEST} in {folder} (one line per case: image, mask or box, result, "
                         "predicted_mask)")
    rows = []
    for line in read_json_lines(manifest):
        if line.error is not None:
            raise InputError(f"{manifest}:{line.number}: not a JSON object")
        rows.append(_case(folder, line.number, line.value))
    if not rows:
        raise InputError(f"{manifest} lists no case")
    means: dict[str, float | None] = {}
    for key in rows[0]:
        if key == "result":
            continue
        values = [r[key] for r in rows if r[key] is not None]
        means[key] = float(np.mean(values)) if values else None
    return rows, means


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.3f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffcompose.evaluation.background",
                                     description="Background preservation of inpainting results in FOLDER "
                                                 f"(listed in FOLDER/{MANIFEST}).")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        rows, means = evaluate_folder(args.folder)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = [k for k in rows[0] if k != "result"]
    print("\t".join(["result"] + keys))
    for r in rows:
        print("\t".join([r["result"]] + [_fmt(r[k]) for k in keys]))
    print("\t".join(["mean"] + [_fmt(means[k]) for k in keys]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
