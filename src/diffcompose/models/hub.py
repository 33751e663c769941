"""Locating model weights: a local directory, the HF cache, or the hub.

``resolve_model`` turns what the user typed (a local directory or a hub id) into a local
directory, or raises one line saying what is missing and what to do instead. Nothing is
downloaded when ``HF_HUB_OFFLINE=1`` is set; otherwise the hub is tried once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from diffcompose.errors import WeightsMissingError

log = logging.getLogger(__name__)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


def check_complete(root: Path, required: Iterable[str], what: str) -> Path:
    """Refuse a local model directory that lacks any of ``required`` (relative paths)."""
    missing = [r for r in required if not (root / r).exists()]
    if missing:
        raise WeightsMissingError(f"{what} directory {root} is incomplete: missing {', '.join(missing)}")
    return root


def resolve_model(name: str, required: Iterable[str] = ("model_index.json",), *, what: str = "model",
                  allow_patterns: list[str] | None = None, hint: str = "") -> Path:
    """A local directory holding ``name`` (a local path or a hub id), complete per ``required``."""
    required = list(required)
    if _looks_like_path(name):
        root = Path(name).expanduser()
        if not root.is_dir():
            raise WeightsMissingError(f"{what} directory not found: {root}{hint}")
        return check_complete(root, required, what)
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(name, local_files_only=True, allow_patterns=allow_patterns)
        return check_complete(Path(local), required, what)
    except WeightsMissingError:
        raise
    except Exception:  # not cached (or cached partially): try the hub once
        pass
    try:
        log.info("downloading %s %s from the hub", what, name)
        local = snapshot_download(name, allow_patterns=allow_patterns)
    except Exception as exc:
        reason = type(exc).__name__
        raise WeightsMissingError(
            f"{what} '{name}' is not in the local cache and the hub is unreachable ({reason}){hint}"
        ) from None
    return check_complete(Path(local), required, what)
