"""``compose``: re-shape a pasted object to follow an edited condition map (FreeCompose)."""

from __future__ import annotations

import argparse
from pathlib import Path

import diffcompose.api as api
from diffcompose.cli import common


def run_compose(args: argparse.Namespace) -> None:
    inputs = (args.image, args.edited_condition, args.condition, args.mask)
    common.check_output_args(args, *inputs)
    out = api.compose(args.image, args.edited_condition, condition=args.condition,
                      condition_type=args.condition_type, mask=args.mask, prompt=args.prompt,
                      **common.run_kwargs(args))
    common.write(out, args, *inputs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compose", help="re-shape a pasted object to follow an edited edge map or sketch",
                       description="Semantic composition: change IMAGE so that its condition map (canny edges or "
                                   "a sketch) becomes --edited-condition, keeping its appearance.")
    p.add_argument("image", type=Path, metavar="IMAGE", help="the image, object already pasted in")
    p.add_argument("--edited-condition", type=Path, required=True,
                   help="the wanted condition map (white edges/strokes on black), IMAGE's size")
    p.add_argument("--condition", type=Path, default=None,
                   help="IMAGE's own condition map (default for canny: computed with OpenCV)")
    p.add_argument("--condition-type", choices=["canny", "sketch"], default="canny",
                   help="kind of condition map, which picks the T2I-Adapter (default: canny)")
    p.add_argument("--mask", type=Path, default=None, help="white = the region allowed to change (default: all)")
    p.add_argument("--prompt", default="", help="what the object is, e.g. 'A toy.'")
    common.add_task_flags(p, "compose")
    p.set_defaults(func=run_compose)
