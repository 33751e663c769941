"""``train pbe --config FILE``: self-reference training of Paint-by-Example (accelerate)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable


def add_run_flags(q: argparse.ArgumentParser, example: str) -> None:
    """The flags every ``train MODEL`` takes: the config and the overrides of its ``train`` section."""
    q.add_argument("--config", type=Path, required=True,
                   help=f"YAML file with data, model and train sections (see {example})")
    q.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    q.add_argument("--output-dir", default=None, help="override train.output_dir")
    q.add_argument("--resume", default=None, help="'latest' or a checkpoint directory (overrides train.resume)")


def configured(args: argparse.Namespace, load_config: Callable[[Path], Any]) -> Any:
    """The config of ``--config`` with the command line's overrides, checked again."""
    cfg = load_config(args.config)
    for key in ("max_steps", "output_dir", "resume"):
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.__post_init__()
    return cfg


def check_run_folder(cfg: Any) -> Path:
    """The run's output folder, refused (exit 2) before torch is imported when it is not ours to write."""
    from diffcompose.outdir import check_out_dir

    out = Path(cfg.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_out_dir(out, [Path(cfg.manifest)] + ([Path(cfg.image_root)] if cfg.image_root else []), force=False,
                  reuse=True)
    return out


def run_train_pbe(args: argparse.Namespace) -> None:
    from diffcompose.methods.pbe.config import load_config
    from diffcompose.progress import TqdmBar

    out = check_run_folder(cfg := configured(args, load_config))
    from diffcompose.methods.pbe.train import train

    losses = train(cfg, on_progress=TqdmBar(args.progress))
    if losses:
        print(f"{out / 'final'} (last loss {losses[-1]:.4f})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (Paint-by-Example, SmartBrush, AnyDoor)",
                       description="Train a model. Multi-GPU / multi-node: "
                                   "'accelerate launch -m diffcompose train pbe --config FILE'.")
    kinds = p.add_subparsers(title="models", metavar="MODEL", parser_class=type(p), dest="kind", required=True)
    q = kinds.add_parser("pbe", help="Paint-by-Example, self-reference training on images with object boxes",
                         description="Self-reference training of Paint-by-Example from a YAML config "
                                     "(see configs/train_pbe.example.yaml).")
    add_run_flags(q, "configs/train_pbe.example.yaml")
    q.set_defaults(func=run_train_pbe)
    from diffcompose.methods.smartbrush.cli import add_parser as add_smartbrush_parser

    add_smartbrush_parser(kinds)
    from diffcompose.methods.anydoor.config import add_parser as add_anydoor_parser

    add_anydoor_parser(kinds)
