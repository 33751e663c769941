"""What ``diffcompose demo`` runs and shows: the demos engines declare, and the report.

An engine declares a demo in its registration (``EngineInfo.demo``: ``"module:function"``
returning its :class:`Step` list for a testdata folder); the demo runs every declared demo
whose engine is installed, so it needs no weights and no network as long as the declaring
engines need none. Everything is planned first, so an existing output is refused (without
``force``) before any work. The outputs end in one page, ``report.html`` in the output
folder (the report of :mod:`diffcompose.evaluation.report`: every method side by side per
photo, then one row per output with its input, mask and seconds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from diffcompose.errors import OutputExistsError
from diffcompose.inputs.images import save_image
from diffcompose.methods.registry import all_engines, load_target

log = logging.getLogger(__name__)


@dataclass
class Step:
    """One demo output: the engine that makes it, its file name, how to make it, and what the
    report shows beside it.

    ``shown`` maps report columns (input, mask, reference) to an image, a path, or a
    callable giving one once the step has run (masks computed by an earlier step).
    """

    engine: str
    name: str
    run: Callable[[], object]
    photo: str
    task: str
    method: str
    shown: dict[str, Any] = field(default_factory=dict)


def plan(testdata: Path) -> list[Step]:
    """The steps of every declared demo whose engine is installed, in registration order."""
    steps: list[Step] = []
    for info in all_engines():
        if info.demo is not None and not info.missing_packages():
            steps += load_target(info.demo)(testdata)
    return steps


#: What the demo writes besides its images (refused like them without --force).
REPORT_NAMES = ("report.html", "report_files")


def write_report_page(out_dir: Path, done: list[tuple[Step, Path, float, dict[str, Any]]]) -> Path:
    """``out_dir/report.html``: per photo, the input and every method's output side by side, then the item table."""
    from diffcompose.evaluation.report import write_report

    galleries: dict[str, list[tuple[str, Any]]] = {}
    rows, groups = [], {}
    for step, path, secs, shown in done:
        first = [("input", shown.get("input"))] + ([("object", shown["reference"])] if "reference" in shown else [])
        strip = galleries.setdefault(step.photo, first)
        strip.append((f"{step.task}: {step.method}", path))
        rows.append({"id": Path(step.name).stem, "task": step.task, "engine": f"{step.engine}:{step.method}",
                     "status": "ok", "error": None, "seconds": secs,
                     "images": {"input": shown.get("input"), "mask": shown.get("mask"), "output": path,
                                "reference": shown.get("reference")},
                     "scores": {}, "skipped": {}})
        groups.setdefault((step.task, f"{step.engine}:{step.method}"), []).append(secs)
    aggregates = [{"task": t, "engine": e, "items": len(v), "ok": len(v),
                   "seconds": float(np.mean(v))} for (t, e), v in groups.items()]
    tasks = ", ".join(dict.fromkeys(f"{step.task} ({step.engine})" for step, *_ in done))
    return write_report(out_dir, rows, aggregates, [], title="diffcompose demo: every method on real photos",
                        intro=f"Every method of the engines' demos, side by side: {tasks}. Click a column header to "
                              "sort; click an image for full size.", galleries=list(galleries.items()))


def run(out_dir: Path, testdata: Path, *, force: bool, progress: bool = False,
        on_output: Callable[[Path], None] | None = None) -> Path:
    """Run every step into ``out_dir`` and write the report; returns the report's path.
    ``on_output`` is called with each output's path as soon as it is written."""
    steps = plan(testdata)
    if not force:
        for name in [s.name for s in steps] + list(REPORT_NAMES):
            if (out_dir / name).exists():
                raise OutputExistsError(f"output {out_dir / name} exists; pass --force to overwrite the demo outputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("demo: %d outputs into %s", len(steps), out_dir)
    done = []
    for step in tqdm(steps, desc="demo", unit="image", disable=not progress):
        t0 = time.perf_counter()
        result = step.run()
        secs = time.perf_counter() - t0
        path = save_image(result, out_dir / step.name, force=force)
        shown = {k: (v() if callable(v) else v) for k, v in step.shown.items()}
        done.append((step, path, secs, shown))
        if on_output is not None:
            on_output(path)
    return write_report_page(out_dir, done)

