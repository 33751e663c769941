"""``diffcompose demo``: every classical engine on real photos, no weights, no network.

Photos: scikit-image's bundled ones (astronaut, coffee, chelsea; always there) and, when
present, the cases of ../shared/testdata (removal and harmonization). Everything is
planned first, so an existing output is refused (without ``--force``) before any work.
The outputs end in one page, ``report.html`` in the output folder (the report of
:mod:`diffcompose.evaluation.report`: every method side by side per photo, then one row per
output with its input, mask and seconds); its path is the last line printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

import diffcompose.api as api
from diffcompose.errors import InputError, OutputExistsError
from diffcompose.inputs import dilate_mask
from diffcompose.inputs.images import save_image

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
DEFAULT_TESTDATA = Path(os.environ.get("DIFFCOMPOSE_TESTDATA", REPO.parent / "shared" / "testdata"))

DEFAULT_OUTPUT_DIR = Path("outputs/demo")

#: Boxes around the main object of scikit-image's photos (x0, y0, x1, y1).
SKIMAGE_BOXES = {"astronaut": (140, 10, 360, 330), "coffee": (150, 10, 430, 310), "chelsea": (90, 10, 360, 300)}
#: Where the demo pastes the cat into the coffee photo.
PASTE_BOX = (400, 180, 590, 390)


@dataclass
class Step:
    """One demo output: its file name, how to make it, and what the report shows beside it.

    ``shown`` maps report columns (input, mask, reference) to an image, a path, or a
    callable giving one once the step has run (masks computed by an earlier step).
    """

    name: str
    run: Callable[[], object]
    photo: str
    task: str
    method: str
    shown: dict[str, Any] = field(default_factory=dict)


def _skimage_steps() -> list[Step]:
    from skimage import data

    photos = {name: getattr(data, name)() for name in SKIMAGE_BOXES}
    masks: dict[str, np.ndarray] = {}

    def seg(name: str) -> Callable[[], object]:
        def run() -> object:
            out = api.segment(photos[name], SKIMAGE_BOXES[name])
            masks[name] = np.asarray(out) > 0
            return out
        return run

    def rem(name: str, method: str) -> Callable[[], object]:
        # GrabCut masks hug the object: grow them a little so no outline is left behind.
        return lambda: api.remove(photos[name], dilate_mask(masks[name], 4), engine="classical", method=method)

    def box_mask(name: str, box: tuple[int, int, int, int]) -> np.ndarray:
        m = np.zeros(photos[name].shape[:2], bool)
        m[box[1]:box[3], box[0]:box[2]] = True
        return m

    steps: list[Step] = []
    for name in SKIMAGE_BOXES:
        steps.append(Step(f"{name}_segment.png", seg(name), name, "segment", "grabcut",
                          {"input": photos[name], "mask": box_mask(name, SKIMAGE_BOXES[name])}))
        steps += [Step(f"{name}_remove_{m}.png", rem(name, m), name, "remove", m,
                       {"input": photos[name], "mask": lambda n=name: dilate_mask(masks[n], 4)})
                  for m in REMOVAL_METHODS]
    paste_region = box_mask("coffee", PASTE_BOX)
    for blend in ("none", "feather", "poisson"):
        steps.append(Step(f"coffee_paste_chelsea_{blend}.png",
                          lambda b=blend: api.paste(photos["coffee"], photos["chelsea"], PASTE_BOX,
                                                       object_mask=masks["chelsea"], blend=b),
                          "coffee + chelsea", "paste", f"blend={blend}",
                          {"input": photos["coffee"], "mask": paste_region,
                           "reference": photos["chelsea"]}))
    for method in ("reinhard", "poisson"):
        steps.append(Step(f"coffee_harmonize_chelsea_{method}.png",
                          lambda m=method: api.harmonize(photos["coffee"], obj=photos["chelsea"], box=PASTE_BOX,
                                                            object_mask=masks["chelsea"], engine="classical",
                                                            method=m),
                          "coffee + chelsea", "harmonize", method,
                          {"input": photos["coffee"], "mask": paste_region,
                           "reference": photos["chelsea"]}))
    return steps


#: Every classical removal method, side by side (exemplar fills first: the default is patchmatch).
REMOVAL_METHODS = ("patchmatch", "fsr-fast", "telea", "ns", "biharmonic")


def _testdata_steps(testdata: Path) -> list[Step]:
    manifest = testdata / "manifest.json"
    if not manifest.exists():
        return []
    steps: list[Step] = []
    try:
        cases = json.loads(manifest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{manifest} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(cases, list):
        raise InputError(f"{manifest} must be a JSON list of cases")
    for i, case in enumerate(cases):
        files = case.get("files") if isinstance(case, dict) else None
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise InputError(f"{manifest}: case {i} has no \"files\" mapping of names to paths")
        f = {k: testdata / v for k, v in files.items()}
        stem = f"testdata_{i:02d}_{Path(files.get('image', files.get('composite', 'x'))).stem}"
        needs = {"removal": ("image", "mask"), "harmonization": ("composite", "mask")}.get(case.get("task"), ())
        if any(k not in f for k in needs):
            raise InputError(f"{manifest}: case {i} ({case.get('task')}) needs files {', '.join(needs)}")
        if case.get("task") == "removal":  # the default exemplar fill next to the smooth one
            steps += [Step(f"{stem}_remove_{m}.png",
                           lambda f=f, m=m: api.remove(f["image"], f["mask"], engine="classical", method=m),
                           stem, "remove", m, {"input": f["image"], "mask": f["mask"]})
                      for m in ("patchmatch", "telea")]
        elif case.get("task") == "harmonization":
            steps.append(Step(f"{stem}_harmonize_reinhard.png",
                              lambda f=f: api.harmonize(f["composite"], f["mask"], engine="classical",
                                                           method="reinhard"),
                              stem, "harmonize", "reinhard", {"input": f["composite"], "mask": f["mask"]}))
    return steps


#: What the demo writes besides its images (refused like them without --force).
REPORT_NAMES = ("report.html", "report_files")


def write_demo_report(out_dir: Path, done: list[tuple[Step, Path, float, dict[str, Any]]]) -> Path:
    """``out_dir/report.html``: per photo, the input and every method's output side by side, then the item table."""
    from diffcompose.evaluation.report import write_report

    galleries: dict[str, list[tuple[str, Any]]] = {}
    rows, groups = [], {}
    for step, path, secs, shown in done:
        first = [("input", shown.get("input"))] + ([("object", shown["reference"])] if "reference" in shown else [])
        strip = galleries.setdefault(step.photo, first)
        strip.append((f"{step.task}: {step.method}", path))
        rows.append({"id": Path(step.name).stem, "task": step.task, "engine": f"classical:{step.method}",
                     "status": "ok", "error": None, "seconds": secs,
                     "images": {"input": shown.get("input"), "mask": shown.get("mask"), "output": path,
                                "reference": shown.get("reference")},
                     "scores": {}, "skipped": {}})
        groups.setdefault((step.task, step.method), []).append(secs)
    aggregates = [{"task": t, "engine": f"classical:{m}", "items": len(v), "ok": len(v),
                   "seconds": float(np.mean(v))} for (t, m), v in groups.items()]
    return write_report(out_dir, rows, aggregates, [], title="diffcompose demo: the classical engines on real photos",
                        intro="No weights, no network: segmentation (GrabCut), removal (five fills), paste (three "
                              "blends) and harmonization. Click a column header to sort; click an image for full "
                              "size.", galleries=list(galleries.items()))


