"""``paint``: fill a masked region with an object that looks like a reference photo."""

from __future__ import annotations

import argparse
from pathlib import Path

import diffcompose.api as api
from diffcompose.cli import common


def _numbered(path: Path, i: int) -> Path:
    return path.with_name(f"{path.stem}_{i}{path.suffix}")


def _count(raw: object) -> int:
    """How many outputs to name; a value the engine will refuse names one (the engine says why)."""
    try:
        n = int(str(raw))
    except ValueError:
        return 1
    return n if 1 <= n <= MAX_NAMED else 1


#: More outputs than any engine makes in one batch.
MAX_NAMED = 1000


def run_paint(args: argparse.Namespace) -> None:
    inputs = (args.image, args.mask, args.reference, args.reference_mask)
    base = args.output
    n = _count(common.engine_options(args).get("num_images", 1))
    outputs = [base] if n == 1 else [_numbered(base, i) for i in range(n)]  # OUT.png -> OUT_0.png, ...
    for out in outputs:  # fail before any work if an output cannot be written
        args.output = out
        common.check_output_args(args, *inputs)
    result = api.paint(args.image, args.mask, args.reference, reference_mask=args.reference_mask,
                       **common.run_kwargs(args))
    for out, image in zip(outputs, result if isinstance(result, list) else [result]):
        args.output = out
        common.write(image, args, *inputs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paint", help="fill a masked region with an object like a reference photo (Paint-by-Example)",
                       description="Fill the white region of --mask in IMAGE with an object that looks like "
                                   "--reference, harmonised with the scene. With --num-images N > 1 the outputs "
                                   "are OUT_0.png ... OUT_{N-1}.png.")
    p.add_argument("image", type=Path, metavar="IMAGE")
    p.add_argument("--mask", type=Path, required=True, help="white = the region to fill")
    p.add_argument("--reference", type=Path, required=True, help="photo of the object to paint in")
    p.add_argument("--reference-mask", type=Path, default=None,
                   help="white = the object in the reference (its background is turned white)")
    common.add_task_flags(p, "paint")
    p.set_defaults(func=run_paint)
