"""A tiny random SAM in the real layout (``config.json``, ``model.safetensors``,
``preprocessor_config.json``), for tests and ``--model tiny``: 64-pixel input, 2 vision
layers, 32-wide everywhere. It loads through exactly the code that loads real checkpoints.
Its masks are meaningless."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from diffcompose.models.tiny import ensure_written, tiny_cache_dir

TINY_SAM_VERSION = 1
TINY_SAM_SIZE = 64


def tiny_sam_config(**overrides: Any) -> Any:
    from transformers import SamConfig

    width = 32
    vision = dict(hidden_size=width, output_channels=width, num_hidden_layers=2, num_attention_heads=2,
                  image_size=TINY_SAM_SIZE, patch_size=16, window_size=2, global_attn_indexes=[1],
                  num_pos_feats=width // 2, mlp_dim=64, initializer_range=0.02)
    prompt = dict(hidden_size=width, image_size=TINY_SAM_SIZE, patch_size=16, mask_input_channels=4)
    decoder = dict(hidden_size=width, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=width)
    cfg = dict(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder, initializer_range=0.02)
    cfg.update(overrides)
    return SamConfig(**cfg)


def write_tiny_sam(path: str | os.PathLike, *, seed: int = 0) -> Path:
    from transformers import SamModel

    from diffcompose.models.hub import quiet_libraries

    quiet_libraries()
    root = Path(path)
    root.mkdir(parents=True, exist_ok=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        SamModel(tiny_sam_config()).save_pretrained(root, safe_serialization=True)
    (root / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "SamImageProcessor", "size": {"longest_edge": TINY_SAM_SIZE},
         "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}, indent=2))
    # ensure_written's completeness marker (and what tells a tiny directory apart)
    marker = {"_class_name": "SamModel", "diffcompose_tiny": TINY_SAM_VERSION}
    (root / "model_index.json").write_text(json.dumps(marker))
    return root


def ensure_tiny_sam(path: Path | None = None) -> Path:
    """The cached tiny SAM directory, written once."""
    target = path or tiny_cache_dir().parent / f"tiny-sam-v{TINY_SAM_VERSION}"
    return ensure_written(target, write_tiny_sam, "SAM model")
