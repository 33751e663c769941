"""``train smartbrush --config FILE``: train SmartBrush (accelerate), or export a checkpoint. No torch at import."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_train_smartbrush(args: argparse.Namespace) -> None:
    from diffcompose.cli.train import check_run_folder, configured
    from diffcompose.methods.smartbrush.config import load_config
    from diffcompose.outdir import check_out_dir
    from diffcompose.progress import TqdmBar

    cfg = configured(args, load_config)
    if args.export is not None:
        checkpoint, out = (Path(p) for p in args.export)
        check_out_dir(out, [checkpoint], force=args.force)  # before torch is imported: a bad folder fails fast
        from diffcompose.methods.smartbrush.train import export_checkpoint

        print(export_checkpoint(cfg, checkpoint, out, force=args.force))
        return
    out = check_run_folder(cfg)
    from diffcompose.methods.smartbrush.train import train

    history = train(cfg, on_progress=TqdmBar(args.progress))
    if history.loss:
        print(f"{out / 'final'} (last loss {history.loss[-1]:.4f}: noise {history.noise[-1]:.4f}, "
              f"dice {history.dice[-1]:.4f})")


def add_parser(kinds: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``train smartbrush`` subcommand on ``kinds`` (the ``train`` command's subparsers)."""
    from diffcompose.cli.train import add_run_flags

    q = kinds.add_parser("smartbrush", help="SmartBrush, text and shape-guided inpainting with a mask head",
                         description="Train SmartBrush from a YAML config (see configs/train_smartbrush.example.yaml) "
                                     "on object instances with masks and texts (COCO polygons/RLE or .jsonl). "
                                     "Multi-GPU / multi-node: 'accelerate launch -m diffcompose train smartbrush "
                                     "--config FILE'.")
    add_run_flags(q, "configs/train_smartbrush.example.yaml")
    q.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "OUT_DIR"), default=None,
                   help="instead of training: write the model directory of CHECKPOINT (its EMA weights if any) "
                        "to OUT_DIR, for inpaint --engine smartbrush --model OUT_DIR")
    q.add_argument("--force", action="store_true", help="with --export: replace an OUT_DIR this tool wrote")
    q.set_defaults(func=run_train_smartbrush)
    return q
