"""Reading PowerPaint's public checkpoints: ``diffcompose convert powerpaint`` and the engine's
in-memory load of the public v1 folder.

The public files and their key families (every key must be one of these; anything else is a
one-line :class:`InputError`):

* **v1** ``unet/unet.safetensors``: a diffusers SD-inpainting ``UNet2DConditionModel`` state
  dict (its keys and shapes must be exactly those of the ``--like`` model's UNet config);
  ``text_encoder/text_encoder.safetensors``: the CLIP text encoder as the public code wraps it:
  ``text_model.embeddings.token_embedding.wrapped.weight`` (the vocabulary's rows),
  ``text_model.embeddings.token_embedding.trainable_embeddings.P_ctxt|P_shape|P_obj`` (10 learned
  vectors each), every other ``text_model.{embeddings,encoder,final_layer_norm}.*`` weight as in
  ``CLIPTextModel`` (the same keys without ``text_model.``, as transformers 5 writes them, are
  read too).
* **v2** ``PowerPaint_Brushnet/diffusion_pytorch_model.safetensors``: the BrushNet branch (with
  cross-attention), diffusers keys; ``PowerPaint_Brushnet/pytorch_model.bin``: its text
  encoder, wrapped as above (read with the weights-only unpickler); the base model is a diffusers
  SD-1.5 folder (the checkpoint's ``realisticVisionV60B1_v51VAE/``, or ``--like``).

What is written: a diffusers folder whose text encoder holds the learned vectors as its
embedding matrix's last 30 rows and whose tokenizer has the 30 task words (:mod:`.tokens`), and
``model_index.json`` with ``powerpaint_version``. CKPT is the version's main weights file
(``unet/unet.safetensors`` or ``PowerPaint_Brushnet/diffusion_pytorch_model.safetensors``); its
companions are found beside it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from diffcompose.errors import InputError, WeightsMissingError
from diffcompose.methods.pbe.convert import load_checkpoint, strict_load
from diffcompose.methods.powerpaint.prompts import TASK_TOKENS, VECTORS_PER_TOKEN
from diffcompose.methods.powerpaint.tokens import add_task_words, install_task_vectors
from diffcompose.models.hub import ENGINE_KEY
from diffcompose.outdir import MODEL, building, check_out_dir

log = logging.getLogger(__name__)

#: The public text encoder's wrapped embedding layer (keys without the ``text_model.`` prefix that
#: transformers before 5 wrote and the published files carry; both are read).
WRAPPED = "embeddings.token_embedding.wrapped.weight"
TRAINABLE = "embeddings.token_embedding.trainable_embeddings."
TOKEN_EMBEDDING = "embeddings.token_embedding.weight"
#: The CLIP text transformer's own key families.
CLIP_FAMILIES = ("embeddings.", "encoder.", "final_layer_norm.")
OLD_PREFIX = "text_model."
#: v1's files, relative to the checkpoint folder.
V1_UNET, V1_TEXT = "unet/unet.safetensors", "text_encoder/text_encoder.safetensors"
#: v2's files, relative to the checkpoint folder, and the base model folder it ships.
V2_BRUSHNET, V2_TEXT, V2_BASE = ("PowerPaint_Brushnet/diffusion_pytorch_model.safetensors",
                                 "PowerPaint_Brushnet/pytorch_model.bin", "realisticVisionV60B1_v51VAE")


def split_text_encoder(state: dict[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor],
                                                                             dict[str, torch.Tensor]]:
    """A public (wrapped) text encoder state -> ``(CLIP text state without prefix, {placeholder: (10, D)})``."""
    plain: dict[str, torch.Tensor] = {}
    vectors: dict[str, torch.Tensor] = {}
    for full, value in state.items():
        key = full[len(OLD_PREFIX):] if full.startswith(OLD_PREFIX) else full
        if key == WRAPPED:
            plain[TOKEN_EMBEDDING] = value
        elif key.startswith(TRAINABLE):
            name = key[len(TRAINABLE):]
            if name not in TASK_TOKENS:
                raise InputError(f"{source}: unknown task token {name!r} (PowerPaint has {', '.join(TASK_TOKENS)})")
            vectors[name] = value
        elif key.endswith("position_ids"):
            continue  # a buffer older transformers saved; rebuilt on load
        elif key == TOKEN_EMBEDDING:
            raise InputError(f"{source} is a plain CLIP text encoder, not PowerPaint's: no task-token wrapper "
                             f"({WRAPPED}, {TRAINABLE}P_*)")
        elif key.startswith(CLIP_FAMILIES):
            plain[key] = value
        else:
            raise InputError(f"{source}: unexpected key {full!r} for a PowerPaint text encoder")
    if TOKEN_EMBEDDING not in plain:
        raise InputError(f"{source} is not a PowerPaint text encoder: no {WRAPPED} (the task-token wrapper)")
    missing = [t for t in TASK_TOKENS if t not in vectors]
    if missing:
        raise InputError(f"{source}: no learned vectors for {', '.join(missing)}")
    width = plain[TOKEN_EMBEDDING].shape[1]
    for name, v in vectors.items():
        if tuple(v.shape) != (VECTORS_PER_TOKEN, width):
            raise InputError(f"{source}: {name} has shape {tuple(v.shape)}, expected ({VECTORS_PER_TOKEN}, {width})")
    return plain, vectors


def model_keys(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (keys without prefix) named as ``model`` names them (``text_model.`` before transformers 5)."""
    prefixed = any(k.startswith(OLD_PREFIX) for k in model.state_dict())
    return {OLD_PREFIX + k: v for k, v in state.items()} if prefixed else state


