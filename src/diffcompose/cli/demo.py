"""``diffcompose demo``: the engines' demos on real photos, into one HTML report (see :mod:`diffcompose.demo`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from diffcompose.errors import InputError

REPO = Path(__file__).resolve().parents[3]
DEFAULT_TESTDATA = Path(os.environ.get("DIFFCOMPOSE_TESTDATA", REPO.parent / "shared" / "testdata"))

DEFAULT_OUTPUT_DIR = Path("outputs/demo")


def run_demo(args: argparse.Namespace) -> None:
    from diffcompose import demo

    # The default folder belongs to the demo, so a rerun refreshes it; a folder the user
    # names is protected like any other output (--force to overwrite).
    out_dir: Path = args.output_dir or DEFAULT_OUTPUT_DIR
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output-dir {out_dir} exists and is not a folder")
    report = demo.run(out_dir, args.testdata, force=args.force or args.output_dir is None, progress=args.progress,
                      on_output=lambda path: print(path, flush=True))
    print(report, flush=True)  # the last line: the one page to open


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the engines' demos on real photos (no weights needed) into an HTML report",
                       description="Run every method of the engines that declare a demo (engines that need no "
                                   "weights) on scikit-image's bundled photos "
                                   "(and ../shared/testdata when present), and write the results as PNG files and a "
                                   "report.html showing them side by side (its path is the last line).")
    p.add_argument("--output-dir", type=Path, default=None,
                   help=f"folder for the results (default: {DEFAULT_OUTPUT_DIR}, refreshed on every run)")
    p.add_argument("--testdata", type=Path, default=DEFAULT_TESTDATA,
                   help="folder with manifest.json whose cases are also run when present (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite earlier results in a folder given with --output-dir")
    p.set_defaults(func=run_demo)
