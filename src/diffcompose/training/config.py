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

from diffcompose.errors import InputError, cut, shown
from diffcompose.methods.options import check_choice, check_range, check_seed, coerce, field_types

SECTIONS = ("data", "model", "train")

#: Largest config file read (a real one is about 2 KB).
MAX_CONFIG_BYTES = 1 << 20

#: Most YAML nodes (mappings, lists, scalars) a config may hold (a real one: about 100).
MAX_NODES = 10_000


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
            raise InputError(f"config: unknown section {shown(key)} (expected {', '.join(SECTIONS)}, each a mapping)")
        flat.update(value)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in flat if k not in names), key=shown)
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise InputError(f"config: unknown key(s) {', '.join(_key(k) for k in unknown[:10])}{more}")
    hints = field_types(cls)
    # A config is text like a command line: "1e-5" (a string to YAML) is a number here.
    typed = {k: coerce(k, hints[k], v, from_text=True, label=lambda n: f"config: {n}") for k, v in flat.items()}
    try:
        return cls(**typed)
    except TypeError as exc:
        raise InputError(f"config: {exc}") from None
    except InputError as exc:  # the checks name options as flags; in a config they are keys
        text = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), str(exc))
        raise InputError(text if text.startswith("config:") else f"config: {text}") from None


def load_config(path: Path, cls: type) -> Any:
    """The config in YAML file ``path`` as a ``cls``; data paths are relative to it."""
    raw = read_yaml(path)
    cfg = config_from_dict(raw or {}, cls)
    base = path.parent
    if not Path(cfg.manifest).is_absolute():  # paths in the config are relative to it
        cfg.manifest = str(base / cfg.manifest)
    if cfg.image_root and not Path(cfg.image_root).is_absolute():
        cfg.image_root = str(base / cfg.image_root)
    if not is_file(cfg.manifest):
        raise InputError(f"config: data.manifest not found: {cut(cfg.manifest)}")
    if cfg.image_root and not is_dir(cfg.image_root):
        raise InputError(f"config: data.image_root not found: {cut(cfg.image_root)}")
    return cfg


def is_file(path: str | Path) -> bool:
    """Whether ``path`` is a file; ``False`` for a name no file can have (too long, a NUL in it)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder; ``False`` for a name no folder can have (too long, a NUL in it)."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def _key(key: Any) -> str:
    """A key as an error names it: as written when it is a short plain name, else quoted and bounded."""
    return key if isinstance(key, str) and key.isidentifier() and len(key) <= 64 else shown(key)


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (plain values only), or a one-line :class:`InputError`:
    a missing, oversized, non-UTF-8 or malformed file, or one built to expand (see the module)."""
    import yaml

    where = cut(path)
    if not is_file(path):
        raise InputError(f"config file not found: {where}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(f"config {where} is over {MAX_CONFIG_BYTES // 1024} KB; a config is a few dozen keys")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"config {where} is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_config_loader())
    except _Refused as exc:
        raise InputError(f"config {where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"config {where} is not valid YAML: {cut(str(exc).splitlines()[0])}") from None
    except ValueError:  # an integer literal over Python's digit limit
        raise InputError(f"config {where} has a number too long to read") from None
    except RecursionError:
        raise InputError(f"config {where} nests too deep for a config") from None


class _Refused(Exception):
    """What the config loader refuses to build (a bomb, too many values): said in one line."""


def _config_loader() -> type:
    """PyYAML's SafeLoader with :data:`MAX_NODES` and no alias of a mapping or list (imported lazily)."""
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                anchor = self.peek_event().anchor
                target = self.anchors.get(anchor)
                if target is not None and not isinstance(target, yaml.ScalarNode):
                    raise _Refused(f"the alias *{cut(anchor, 40)} repeats a mapping or a list; a config "
                                   "takes plain values only (write them out)")
            else:
                self.nodes += 1
                if self.nodes > MAX_NODES:
                    raise _Refused(f"more than {MAX_NODES} values; a config is a few dozen keys")
            return super().compose_node(parent, index)

    return ConfigLoader
