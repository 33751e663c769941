"""``inpaint``: fill a region with what a text prompt describes."""

from __future__ import annotations

import argparse
from pathlib import Path

import diffcompose.api as api
from diffcompose.cli import common


def run_inpaint(args: argparse.Namespace) -> None:
    common.write_batch(args, (args.image, args.mask),
                       lambda: api.inpaint(args.image, args.mask, box=args.box, prompt=args.prompt,
                                           negative_prompt=args.negative_prompt,
                                           return_masks=args.mask_output is not None, **common.run_kwargs(args)),
                       mask_output=args.mask_output)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inpaint", help="fill a region with what a text prompt describes (SD inpainting, SmartBrush)",
                       description="Fill the white region of --mask (or --box, a rough region) in IMAGE with what "
                                   "--prompt describes, keeping everything else. With --num-images N > 1 the "
                                   "outputs are OUT_0.png ... OUT_{N-1}.png.")
    p.add_argument("image", type=Path, metavar="IMAGE")
    region = p.add_mutually_exclusive_group(required=True)
    region.add_argument("--mask", type=Path, default=None, help="white = the region to fill, in its exact shape")
    region.add_argument("--box", default=None,
                        help="a rough region x0,y0,x1,y1 (end-exclusive; --box=... for a value starting with '-')")
    p.add_argument("--prompt", required=True, help="what to paint, e.g. 'a red vintage armchair'")
    p.add_argument("--negative-prompt", default="", help="what to avoid (default: none)")
    p.add_argument("--mask-output", type=Path, default=None,
                   help="also write the object mask the engine predicted (engines with a mask head: smartbrush); "
                        "only its pixels were repainted")
    common.add_task_flags(p, "inpaint")
    p.set_defaults(func=run_inpaint)
