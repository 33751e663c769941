"""The run-folder flags every ``train ENGINE`` command takes, and the checks made before torch.

``--config`` names the trainer's YAML file; ``--max-steps``, ``--output-dir`` and
``--resume`` override its ``train`` section, so one config serves a smoke run and the real
one. Every trainer's config has these keys (see :mod:`diffcompose.training.config`), which is
what lets one command line serve every engine. Light: no torch, so a wrong flag, config or
folder fails in a second.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from diffcompose.errors import InputError, cut

#: The config keys the command line may override (each is also a ``--flag``).
OVERRIDES = ("max_steps", "output_dir", "resume")


def add_run_flags(parser: argparse.ArgumentParser, example: str) -> None:
    """The flags every ``train ENGINE`` takes: the config and the overrides of its ``train`` section."""
    parser.add_argument("--config", type=Path, required=True,
                        help=f"YAML file with data, model and train sections (see {example})")
    parser.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    parser.add_argument("--output-dir", default=None, help="override train.output_dir")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint directory (overrides train.resume)")


def configured(args: argparse.Namespace, load_config: Callable[[Path], Any], extra: tuple[str, ...] = ()) -> Any:
    """The config of ``--config`` with the command line's overrides (and a trainer's ``extra`` keys), checked again."""
    cfg = load_config(args.config)
    for key in OVERRIDES + tuple(extra):
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.__post_init__()
    return cfg


def check_run_folder(cfg: Any) -> Path:
    """The run's output folder, refused (exit 2) before torch is imported when it is not ours to write."""
    from diffcompose.outdir import TRAINING, check_out_dir

    out = Path(cfg.output_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder goes, no permission, a read-only or missing mount
        raise InputError(f"cannot create the run's folder {cut(out.parent)}: {exc.strerror or exc}") from None
    except RecursionError:  # pathlib makes each missing parent by recursion
        raise InputError(f"output_dir {cut(out)} is nested too deep ({len(out.parts)} folders)") from None
    check_out_dir(out, [Path(cfg.manifest)] + ([Path(cfg.image_root)] if cfg.image_root else []), force=False,
                  reuse=True, kind=TRAINING)
    return out
