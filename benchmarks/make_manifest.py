"""Write a ``diffcompose batch`` manifest of N classical jobs over ../shared/testdata (not a test).

Items cycle through the removal cases (every classical removal method in turn) and, with
``--harmonize``, the harmonization cases (reinhard, poisson), so N can exceed the number of
cases: the same photo then comes back with another method or seed. Paths in the manifest
are relative to the manifest's folder, pointing into the test data (nothing is copied).

    .venv/bin/python benchmarks/make_manifest.py -n 200 -o /tmp/bench/manifest.jsonl --harmonize
    .venv/bin/python -m diffcompose batch /tmp/bench/manifest.jsonl -o /tmp/bench/out
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TESTDATA = Path(os.environ.get("DIFFCOMPOSE_TESTDATA", REPO.parent / "shared" / "testdata"))
REMOVE_METHODS = ("telea", "ns", "biharmonic", "patchmatch", "fsr-fast")
HARMONIZE_METHODS = ("reinhard", "poisson")


def jobs(testdata: Path, harmonize: bool, methods: tuple[str, ...]) -> list[tuple[str, str, dict, str]]:
    """``(task, case name, inputs, method)`` for every case and method, interleaved so any prefix is mixed."""
    cases = json.loads((testdata / "manifest.json").read_text())
    rows = []
    for method, case in itertools.product(methods, [c for c in cases if c["task"] == "removal"]):
        rows.append(("remove", case["files"]["image"], {"image": case["files"]["image"],
                                                         "mask": case["files"]["mask"]}, method))
    if harmonize:
        for method, case in itertools.product(HARMONIZE_METHODS, [c for c in cases if c["task"] == "harmonization"]):
            rows.append(("harmonize", case["files"]["composite"], {"image": case["files"]["composite"],
                                                                   "mask": case["files"]["mask"]}, method))
    # round-robin over (task, method) groups, so the first items already cover every method
    groups: dict[tuple[str, str], list] = {}
    for row in rows:
        groups.setdefault((row[0], row[3]), []).append(row)
    mixed = [r for batch in itertools.zip_longest(*groups.values()) for r in batch if r is not None]
    return mixed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--items", type=int, default=200, help="number of jobs (default: 200)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="manifest file to write (.jsonl)")
    ap.add_argument("--testdata", type=Path, default=DEFAULT_TESTDATA, help="the shared test data folder")
    ap.add_argument("--harmonize", action="store_true", help="also cycle the harmonization cases")
    ap.add_argument("--methods", default=",".join(REMOVE_METHODS),
                    help=f"removal methods to cycle (default: {','.join(REMOVE_METHODS)})")
    args = ap.parse_args(argv)
    if not (args.testdata / "manifest.json").is_file():
        print(f"no test data at {args.testdata}", file=sys.stderr)
        return 2
    if args.items < 1:
        print("--items must be at least 1", file=sys.stderr)
        return 2
    if args.output.exists():
        print(f"{args.output} exists; remove it or choose another name", file=sys.stderr)
        return 2
    pool = jobs(args.testdata, args.harmonize, tuple(m for m in args.methods.split(",") if m))
    base = args.output.resolve().parent
    lines = []
    for k, (task, name, inputs, method) in zip(range(args.items), itertools.cycle(pool)):
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name).stem)[:40]
        rel = {key: os.path.relpath(args.testdata.resolve() / path, base) for key, path in inputs.items()}
        lines.append(json.dumps({"id": f"{k:04d}-{task}-{method}-{stem}", "task": task, "engine": "classical",
                                 "inputs": rel, "options": {"method": method}, "seed": k // len(pool)}))
    args.output.write_text("\n".join(lines) + "\n")
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
