"""AnyDoor training configuration: a YAML file with ``data``, ``model`` and ``train`` sections.

Every key is checked (unknown keys and out-of-range values are one-line errors) before
anything heavy is loaded; the shared reader (:mod:`diffcompose.training.config`) does the
parsing. See ``src/diffcompose/methods/anydoor/train.example.yaml``. No torch here.

The defaults are the published recipe: mask area 0.01-0.64 of the image, shape-control
masks with p 0.7, adaptive timesteps with p 0.3 uniform, AdamW at 1e-5 with no warmup and
no gradient clipping, no condition dropout (the public training has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffcompose.methods.options import check_choice, check_range
from diffcompose.training import config as shared


@dataclass
class AnyDoorTrainConfig:
    # data
    manifest: str = ""  # .jsonl manifest (see methods/anydoor/data.py)
    image_root: str | None = None  # default: the manifest's folder
    resolution: int = 512  # side of the target crop and hint (512 as published)
    min_area: float = 0.01  # the object's mask covers 1%..64% of its image (0.1^2..0.8^2, as published)
    max_area: float = 0.64
    shape_p: float = 0.7  # share of samples whose mask channel is the perturbed object shape, not its box
    uniform_t_p: float = 0.3  # share of samples whose timestep is uniform over [0, T) whatever their kind
    num_workers: int = 2
    # model
    init: str = ""  # an AnyDoor directory (diffcompose convert anydoor, or a run's final/), "tiny", or SD2.1
    init_kind: str = "auto"  # auto | anydoor | sd (a new AnyDoor from an SD2.1-style model and DINOv2)
    image_encoder: str = "facebook/dinov2-giant"  # DINOv2 for init_kind sd (ViT-g/14 as published); or "tiny"
    # optimisation
    output_dir: str = "runs/anydoor"
    max_steps: int = 100000
    batch_size: int = 16  # per process (the published: 16 per GPU)
    learning_rate: float = 1e-5
    weight_decay: float = 0.01  # torch's AdamW default, which the public code keeps
    warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 0.0  # 0: no clipping (the published)
    mixed_precision: str = "no"  # no | fp16 (the published) | bf16
    gradient_checkpointing: bool = True
    ema_decay: float | None = None
    checkpoint_every: int = 1000
    seed: int = 0
    log_every: int = 10
    resume: str | None = None  # "latest" or a checkpoint directory

    def __post_init__(self) -> None:
        shared.check_training_keys(self)
        if not self.init:
            from diffcompose.errors import InputError

            raise InputError("config: model.init is required (an AnyDoor model directory, e.g. from "
                             "'diffcompose convert anydoor', an SD2.1-style model with init_kind sd, or \"tiny\")")
        check_choice("init_kind", self.init_kind, ("auto", "anydoor", "sd"))
        check_range("shape_p", self.shape_p, 0.0, 1.0)
        check_range("uniform_t_p", self.uniform_t_p, 0.0, 1.0)


def config_from_dict(raw: Any) -> AnyDoorTrainConfig:
    """Flatten the sections and build a validated :class:`AnyDoorTrainConfig` (the shared reader)."""
    return shared.config_from_dict(raw, AnyDoorTrainConfig)


def load_config(path: Path) -> AnyDoorTrainConfig:
    """The config in YAML file ``path``; data paths in it are relative to its folder (the shared reader)."""
    cfg = shared.load_config(path, AnyDoorTrainConfig)
    for key in ("init", "image_encoder"):  # a model folder next to the config wins over a hub id of that name
        value = getattr(cfg, key)
        if value != "tiny" and not Path(value).is_absolute() and shared.is_dir(path.parent / value):
            setattr(cfg, key, str(path.parent / value))
    return cfg

