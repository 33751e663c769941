"""Loading diffusion components once, for every engine.

Contract for engines:

* ``root = resolve_sd(runtime.model)``: what the user typed (``None`` = :data:`DEFAULT_SD`,
  a hub id, a local diffusers directory, or ``"tiny"``) becomes a complete local directory,
  or one :class:`~diffcompose.errors.WeightsMissingError` line naming what is missing and the
  ways out (``--model DIR``, ``--engine classical``).
* ``sd = load_sd(root, device, dtype)`` gives :class:`SDComponents` (UNet, VAE, text
  encoder, tokenizer, scheduler, prediction type, VAE scaling factor). Other layouts reuse
  the pieces: ``load_component(root, "unet", device, dtype)`` loads one subfolder with the
  class named in ``model_index.json`` (or the one passed as ``cls``).
* Every component is cached per process, keyed by ``(directory, component, device,
  dtype)``: the three FreeCompose tasks and any other engine share one copy. Components are
  frozen (``eval()``, ``requires_grad_(False)``); never modify their weights in place.
  Attention processors may be swapped temporarily (see :mod:`diffcompose.attention`).
* Weights: safetensors preferred, ``.bin`` accepted for local directories.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from diffcompose.errors import WeightsMissingError
from diffcompose.models.hub import resolve_model

log = logging.getLogger(__name__)

#: Default checkpoint: SD 1.5 (the T2I-Adapters FreeCompose uses are trained for it).
DEFAULT_SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY = "tiny"
WAYS_OUT = "; pass --model DIR (a local diffusers directory), or use --engine classical"

_SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_WEIGHT_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}
_CONFIG_FILES = {"scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json"}
_SD_PATTERNS = ["model_index.json", "*/config.json", "scheduler/scheduler_config.json", "tokenizer/*",
                "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors"]

_CACHE: dict[tuple[str, str, str, str], Any] = {}
_LOCK = threading.Lock()


@dataclass
class SDComponents:
    """A Stable Diffusion 1.x/2.x checkpoint's parts, frozen, on one device and dtype."""

    root: Path
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def prediction_type(self) -> str:
        """``epsilon`` or ``v_prediction`` (SD 2.x 768)."""
        return self.scheduler.config.get("prediction_type", "epsilon")

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.get("scaling_factor", 0.18215))

    @property
    def resolution(self) -> int:
        """The pixel size the UNet was trained at (sample size x 8)."""
        return int(self.unet.config.sample_size) * 8

    @property
    def is_tiny(self) -> bool:
        return is_tiny_dir(self.root)


def is_tiny_dir(root: Path) -> bool:
    try:
        return "diffcompose_tiny" in json.loads((Path(root) / "model_index.json").read_text())
    except (OSError, ValueError):
        return False


def _missing_parts(root: Path, parts: tuple[str, ...]) -> list[str]:
    missing = []
    for part in parts:
        if part in _WEIGHT_FILES:
            if not (root / part / "config.json").is_file():
                missing.append(f"{part}/config.json")
            if not any((root / part / f).is_file() for f in _WEIGHT_FILES[part]):
                missing.append(f"{part}/{_WEIGHT_FILES[part][0]}")
        elif part == "tokenizer":
            if not ((root / part / "tokenizer.json").is_file() or (root / part / "vocab.json").is_file()):
                missing.append("tokenizer/vocab.json (or tokenizer.json)")
        elif not (root / part / _CONFIG_FILES.get(part, "config.json")).is_file():
            missing.append(f"{part}/{_CONFIG_FILES.get(part, 'config.json')}")
    return missing


def check_sd_dir(root: Path, parts: tuple[str, ...] = _SD_PARTS) -> Path:
    """Refuse a directory lacking any config or weights file of ``parts``."""
    missing = _missing_parts(root, parts)
    if missing:
        raise WeightsMissingError(f"model directory {root} is incomplete: missing {', '.join(missing)}{WAYS_OUT}")
    return root


def resolve_sd(model: str | None, parts: tuple[str, ...] = _SD_PARTS) -> Path:
    """A complete local SD directory for ``model`` (``None``: :data:`DEFAULT_SD`; ``"tiny"``: the random one)."""
    name = model or DEFAULT_SD
    if name == TINY:
        from diffcompose.models.tiny import ensure_tiny_model

        log.warning("--model tiny: random weights, the output is noise (for smoke tests only)")
        return check_sd_dir(ensure_tiny_model(), parts)
    root = resolve_model(name, ["model_index.json"], what="model", allow_patterns=_SD_PATTERNS, hint=WAYS_OUT)
    return check_sd_dir(root, parts)


