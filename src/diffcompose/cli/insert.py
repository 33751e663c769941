"""``insert``: put the object of a reference photo into a target region of a scene."""

from __future__ import annotations

import argparse
from pathlib import Path

import diffcompose.api as api
from diffcompose.cli import common


def run_insert(args: argparse.Namespace) -> None:
    inputs = (args.image, args.mask, args.reference, args.reference_mask, args.shape_mask)
    common.write_batch(args, inputs,
                       lambda: api.insert(args.image, args.mask, args.reference, box=args.box,
                                          reference_mask=args.reference_mask, shape_mask=args.shape_mask,
                                          **common.run_kwargs(args)))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("insert", help="insert the object of a reference photo into a region (classical, "
                                      "Paint-by-Example, AnyDoor)",
                       description="Insert the object of --reference into the white region of --mask (or into "
                                   "--box) of SCENE, fitted to the region and made to belong to the scene. "
                                   "With --num-images N > 1 the outputs are OUT_0.png ... OUT_{N-1}.png.")
    p.add_argument("image", type=Path, metavar="SCENE")
    region = p.add_mutually_exclusive_group(required=True)
    region.add_argument("--mask", type=Path, default=None, help="white = the target region")
    region.add_argument("--box", default=None,
                        help="the target region x0,y0,x1,y1 (end-exclusive; --box=... for a value starting with '-')")
    p.add_argument("--reference", type=Path, required=True, help="photo of the object to insert")
    p.add_argument("--reference-mask", type=Path, default=None,
                   help="white = the object in the reference (default: its alpha, if any; anydoor needs one)")
    p.add_argument("--shape-mask", type=Path, default=None,
                   help="scene-sized mask of the shape the object should take, inside the region (shape control)")
    common.add_task_flags(p, "insert")
    p.set_defaults(func=run_insert)