def run_demo(args: argparse.Namespace) -> None:
    # The default folder belongs to the demo, so a rerun refreshes it; a folder the user
    # names is protected like any other output (--force to overwrite).
    out_dir: Path = args.output_dir or DEFAULT_OUTPUT_DIR
    force = args.force or args.output_dir is None
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output-dir {out_dir} exists and is not a folder")
    steps = _skimage_steps() + _testdata_steps(args.testdata)
    if not force:
        for name in [s.name for s in steps] + list(REPORT_NAMES):
            if (out_dir / name).exists():
                raise OutputExistsError(f"output {out_dir / name} exists; pass --force to overwrite the demo outputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("demo: %d outputs into %s", len(steps), out_dir)
    done = []
    for step in tqdm(steps, desc="demo", unit="image", disable=not args.progress):
        t0 = time.perf_counter()
        result = step.run()
        secs = time.perf_counter() - t0
        path = save_image(result, out_dir / step.name, force=force)
        shown = {k: (v() if callable(v) else v) for k, v in step.shown.items()}
        done.append((step, path, secs, shown))
        print(path, flush=True)
    print(write_demo_report(out_dir, done), flush=True)  # the last line: the one page to open


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run every classical engine on real photos (no weights needed) into an HTML report",
                       description="Segment, remove, paste and harmonize objects in scikit-image's bundled photos "
                                   "(and ../shared/testdata when present) with the classical engines, and write "
                                   "the results as PNG files and a report.html showing them side by side (its path is "
                                   "the last line).")
    p.add_argument("--output-dir", type=Path, default=None,
                   help=f"folder for the results (default: {DEFAULT_OUTPUT_DIR}, refreshed on every run)")
    p.add_argument("--testdata", type=Path, default=DEFAULT_TESTDATA,
                   help="folder with manifest.json whose cases are also run when present (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite earlier results in a folder given with --output-dir")
    p.set_defaults(func=run_demo)
