"""Paint-by-Example training configuration: a YAML file with ``data``, ``model`` and ``train`` sections.

Every key is checked (unknown keys and out-of-range values are one-line errors) before
anything heavy is loaded; the shared reader (:mod:`diffcompose.training.config`) does the
parsing. See ``src/diffcompose/methods/pbe/train.example.yaml``. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffcompose.methods.options import check_choice, check_range
from diffcompose.training import config as shared


@dataclass
class TrainConfig:
    # data
    manifest: str = ""  # COCO instances .json or .jsonl manifest
    image_root: str | None = None  # default: the manifest's folder
    resolution: int = 512
    min_area: float = 0.02
    max_area: float = 0.8
    max_extend: float = 0.4
    bezier_p: float = 0.5
    num_workers: int = 2
    # model
    init: str = "CompVis/stable-diffusion-v1-4"  # SD text-to-image, SD inpainting, PbE, or "tiny"
    init_kind: str = "auto"  # auto | pbe | sd-inpainting | sd
    image_encoder: str = "openai/clip-vit-large-patch14"  # CLIP vision weights (ignored for a PbE init); or "tiny"
    # optimisation
    output_dir: str = "runs/pbe"
    max_steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 10000  # linear warmup from ~0 (the original: 10,000 steps)
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 0.0  # 0: no clipping (the original)
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = True
    ema_decay: float | None = None  # e.g. 0.9999; None: no EMA (the original)
    cond_dropout: float = 0.2
    cond_dropout_per: str = "batch"  # batch (the original: a whole micro-batch at once) | sample
    checkpoint_every: int = 1000
    seed: int = 0
    log_every: int = 10
    resume: str | None = None  # "latest" or a checkpoint directory

    def __post_init__(self) -> None:
        shared.check_training_keys(self)
        check_range("max_extend", self.max_extend, 0.0, 1.0)
        check_range("bezier_p", self.bezier_p, 0.0, 1.0)
        check_choice("init_kind", self.init_kind, ("auto", "pbe", "sd-inpainting", "sd"))
        check_range("cond_dropout", self.cond_dropout, 0.0, 1.0)
        check_choice("cond_dropout_per", self.cond_dropout_per, ("batch", "sample"))


def config_from_dict(raw: Any) -> TrainConfig:
    """Flatten the sections and build a validated :class:`TrainConfig` (the shared reader)."""
    return shared.config_from_dict(raw, TrainConfig)


def load_config(path: Path) -> TrainConfig:
    """The config in YAML file ``path``; data paths in it are relative to its folder (the shared reader)."""
    return shared.load_config(path, TrainConfig)
