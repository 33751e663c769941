"""``paint``: fill a masked region with an object that looks like a reference photo."""

from __future__ import annotations

import argparse
from pathlib import Path

import diffcompose.api as api
from diffcompose.cli import common


def run_paint(args: argparse.Namespace) -> None:
    common.write_batch(args, (args.image, args.mask, args.reference, args.reference_mask),
                       lambda: api.paint(args.image, args.mask, args.reference, reference_mask=args.reference_mask,
                                         **common.run_kwargs(args)))


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
