"""``train ENGINE --config FILE``: train a model (accelerate), for every engine that declares a trainer.

One subcommand per engine whose registration declares a
:class:`~diffcompose.methods.registry.Trainer`: the run-folder flags
(:mod:`diffcompose.training.run`), plus ``--export CHECKPOINT OUT_DIR`` and ``--force`` when
the trainer can export a checkpoint as a model directory. The config, the flags and the
output folder are checked before the trainer (and torch) is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from diffcompose.methods.registry import Trainer, get_engine_info, load_target, with_trainer
from diffcompose.training.run import add_run_flags, check_run_folder, configured


def last_losses(history: Any) -> str:
    """What the run ended at, for its last line: ``last loss L`` (and the named parts of a
    dataclass history whose first list is the total loss); empty when no step ran."""
    if dataclasses.is_dataclass(history):
        series = [(f.name, getattr(history, f.name)) for f in dataclasses.fields(history)]
    else:
        series = [("loss", list(history or []))]
    if not series or not series[0][1]:
        return ""
    (name, values), parts = series[0], series[1:]
    line = f"last {name} {values[-1]:.4f}"
    if parts:
        line += ": " + ", ".join(f"{part} {v[-1]:.4f}" for part, v in parts if v)
    return line


def run_train(args: argparse.Namespace) -> None:
    from diffcompose.progress import TqdmBar

    trainer: Trainer = get_engine_info(args.kind).trainer
    cfg = configured(args, load_target(trainer.config), tuple(key for key, _ in trainer.flags))
    if getattr(args, "export", None) is not None:
        from diffcompose.outdir import MODEL, check_out_dir

        checkpoint, out = (Path(p) for p in args.export)
        check_out_dir(out, [checkpoint], force=args.force, kind=MODEL)  # before torch is imported: a bad folder fails fast
        print(load_target(trainer.export)(cfg, checkpoint, out, force=args.force))
        return
    out = check_run_folder(cfg)  # before torch: a bad folder fails in a second
    history = load_target(trainer.train)(cfg, on_progress=TqdmBar(args.progress))
    if summary := last_losses(history):
        print(f"{out / 'final'} ({summary})")


def _add_export(q: argparse.ArgumentParser, engine: str, tasks: list[str]) -> None:
    q.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "OUT_DIR"), default=None,
                   help="instead of training: write the model directory of CHECKPOINT (its EMA weights if any) "
                        f"to OUT_DIR, for {'/'.join(tasks)} --engine {engine} --model OUT_DIR")
    q.add_argument("--force", action="store_true", help="with --export: replace an OUT_DIR this tool wrote")


def register(sub: argparse._SubParsersAction) -> None:
    trainers = with_trainer()
    p = sub.add_parser("train", help=f"train a model ({', '.join(info.name for info in trainers)})",
                       description="Train a model. Multi-GPU / multi-node: "
                                   "'accelerate launch -m diffcompose train MODEL --config FILE'.")
    kinds = p.add_subparsers(title="models", metavar="MODEL", parser_class=type(p), dest="kind", required=True)
    for info in trainers:
        t = info.trainer
        q = kinds.add_parser(info.name, help=t.help, description=t.description)
        add_run_flags(q, t.example)
        for key, help in t.flags:  # the trainer's own config keys on the command line
            q.add_argument("--" + key.replace("_", "-"), default=None, help=help)
        if t.export is not None:
            _add_export(q, info.name, list(info.tasks))
        q.set_defaults(func=run_train)
