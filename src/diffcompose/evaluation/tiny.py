"""Tiny random metric models, written in the real layouts, for tests and ``--model-dir`` smoke runs.

``write_tiny_metric_models(root)`` writes ``root/clip`` (a ``CLIPModel`` with a small real
CLIP tokenizer), ``root/dinov2`` (a ``Dinov2Model``) and ``root/vgg16`` (VGG16 features of
small widths with LPIPS-like heads): each loads through the same code as the real weights.
Their scores mean nothing; the loading, cropping and arithmetic are what they exercise.
(The FID Inception has a fixed architecture: tests build it with random weights.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_VGG_WIDTHS = (8, 16, 16, 32, 32)


def write_tiny_metric_models(root: str | Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model

    from diffcompose.models.tiny import default_shared_tokenizer, write_tiny_tokenizer
    from diffcompose.models.vgg import VGG16Features

    root = Path(root)
    torch.manual_seed(seed)
    vocab = write_tiny_tokenizer(root / "clip", default_shared_tokenizer())
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(
        root / "clip", safe_serialization=True)
    prep = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
    (root / "clip" / "preprocessor_config.json").write_text(json.dumps(prep))
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=28,
                             patch_size=14)).save_pretrained(root / "dinov2", safe_serialization=True)
    prep = {"size": {"shortest_edge": 32}, "crop_size": {"height": 28, "width": 28}}
    (root / "dinov2" / "preprocessor_config.json").write_text(json.dumps(prep))
    vgg = VGG16Features(TINY_VGG_WIDTHS)
    (root / "vgg16").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, str(root / "vgg16" / "model.safetensors"))
    (root / "vgg16" / "config.json").write_text(json.dumps({"widths": list(TINY_VGG_WIDTHS)}))
    save_file({f"lin{i}": torch.rand(w) for i, w in enumerate(TINY_VGG_WIDTHS)},
              str(root / "vgg16" / "lpips.safetensors"))
    return root
