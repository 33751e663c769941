"""Locating model weights: a local directory, the HF cache, or the hub.

``resolve_name`` is the one reading of what ``--model`` says (``tiny``, nothing, or a name);
``resolve_model`` turns what the user typed (a local directory or a hub id) into a local
directory, or raises one line saying what is missing and what to do instead. Nothing is
downloaded when ``HF_HUB_OFFLINE=1`` is set; otherwise the hub is asked once (a download
is announced only once the hub has answered, so offline runs fail in one line).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable

from diffcompose.errors import PASS_MODEL, InputError, WeightsMissingError, named

log = logging.getLogger(__name__)

#: The model name that means "the tiny random model" (smoke tests, no download).
TINY = "tiny"
#: ``model_index.json`` key naming the one engine a folder was written for. A SmartBrush, PowerPaint,
#: ObjectStitch or Paint-by-Sketch folder keeps the pipeline class of the layout it borrows (so its
#: parts load as that layout's), yet only its own engine can run it: the model picker must not offer it
#: to the engines of that class. Underscored, so diffusers reads it as metadata, not as a component.
ENGINE_KEY = "_diffcompose_engine"


def engine_class(engine: str) -> str:
    """What a folder written for ``engine`` declares instead of its pipeline class (:func:`declared_classes`)."""
    return f"diffcompose:{engine}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


def read_safetensors(path: str | os.PathLike, what: str = "weights file") -> dict:
    """All tensors of a safetensors file, or one line saying it is not one (random bytes, truncated)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise WeightsMissingError(f"{what} not found: {path}") from None
    except Exception as exc:  # SafetensorError, OSError, ...: the file is not what its name says
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{what} {path} is not a readable safetensors file ({first})") from None


def read_json(path: str | os.PathLike, what: str = "config file") -> dict:
    """A JSON object from ``path``, or one line saying the file is missing or not one."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsMissingError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{what} {path} is not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise InputError(f"{what} {path} is not a JSON object")
    return value


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
    if _offline():
        raise WeightsMissingError(f"{what} '{name}' is not in the local cache and HF_HUB_OFFLINE is set{hint}")
    from huggingface_hub import model_info

    try:  # a cheap request first, so an unreachable hub fails before a download is announced
        model_info(name)
    except Exception as exc:
        raise WeightsMissingError(
            f"{what} '{name}' is not in the local cache and the hub is unreachable ({type(exc).__name__}){hint}"
        ) from None
    log.info("downloading %s %s from the hub", what, name)
    try:
        local = snapshot_download(name, allow_patterns=allow_patterns)
    except Exception as exc:
        raise WeightsMissingError(f"{what} '{name}' could not be downloaded ({type(exc).__name__}){hint}") from None
    return check_complete(Path(local), required, what)


def resolve_name(name: str | None, *, locate: Callable[[str], Path], tiny: Callable[[], Path] | None = None,
                 missing: str = f"no model given; {PASS_MODEL}") -> Path:
    """The local folder of a model name, read the same way for every engine and trainer.

    ``tiny``: the folder ``tiny`` builds (random weights, with a warning, since the output
    means nothing); nothing: one :class:`WeightsMissingError` line, ``missing`` (the caller
    applies its default first); anything else: ``locate(name)``, the caller's check of a hub
    id or local folder (its required files and its hint), normally through :func:`resolve_model`.
    """
    if not name:
        raise WeightsMissingError(missing)
    if name == TINY:
        if tiny is None:
            raise InputError(f"{named('--model', 'model')} tiny: there is no tiny model for this one; {PASS_MODEL}")
        log.warning("--model tiny: random weights, the output is noise (for smoke tests only)")
        return Path(tiny())
    return locate(name)


# ---------------------------------------------------------------------------- the local cache, read without the hub

def hub_cache() -> Path:
    """The Hugging Face hub cache folder, found the way ``huggingface_hub`` finds it (without importing it)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def in_hub_cache(repo_id: str) -> bool:
    """Whether the cache holds a snapshot of ``repo_id`` (a file look-up: no network, no import)."""
    snapshots = hub_cache() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    try:
        return any(snapshots.iterdir())
    except OSError:
        return False


def declared_classes(folder: Path) -> set[str]:
    """The classes a model folder says it holds: :func:`engine_class` of the engine its
    ``model_index.json`` names (:data:`ENGINE_KEY`), else that file's ``_class_name`` (a diffusers
    pipeline), else its ``config.json``'s ``architectures`` (transformers) or ``_class_name`` (one
    diffusers model, such as a BrushNet branch); empty if none reads."""
    for name, keys in (("model_index.json", ("_class_name",)), ("config.json", ("architectures", "_class_name"))):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if isinstance(data.get(ENGINE_KEY), str):
            return {engine_class(data[ENGINE_KEY])}
        value = next((data[k] for k in keys if data.get(k) is not None), None)
        values = value if isinstance(value, list) else [value]
        return {v for v in values if isinstance(v, str)}
    return set()


def cached_models(classes: Iterable[str]) -> list[str]:
    """Hub ids in the local cache whose latest snapshot declares one of ``classes`` (sorted)."""
    wanted = set(classes)
    found = []
    if not wanted:
        return found
    try:
        repos = sorted(hub_cache().glob("models--*"))
    except OSError:
        return found
    for repo in repos:
        try:
            snapshots = sorted((p for p in (repo / "snapshots").iterdir() if p.is_dir()),
                               key=lambda p: p.stat().st_mtime)
        except OSError:
            continue
        if snapshots and declared_classes(snapshots[-1]) & wanted:
            found.append(repo.name[len("models--"):].replace("--", "/", 1))
    return found


def quiet_libraries() -> None:
    """No per-shard progress bars or advisory notes from diffusers/transformers: we log what we load."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, found the way ``huggingface_hub`` finds it (without importing it)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface" / "hub"


def cached_snapshot(repo_id: str, required: Iterable[str]) -> Path | None:
    """A snapshot of ``repo_id`` in the hub cache holding every ``required`` file, else ``None``.

    Reads the cache's folders only (no network, no ``huggingface_hub`` import): cheap enough for
    ``auto`` to ask before it picks an engine.
    """
    snapshots = hub_cache_dir() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    try:
        candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    required = list(required)
    for snap in candidates:
        if all((snap / r).exists() for r in required):
            return snap
    return None