def resolve_extra(name: str, required: list[str], what: str, allow_patterns: list[str] | None = None) -> Path:
    """A local directory (or hub id) for an extra network, with the same one-line errors."""
    hint = "; pass a local directory for it, or use --engine classical"
    return resolve_model(name, required, what=what, allow_patterns=allow_patterns, hint=hint)


def cached(key: tuple[str, str, str, str], build: Callable[[], Any]) -> Any:
    """Process-level cache of frozen components (built once, under a lock)."""
    with _LOCK:
        if key not in _CACHE:
            obj = build()
            if isinstance(obj, torch.nn.Module):
                obj.eval().requires_grad_(False)
            _CACHE[key] = obj
        return _CACHE[key]


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def _class_for(root: Path, component: str) -> type:
    """The class ``model_index.json`` names for ``component`` (diffusers or transformers)."""
    import diffusers
    import transformers

    defaults = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel",
                "tokenizer": "CLIPTokenizer"}
    name = defaults.get(component)
    index = root / "model_index.json"
    if index.is_file():
        entry = json.loads(index.read_text()).get(component)
        if isinstance(entry, list) and len(entry) == 2 and entry[1]:
            name = entry[1]
    if name is None:
        raise WeightsMissingError(f"model directory {root}: no class known for component '{component}'")
    for lib in (diffusers, transformers):
        cls = getattr(lib, name, None)
        if cls is not None:
            return cls
    if name.endswith("Fast") and hasattr(transformers, name[:-4]):  # v5 merged fast tokenizers
        return getattr(transformers, name[:-4])
    raise WeightsMissingError(f"model directory {root}: unknown class {name} for '{component}'")


def load_component(root: Path, component: str, device: torch.device, dtype: torch.dtype,
                   cls: type | None = None, subfolder: str | None = None) -> Any:
    """One component of ``root`` (its ``subfolder``, default the component's name), cached."""
    sub = subfolder or component
    key = (str(Path(root).resolve()), sub, str(device), str(dtype))

    def build() -> Any:
        quiet_libraries()
        klass = cls or _class_for(root, component)
        path = Path(root) / sub
        if component == "scheduler":
            from diffusers import DDPMScheduler

            # Only the training schedule (alphas_cumprod, prediction type) is used: any SD scheduler config fits.
            return DDPMScheduler.from_pretrained(str(path))
        if component == "tokenizer":
            return klass.from_pretrained(str(path))
        log.debug("loading %s from %s", sub, path)
        try:
            model = klass.from_pretrained(str(path), use_safetensors=_has_safetensors(path) or None,
                                          torch_dtype=dtype)
        except (OSError, ValueError) as exc:
            raise WeightsMissingError(f"cannot load {sub} from {path}: {str(exc).splitlines()[0]}") from None
        return model.to(device)

    return cached(key, build)


def quiet_libraries() -> None:
    """No per-shard progress bars from diffusers/transformers: we log what we load."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors"))


def load_sd(root: Path, device: torch.device, dtype: torch.dtype) -> SDComponents:
    """The SD components of ``root`` (see the module docstring), shared across calls."""
    root = Path(root)
    parts = {p: load_component(root, p, device, dtype) for p in _SD_PARTS}
    return SDComponents(root=root, device=device, dtype=dtype, **parts)


def load_adapter(source: str | Path, device: torch.device, dtype: torch.dtype) -> Any:
    """A ``T2IAdapter`` from a local directory or hub id, cached."""
    from diffusers import T2IAdapter

    path = Path(source)
    if not path.is_dir():
        path = resolve_extra(str(source), ["config.json"], "T2I-Adapter",
                             allow_patterns=["config.json", "*.safetensors"])
    if not any((path / f).is_file() for f in _WEIGHT_FILES["unet"]):
        raise WeightsMissingError(f"T2I-Adapter directory {path} is incomplete: missing {_WEIGHT_FILES['unet'][0]}")
    return load_component(path, "adapter", device, dtype, cls=T2IAdapter, subfolder=".")


def load_vgg(source: str | Path, device: torch.device, dtype: torch.dtype) -> Any:
    """VGG16 features (:mod:`diffcompose.models.vgg`) from a file, directory or hub id, cached."""
    from diffcompose.models.vgg import load_vgg16_file

    path = Path(source)
    if not path.exists():
        path = resolve_extra(str(source), ["model.safetensors"], "VGG16 (perceptual loss)",
                             allow_patterns=["model.safetensors", "config.json"])
    key = (str(path.resolve()), "vgg16", str(device), str(dtype))
    return cached(key, lambda: load_vgg16_file(path).to(device=device, dtype=dtype))
