"""``convert``: original checkpoints -> our safetensors layout (``convert ENGINE CKPT OUT_DIR``).

One subcommand per engine whose registration declares a
:class:`~diffcompose.methods.registry.Converter` (its help and description come from there);
every kind takes the same arguments and runs the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffcompose.methods.registry import get_engine_info, load_target, with_converter


def run_convert(args: argparse.Namespace) -> None:
    from diffcompose.errors import InputError
    from diffcompose.outdir import MODEL, check_out_dir

    # Everything the user can get wrong is checked before torch is imported (seconds).
    if not args.checkpoint.is_file():
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    if args.like is not None and not args.like.is_dir():
        raise InputError(f"--like directory not found: {args.like}")
    check_out_dir(args.out_dir, [args.checkpoint] + ([args.like] if args.like else []), force=args.force,
                  kind=MODEL)
    convert = load_target(get_engine_info(args.kind).converter.target)
    print(convert(args.checkpoint, args.out_dir, like=args.like, force=args.force))


def _arguments(p: argparse.ArgumentParser, like_help: str) -> None:
    """CKPT, OUT_DIR, --like and --force: the same for every kind."""
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--like", type=Path, default=None, help=like_help)
    p.add_argument("--force", action="store_true",
                   help="replace OUT_DIR if it exists and is a model folder this tool wrote (never any other folder)")
    p.set_defaults(func=run_convert)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an original checkpoint into a model directory (safetensors)",
                       description="Convert a published checkpoint into a directory our engines load with --model.")
    kinds = p.add_subparsers(title="checkpoint kinds", metavar="KIND", parser_class=type(p), dest="kind", required=True)
    for info in with_converter():
        c = info.converter
        _arguments(kinds.add_parser(info.name, help=c.help, description=c.description), c.like_help)
