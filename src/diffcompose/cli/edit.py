"""``remove``, ``paste``, ``harmonize`` and ``segment``."""

from __future__ import annotations

import argparse
from pathlib import Path

import diffcompose.api as api
from diffcompose.cli import common


def run_remove(args: argparse.Namespace) -> None:
    common.check_output_args(args, args.image, args.mask)
    out = api.remove(args.image, args.mask, **common.run_kwargs(args))
    common.write(out, args, args.image, args.mask)


def run_paste(args: argparse.Namespace) -> None:
    common.check_output_args(args, args.background, args.object, args.object_mask)
    out = api.paste(args.background, args.object, args.box, object_mask=args.object_mask, **common.run_kwargs(args))
    common.write(out, args, args.background, args.object, args.object_mask)


def run_harmonize(args: argparse.Namespace) -> None:
    common.check_output_args(args, args.image, args.mask, args.object, args.object_mask)
    out = api.harmonize(args.image, args.mask, obj=args.object, box=args.box, object_mask=args.object_mask,
                        **common.run_kwargs(args))
    common.write(out, args, args.image, args.mask, args.object, args.object_mask)


def run_segment(args: argparse.Namespace) -> None:
    common.check_output_args(args, args.image)
    out = api.run("segment", {"image": args.image, "box": args.box, "points": args.points}, **common.run_kwargs(args))
    common.write(out, args, args.image)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remove", help="remove an object and fill the hole from its surroundings",
                       description="Remove the object under MASK (white) from IMAGE.")
    p.add_argument("image", type=Path, metavar="IMAGE")
    p.add_argument("--mask", type=Path, required=True, help="white = the object to remove (any size-matched mask file)")
    common.add_task_flags(p, "remove")
    p.set_defaults(func=run_remove)

    p = sub.add_parser("paste", help="place an object into a background at a box",
                       description="Paste OBJECT (cut out by --object-mask or its alpha) into BACKGROUND inside "
                                   "--box, scaled to fit and keeping its aspect ratio.")
    p.add_argument("background", type=Path, metavar="BACKGROUND")
    p.add_argument("--object", type=Path, required=True, help="the object photo (its alpha is used as mask if any)")
    p.add_argument("--object-mask", type=Path, default=None, help="white = the object in the object photo")
    p.add_argument("--box", required=True,
                   help="target box x0,y0,x1,y1 in background pixels (end-exclusive; write --box=... for a value "
                        "starting with '-')")
    common.add_task_flags(p, "paste", paste_back=False, runtime=False)
    p.set_defaults(func=run_paste)

    p = sub.add_parser("harmonize", help="make a pasted object match its surroundings",
                       description="Harmonize the object marked by --mask in composite IMAGE, or paste --object at "
                                   "--box into background IMAGE first.")
    p.add_argument("image", type=Path, metavar="IMAGE")
    p.add_argument("--mask", type=Path, default=None, help="white = the pasted object in IMAGE")
    p.add_argument("--object", type=Path, default=None, help="object photo to paste first (IMAGE is then the background)")
    p.add_argument("--object-mask", type=Path, default=None, help="white = the object in the object photo")
    p.add_argument("--box", default=None, help="where to paste --object: x0,y0,x1,y1 (--box=... for a value starting with '-')")
    common.add_task_flags(p, "harmonize")
    p.set_defaults(func=run_harmonize)

    p = sub.add_parser("segment", help="an object mask from a box around it (GrabCut) and/or clicks (SAM)",
                       description="Write a mask (white = object) of the object inside --box and/or under --points "
                                   "(--engine sam; the classical engine, GrabCut, needs --box and ignores points).")
    p.add_argument("image", type=Path, metavar="IMAGE")
    p.add_argument("--box", default=None, help="box around the object: x0,y0,x1,y1 (end-exclusive; --box=... for a "
                        "value starting with '-')")
    p.add_argument("--points", default=None, help="clicks x,y,label;x,y,label (label 1: on the object, 0: background; "
                        "quote it for the shell)")
    common.add_task_flags(p, "segment", paste_back=False)
    p.set_defaults(func=run_segment)