def task_text_encoder(config: Any, state: dict[str, torch.Tensor], source: str) -> Any:
    """A ``CLIPTextModel`` of ``config`` holding a public task-token text encoder's weights and vectors."""
    from transformers import CLIPTextModel

    plain, vectors = split_text_encoder(state, source)
    vocab = plain[TOKEN_EMBEDDING].shape[0]
    model = CLIPTextModel(type(config)(**{**config.to_dict(), "vocab_size": vocab}))
    strict_load(model, model_keys(model, plain), f"{source} (text encoder)")
    install_task_vectors(model, vectors, vocab)
    return model.eval()


def is_public_v1(root: Path) -> bool:
    return (root / V1_UNET).is_file() and (root / V1_TEXT).is_file()


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"PowerPaint checkpoint file not found: {path}")
    return load_checkpoint(path)


def v1_parts(root: Path, base: Path) -> tuple[Any, Any, Any]:
    """``(unet, text_encoder, tokenizer)`` of the public v1 folder ``root`` on the configs of the SD-1.5
    inpainting folder ``base`` (float32, CPU)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(base / "unet")))
    if unet.config.in_channels != 9:
        raise InputError(f"{base} is not an SD inpainting model (its UNet takes {unet.config.in_channels} channels, "
                         "PowerPaint v1 9)")
    strict_load(unet, _read(root / V1_UNET), f"{root / V1_UNET} (UNet)")
    config = CLIPTextConfig.from_pretrained(str(base / "text_encoder"))
    text = task_text_encoder(config, _read(root / V1_TEXT), str(root / V1_TEXT))
    tokenizer = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    ids = add_task_words(tokenizer)
    if ids[0] != text.config.vocab_size - len(ids):
        raise InputError(f"{root / V1_TEXT}: its vocabulary ({text.config.vocab_size - len(ids)} words) is not the "
                         f"tokenizer's ({ids[0]}) of {base}")
    return unet.eval(), text, tokenizer


def load_public_v1(root: Path, device: torch.device, dtype: torch.dtype) -> Any:
    """The public v1 folder as SD components (the base from the hub cache or the hub), converted in memory."""
    from diffcompose.methods.powerpaint.weights import V1_BASE
    from diffcompose.models.loader import load_sd, resolve_sd

    base = resolve_sd(V1_BASE, hint="; PowerPaint v1 completes its checkpoint with this SD-1.5 inpainting model "
                                    "(or pass --model a folder from 'diffcompose convert powerpaint')")
    sd = load_sd(base, device, dtype)
    unet, text, tokenizer = v1_parts(root, base)
    sd.unet = unet.to(device, dtype).requires_grad_(False)
    sd.text_encoder = text.to(device, dtype).requires_grad_(False)
    sd.tokenizer = tokenizer
    return sd


def model_index(version: int, base_index: dict[str, Any]) -> dict[str, Any]:
    index = {k: v for k, v in base_index.items() if k not in ("safety_checker", "feature_extractor")}
    index.update({"powerpaint_version": version, "safety_checker": [None, None], "feature_extractor": [None, None],
                  "requires_safety_checker": False, ENGINE_KEY: "powerpaint"})
    return index


def _copy_parts(base: Path, out: Path, parts: tuple[str, ...]) -> None:
    for part in parts:
        if not (base / part).is_dir():
            raise InputError(f"base model {base} has no {part}/ folder")
        shutil.copytree(base / part, out / part)


def _base_index(base: Path) -> dict[str, Any]:
    path = base / "model_index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def convert_checkpoint(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False) -> Path:
    """``diffcompose convert powerpaint CKPT OUT_DIR [--like DIR]``: see the module docstring."""
    checkpoint = Path(checkpoint)
    out_dir = check_out_dir(Path(out_dir), [checkpoint] + ([Path(like)] if like else []), force=force, kind=MODEL)
    if checkpoint.name == Path(V1_UNET).name:
        return _convert_v1(checkpoint.parent.parent, out_dir, like)
    if checkpoint.name == Path(V2_BRUSHNET).name and checkpoint.parent.name == Path(V2_BRUSHNET).parent.name:
        return _convert_v2(checkpoint.parent.parent, out_dir, like)
    raise InputError(f"{checkpoint} is neither PowerPaint v1's {V1_UNET} nor v2's {V2_BRUSHNET}: pass one of them "
                     "(inside the downloaded checkpoint folder)")


def _convert_v1(root: Path, out_dir: Path, like: Path | None) -> Path:
    if like is None:
        raise InputError("PowerPaint v1 needs --like: an SD-1.5 inpainting model folder (its VAE, tokenizer and "
                         "scheduler complete the checkpoint)")
    like = Path(like)
    unet, text, tokenizer = v1_parts(root, like)
    with building(out_dir, "convert powerpaint") as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        text.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        _copy_parts(like, tmp, ("vae", "scheduler"))
        (tmp / "model_index.json").write_text(json.dumps(model_index(1, _base_index(like)), indent=2))
    log.info("converted PowerPaint v1 %s -> %s", root, out_dir)
    return out_dir


def v2_parts(root: Path, base: Path) -> tuple[Any, Any, Any]:
    """``(brushnet, task text encoder, tokenizer)`` of the public v2 folder on the base model ``base``."""
    from transformers import CLIPTextConfig, CLIPTokenizer

    state = _read(root / V2_BRUSHNET)
    brushnet = task_branch(root / Path(V2_BRUSHNET).parent, base)
    strict_load(brushnet, state, f"{root / V2_BRUSHNET} (BrushNet)")
    config = CLIPTextConfig.from_pretrained(str(base / "text_encoder"))
    text = task_text_encoder(config, _read(root / V2_TEXT), str(root / V2_TEXT))
    tokenizer = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    ids = add_task_words(tokenizer)
    if ids[0] != text.config.vocab_size - len(ids):
        raise InputError(f"{root / V2_TEXT}: its vocabulary is not the tokenizer's of {base}")
    return brushnet.eval(), text, tokenizer


def task_branch(folder: Path, base: Path) -> Any:
    """An empty BrushNet_CA: from ``folder``'s ``config.json`` when it has one, else shaped like ``base``'s
    UNet with its cross-attention blocks (what the public demo builds with ``BrushNetModel.from_unet``)."""
    from diffusers import UNet2DConditionModel

    from diffcompose.methods.brushnet.model import BrushNetModel

    if (folder / "config.json").is_file():
        try:
            branch = BrushNetModel.from_config(BrushNetModel.load_config(str(folder)))
        except (ValueError, TypeError) as exc:
            raise InputError(f"{folder / 'config.json'}: not a BrushNet config ({str(exc).splitlines()[0]})") from None
    else:
        branch = BrushNetModel.from_unet(UNet2DConditionModel.load_config(str(base / "unet")), cross_attention=True)
    if not branch.has_cross_attention:
        raise InputError(f"{folder}: PowerPaint v2's BrushNet reads the task prompts (cross-attention blocks); "
                         "this config has none")
    return branch


def _convert_v2(root: Path, out_dir: Path, like: Path | None) -> Path:
    base = Path(like) if like is not None else root / V2_BASE
    if not (base / "unet" / "config.json").is_file():
        raise WeightsMissingError(f"PowerPaint v2's base model not found at {base} (needs unet/, vae/, text_encoder/, "
                                  "tokenizer/, scheduler/); pass --like DIR")
    brushnet, text, tokenizer = v2_parts(root, base)
    with building(out_dir, "convert powerpaint") as tmp:
        brushnet.save_pretrained(tmp / "brushnet", safe_serialization=True)
        text.save_pretrained(tmp / "text_encoder_brushnet", safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        _copy_parts(base, tmp, ("unet", "vae", "text_encoder", "scheduler"))
        (tmp / "model_index.json").write_text(json.dumps(model_index(2, _base_index(base)), indent=2))
    log.info("converted PowerPaint v2 %s -> %s", root, out_dir)
    return out_dir
