"""The config reader every trainer shares: a YAML file with ``data``, ``model`` and ``train`` sections.

An engine declares its trainer's config as a dataclass (in its package's ``config.py``)
and reads it through :func:`load_config` / :func:`config_from_dict`, so every trainer refuses unknown keys and
out-of-range values with the same one-line errors before anything heavy is loaded, and
:func:`check_training_keys` checks the keys all of them have. No torch, no engine here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from diffcompose.errors import InputError
from diffcompose.methods.options import check_choice, check_range, check_seed, coerce, field_types

SECTIONS = ("data", "model", "train")


def check_training_keys(cfg: Any) -> None:
    """The checks of the keys every trainer's config has: data, optimisation, checkpoints, seed."""
    if not cfg.manifest:
        raise InputError("config: data.manifest is required (a COCO .json or a .jsonl manifest)")
    check_range("resolution", cfg.resolution, 64, 4096)
    if cfg.resolution % 8:
        raise InputError(f"config: resolution must be a multiple of 8, got {cfg.resolution}")
    check_range("min_area", cfg.min_area, 0.0, 1.0)
    check_range("max_area", cfg.max_area, cfg.min_area, 1.0)
    check_range("num_workers", cfg.num_workers, 0, 64)
    check_range("max_steps", cfg.max_steps, 1, 10**9)
    check_range("batch_size", cfg.batch_size, 1, 65536)
    check_range("learning_rate", cfg.learning_rate, 0.0, 1.0, lo_open=True)
    check_range("weight_decay", cfg.weight_decay, 0.0, 1.0)
    check_range("warmup_steps", cfg.warmup_steps, 0, 10**9)
    check_range("gradient_accumulation_steps", cfg.gradient_accumulation_steps, 1, 65536)
    check_range("max_grad_norm", cfg.max_grad_norm, 0.0, 1e6)
    check_choice("mixed_precision", cfg.mixed_precision, ("no", "fp16", "bf16"))
    if cfg.ema_decay is not None:
        check_range("ema_decay", cfg.ema_decay, 0.0, 1.0, hi_open=True)
    check_range("checkpoint_every", cfg.checkpoint_every, 1, 10**9)
    check_range("log_every", cfg.log_every, 1, 10**9)
    check_seed(cfg.seed, "config: seed")


def config_from_dict(raw: Any, cls: type) -> Any:
    """Flatten the ``data``/``model``/``train`` sections and build a validated ``cls`` (a trainer's config dataclass).

    Every trainer's config goes through here: values are read by their field types (YAML's
    ``1e-5`` string is a number), unknown keys and sections are refused, and a check's
    message names the key as written in the file.
    """
    if not isinstance(raw, dict):
        raise InputError("config must be a mapping with data/model/train sections")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in SECTIONS or not isinstance(value, dict):
            raise InputError(f"config: unknown section {key!r} (expected {', '.join(SECTIONS)}, each a mapping)")
        flat.update(value)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(flat) - names)
    if unknown:
        raise InputError(f"config: unknown key(s) {', '.join(unknown)}")
    hints = field_types(cls)
    typed = {k: coerce(k, hints[k], v, label=lambda n: f"config: {n}") for k, v in flat.items()}
    try:
        return cls(**typed)
    except TypeError as exc:
        raise InputError(f"config: {exc}") from None
    except InputError as exc:  # the checks name options as flags; in a config they are keys
        text = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), str(exc))
        raise InputError(text if text.startswith("config:") else f"config: {text}") from None


def load_config(path: Path, cls: type) -> Any:
    """The config in YAML file ``path`` as a ``cls``; data paths are relative to it."""
    import yaml

    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"config {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise InputError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    cfg = config_from_dict(raw or {}, cls)
    base = path.parent
    if not Path(cfg.manifest).is_absolute():  # paths in the config are relative to it
        cfg.manifest = str(base / cfg.manifest)
    if cfg.image_root and not Path(cfg.image_root).is_absolute():
        cfg.image_root = str(base / cfg.image_root)
    if not Path(cfg.manifest).is_file():
        raise InputError(f"config: data.manifest not found: {cfg.manifest}")
    if cfg.image_root and not Path(cfg.image_root).is_dir():
        raise InputError(f"config: data.image_root not found: {cfg.image_root}")
    return cfg
