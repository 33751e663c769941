"""The one loader of diffusion components, for every engine.

Contract for engines (called from an engine's ``_load``; the engine object owns what it
loads, and the :class:`~diffcompose.EngineManager` owns the engines, so nothing is cached
here):

* ``root = self.model_dir(lambda name: resolve_sd(name, hint=...))``: what the user typed (a hub
  id or a local diffusers directory; ``"tiny"`` is the engine's registered tiny model, read by
  ``Engine.model_dir``) becomes a complete local directory, or one
  :class:`~diffcompose.errors.WeightsMissingError` line naming what is missing and the ways
  out (``--model DIR``, or an engine that needs no weights: :func:`ways_out`; engines of tasks
  such an engine does not serve pass their own ``hint``).
* ``sd = load_sd(root, device, dtype)`` gives :class:`SDComponents` (UNet, VAE, text
  encoder, tokenizer, scheduler, prediction type). Other layouts reuse the pieces:
  ``load_component(root, "unet", device, dtype)`` loads one subfolder with the class named
  in ``model_index.json`` (or the one passed as ``cls``).
* Components are frozen (``eval()``, ``requires_grad_(False)``); never modify their weights
  in place. Attention processors may be swapped for one request, under the engine's lock
  (see :mod:`diffcompose.attention`).
* Weights: safetensors preferred, ``.bin`` accepted for local directories.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffcompose.errors import WeightsMissingError
from diffcompose.models import codec
from diffcompose.models.hub import quiet_libraries, read_json, resolve_model

log = logging.getLogger(__name__)


def ways_out(first: str = "pass --model DIR (a local diffusers directory)") -> str:
    """The hint a missing-weights line ends with: ``first``, or the engines that need no weights.

    They are read from the registry when a message is written (not at import: the engines
    import this module), so this layer names no engine.
    """
    from diffcompose.methods.registry import all_engines

    weightless = [info.name for info in all_engines() if info.default_model is None]
    return f"; {first}" + (f", or use --engine {' or --engine '.join(weightless)}" if weightless else "")


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
        return codec.latent_scale(self.vae)

    @property
    def resolution(self) -> int:
        """The pixel size the UNet was trained at."""
        return codec.native_resolution(self.unet, self.vae)

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae, self.text_encoder]

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


def check_sd_dir(root: Path, parts: tuple[str, ...] = _SD_PARTS, hint: str | None = None) -> Path:
    """Refuse a directory lacking any config or weights file of ``parts`` (``hint``: default :func:`ways_out`)."""
    missing = _missing_parts(root, parts)
    if missing:
        hint = ways_out() if hint is None else hint
        raise WeightsMissingError(f"model directory {root} is incomplete: missing {', '.join(missing)}{hint}")
    return root


def resolve_sd(name: str, parts: tuple[str, ...] = _SD_PARTS, hint: str | None = None) -> Path:
    """A complete local SD directory for ``name``, a hub id or a local directory: the ``locate`` of
    :func:`~diffcompose.models.hub.resolve_name`, which reads ``tiny`` (each engine's own tiny model)
    before it gets here.

    ``hint`` ends a missing-weights line (default: :func:`ways_out`).
    """
    root = resolve_model(name, ["model_index.json"], what="model", allow_patterns=_SD_PATTERNS,
                         hint=ways_out() if hint is None else hint)
    return check_sd_dir(root, parts, hint)


def resolve_extra(name: str, required: list[str], what: str, allow_patterns: list[str] | None = None) -> Path:
    """A local directory (or hub id) for an extra network, with the same one-line errors."""
    hint = ways_out("pass a local directory for it")
    return resolve_model(name, required, what=what, allow_patterns=allow_patterns, hint=hint)


def _freeze(obj: Any) -> Any:
    if isinstance(obj, torch.nn.Module):
        obj.eval().requires_grad_(False)
    return obj


def _class_for(root: Path, component: str) -> type:
    """The class ``model_index.json`` names for ``component`` (diffusers or transformers)."""
    import diffusers
    import transformers

    defaults = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel",
                "tokenizer": "CLIPTokenizer"}
    name = defaults.get(component)
    index = root / "model_index.json"
    if index.is_file():
        entry = read_json(index, "model index").get(component)
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
    """One component of ``root`` (its ``subfolder``, default the component's name), frozen."""
    sub = subfolder or component
    quiet_libraries()
    path = Path(root) / sub
    if component == "scheduler":
        from diffusers import DDPMScheduler

        # Only the training schedule (alphas_cumprod, prediction type) is used: any SD scheduler config fits.
        return DDPMScheduler.from_pretrained(str(path))
    klass = cls or _class_for(root, component)
    if component == "tokenizer":
        return klass.from_pretrained(str(path))
    log.debug("loading %s from %s", sub, path)
    try:
        model = klass.from_pretrained(str(path), use_safetensors=_has_safetensors(path) or None, torch_dtype=dtype)
    except Exception as exc:  # missing shards, random bytes named .safetensors, configs that do not fit
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsMissingError(f"cannot load {sub} from {path}: {first}") from None
    return _freeze(model.to(device))


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors"))


def load_sd(root: Path, device: torch.device, dtype: torch.dtype) -> SDComponents:
    """The SD components of ``root`` (see the module docstring)."""
    root = Path(root)
    parts = {p: load_component(root, p, device, dtype) for p in _SD_PARTS}
    return SDComponents(root=root, device=device, dtype=dtype, **parts)


@torch.no_grad()
def encode_prompts(sd: SDComponents, prompts: list[str]) -> torch.Tensor:
    """CLIP text embeddings ``(len(prompts), 77, D)`` in the model's dtype (padded to the tokenizer's length)."""
    tok = sd.tokenizer(list(prompts), padding="max_length", max_length=sd.tokenizer.model_max_length,
                       truncation=True, return_tensors="pt")
    return sd.text_encoder(tok.input_ids.to(sd.device))[0].to(sd.dtype)


def load_adapter(source: str | Path, device: torch.device, dtype: torch.dtype) -> Any:
    """A ``T2IAdapter`` from a local directory or hub id."""
    from diffusers import T2IAdapter

    path = Path(source)
    if not path.is_dir():
        path = resolve_extra(str(source), ["config.json"], "T2I-Adapter",
                             allow_patterns=["config.json", "*.safetensors"])
    if not any((path / f).is_file() for f in _WEIGHT_FILES["unet"]):
        raise WeightsMissingError(f"T2I-Adapter directory {path} is incomplete: missing {_WEIGHT_FILES['unet'][0]}")
    return load_component(path, "adapter", device, dtype, cls=T2IAdapter, subfolder=".")


def load_vgg(source: str | Path, device: torch.device, dtype: torch.dtype) -> Any:
    """VGG16 features (:mod:`diffcompose.models.vgg`) from a file, directory or hub id."""
    from diffcompose.models.vgg import load_vgg16_file

    path = Path(source)
    if not path.exists():
        path = resolve_extra(str(source), ["model.safetensors"], "VGG16 (perceptual loss)",
                             allow_patterns=["model.safetensors", "config.json"])
    return _freeze(load_vgg16_file(path).to(device=device, dtype=dtype))
