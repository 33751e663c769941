"""``--model tiny`` for PowerPaint: tiny random v1 and v2 models with the task tokens, written once.

The folder holds ``v1/`` (a 9-channel SD-inpainting UNet, its text encoder with 30 random task
vectors, the tokenizer with the task words) and ``v2/`` (a frozen base: UNet, text encoder; the
BrushNet branch built from that UNet's config and its own text encoder with the task vectors), in
the layout ``diffcompose convert powerpaint`` writes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from diffcompose.models.tiny import TINY_VERSION, ensure_written, tiny_cache_dir, write_tiny_sd

#: Bump when the tiny PowerPaint layout changes, so cached copies are rebuilt.
TINY_POWERPAINT_VERSION = 1
#: What the generic tiny SD writer adds that PowerPaint does not use.
_UNUSED = ("t2i_adapter_canny", "t2i_adapter_sketch", "vgg")


def _with_task_tokens(root: Path, encoder: str, seed: int) -> None:
    """Add the task words to ``root``'s tokenizer and random task vectors to its ``encoder`` folder."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from diffcompose.methods.powerpaint.prompts import TASK_TOKENS, VECTORS_PER_TOKEN
    from diffcompose.methods.powerpaint.tokens import add_task_words, install_task_vectors

    tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
    first = add_task_words(tokenizer)[0]
    tokenizer.save_pretrained(str(root / "tokenizer"))
    text = CLIPTextModel.from_pretrained(str(root / encoder))
    gen = torch.Generator().manual_seed(seed)
    width = text.config.hidden_size
    install_task_vectors(text, {t: torch.randn(VECTORS_PER_TOKEN, width, generator=gen) * 0.5 for t in TASK_TOKENS},
                         first)
    shutil.rmtree(root / encoder)
    text.save_pretrained(root / encoder, safe_serialization=True)


def _mark(root: Path, version: int) -> None:
    index = json.loads((root / "model_index.json").read_text())
    index.update({"powerpaint_version": version, "diffcompose_tiny": TINY_VERSION})
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    for extra in _UNUSED:
        shutil.rmtree(root / extra, ignore_errors=True)


def write_tiny_v1(path: Path, *, seed: int = 0) -> Path:
    root = write_tiny_sd(path, seed=seed, unet_overrides={"in_channels": 9})
    _with_task_tokens(root, "text_encoder", seed + 1)
    _mark(root, 1)
    return root


def write_tiny_v2(path: Path, *, seed: int = 0) -> Path:
    from diffusers import UNet2DConditionModel

    from diffcompose.methods.brushnet.model import BrushNetModel, randomize_zero_convs

    root = write_tiny_sd(path, seed=seed)
    shutil.copytree(root / "text_encoder", root / "text_encoder_brushnet")
    _with_task_tokens(root, "text_encoder_brushnet", seed + 2)
    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 3)
        brushnet = BrushNetModel.from_unet(unet.config, cross_attention=True, unet=unet)
    randomize_zero_convs(brushnet, seed + 4)  # a trained branch's outputs are not zero: let them show
    brushnet.save_pretrained(root / "brushnet", safe_serialization=True)
    _mark(root, 2)
    index = json.loads((root / "model_index.json").read_text())
    index["brushnet"] = ["diffcompose", type(brushnet).__name__]
    index["text_encoder_brushnet"] = ["transformers", "CLIPTextModel"]
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def write_tiny_powerpaint(path: str | os.PathLike, *, seed: int = 0) -> Path:
    """Both versions under ``path`` (must not exist)."""
    root = Path(path)
    root.mkdir(parents=True)
    write_tiny_v1(root / "v1", seed=seed)
    write_tiny_v2(root / "v2", seed=seed + 10)
    (root / "model_index.json").write_text(json.dumps({"powerpaint_versions": [1, 2],
                                                       "diffcompose_tiny": TINY_VERSION}, indent=2))
    return root


def ensure_tiny_powerpaint(path: Path | None = None) -> Path:
    """The tiny PowerPaint folder, written once to the cache."""
    target = path or tiny_cache_dir().with_name(f"tiny-powerpaint-v{TINY_VERSION}.{TINY_POWERPAINT_VERSION}")
    return ensure_written(target, write_tiny_powerpaint, "PowerPaint model")
