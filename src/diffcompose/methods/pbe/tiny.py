"""A tiny random Paint-by-Example model in the real layout, for tests, benchmarks and smoke runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from diffcompose.models.hub import ENGINE_KEY
from diffcompose.models.tiny import TINY_TEXT_DIM, ensure_written, tiny_cache_dir, tiny_scheduler_config, tiny_unet_config, tiny_vae_config

TINY_PBE_VERSION = 1


def tiny_vision_config(**overrides: Any) -> dict[str, Any]:
    """A small CLIP vision tower (4 layers -> 1 mapper block) projecting to the tiny UNet's context width."""
    cfg: dict[str, Any] = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                               image_size=32, patch_size=8, projection_dim=TINY_TEXT_DIM)
    cfg.update(overrides)
    return cfg


def model_index(engine: str | None = None) -> dict[str, Any]:
    """``model_index.json`` in the published layout (diffusers' deprecated pipeline can read it too);
    ``engine``: the model that extends the layout and that only it can run (Paint-by-Sketch, ObjectStitch)."""
    return {"_class_name": "PaintByExamplePipeline", "_diffusers_version": "0.33.1",
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "image_encoder": ["paint_by_example", "PaintByExampleImageEncoder"],
            "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [None, None],
            "feature_extractor": [None, None], "requires_safety_checker": False,
            **({ENGINE_KEY: engine} if engine else {})}


def write_tiny_pbe(path: str | os.PathLike, *, seed: int = 0, sd_scale: bool = False, in_channels: int = 9,
                   tokens: str = "pooled") -> Path:
    """Write a tiny random PbE directory (``unet/`` 9 channels, ``vae/``, ``image_encoder/``, ``scheduler/``).

    ``sd_scale=True`` uses SD1.x widths for the UNet (320..1280, 768-d context) for speed comparisons.
    ``in_channels``: a model that extends the UNet input (Paint-by-Sketch: 12). ``tokens``: what
    the exemplar encoder's mapper reads (``"patches"``: ObjectStitch's every CLIP token).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig

    from diffcompose.methods.pbe.encoder import ExemplarEncoder

    root = Path(path)
    root.mkdir(parents=True, exist_ok=False)
    unet_kw: dict[str, Any] = dict(in_channels=in_channels)
    vision_kw: dict[str, Any] = {}
    if sd_scale:
        unet_kw.update(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                       norm_num_groups=32, sample_size=64)
        vision_kw.update(projection_dim=768)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        UNet2DConditionModel(**tiny_unet_config(**unet_kw)).save_pretrained(root / "unet", safe_serialization=True)
        AutoencoderKL(**tiny_vae_config()).save_pretrained(root / "vae", safe_serialization=True)
        ExemplarEncoder(CLIPVisionConfig(**tiny_vision_config(**vision_kw)), tokens=tokens).save_pretrained(root / "image_encoder")
    sched = dict(tiny_scheduler_config(), skip_prk_steps=True)
    PNDMScheduler.from_config(sched).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({**model_index(), "diffcompose_tiny": TINY_PBE_VERSION}, indent=2))
    return root


def ensure_tiny_pbe(path: Path | None = None) -> Path:
    """The cached tiny PbE directory, written once."""
    target = path or tiny_cache_dir().parent / f"tiny-pbe-v{TINY_PBE_VERSION}"
    return ensure_written(target, write_tiny_pbe, "Paint-by-Example model")
