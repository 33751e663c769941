"""ObjectStitch training configuration: a YAML file with ``data``, ``model`` and ``train`` sections.

Two kinds of run share it. Self-supervised training reads ``data.manifest`` (a ``.jsonl`` of
photos with object masks, or COCO instances): each object is cut out of its own photo,
augmented and inserted back into its box. ``data.few_shot`` (or ``--few-shot DIR``) is
MureObjectStitch's fine-tuning instead: a folder of a few photos of one object. Checked
before anything heavy is loaded, through the shared reader. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffcompose.errors import InputError, cut
from diffcompose.methods.options import check_range
from diffcompose.training import config as shared


@dataclass
class TrainConfig:
    # data
    manifest: str = ""  # .jsonl ({"image", "mask"} or {"image", "boxes"}) or COCO instances .json
    few_shot: str | None = None  # a folder of N.jpg + N.png (MureObjectStitch); replaces manifest
    image_root: str | None = None
    resolution: int = 512
    min_area: float = 0.02
    max_area: float = 0.8
    few_shot_images: int = 5  # MureComDataset's image_num: the first 5 photos of the folder
    num_workers: int = 2
    # model
    init: str = ""  # an ObjectStitch directory (convert objectstitch) or "tiny"
    train_adaptor: bool = False  # the public cond_stage_trainable: False (the UNet alone trains)
    # optimisation (the public configs/v1.yaml; MureObjectStitch's murecom.yaml is the same)
    output_dir: str = "runs/objectstitch"
    max_steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.01  # torch AdamW's default, which the public optimizer uses
    warmup_steps: int = 1000  # LambdaLinearScheduler: 1e-6 -> 1 over 1,000 steps
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 0.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = True
    ema_decay: float | None = None  # use_ema: False
    cond_dropout: float = 0.2  # u_cond_percent: whole micro-batches on the unconditional vector
    checkpoint_every: int = 1000
    seed: int = 0
    log_every: int = 10
    resume: str | None = None

    def __post_init__(self) -> None:
        if self.few_shot:  # the folder stands where the manifest would (the run's input)
            self.manifest = self.few_shot
        shared.check_training_keys(self)
        check_range("cond_dropout", self.cond_dropout, 0.0, 1.0)
        check_range("few_shot_images", self.few_shot_images, 1, 10)  # the public inference takes fewer than 11
        if not self.init:
            raise InputError("config: model.init is required (an ObjectStitch directory, or tiny)")


def config_from_dict(raw: Any) -> TrainConfig:
    return shared.config_from_dict(raw, TrainConfig)


def load_config(path: Path) -> TrainConfig:
    """The config in YAML file ``path``; its data paths are relative to its folder."""
    raw = shared.read_yaml(path) or {}
    data = raw.get("data") if isinstance(raw, dict) else None
    if isinstance(data, dict) and data.get("few_shot"):
        cfg = config_from_dict(raw)
        cfg.few_shot = _relative(path, cfg.few_shot)
        cfg.__post_init__()
        return check_few_shot(cfg)
    return shared.load_config(path, TrainConfig)


def _relative(config: Path, value: str) -> str:
    return value if Path(value).is_absolute() else str(Path(config).parent / value)


def check_few_shot(cfg: TrainConfig) -> TrainConfig:
    """A few-shot folder that exists and holds at least one ``N.jpg`` with its ``N.png`` mask."""
    if cfg.few_shot is None:
        return cfg
    folder = Path(cfg.few_shot)
    if not shared.is_dir(folder):
        raise InputError(f"few-shot folder not found: {cut(folder)}")
    if not any(p.with_suffix(".png").is_file() for p in folder.glob("*.jpg")):
        raise InputError(f"few-shot folder {cut(folder)} holds no photo N.jpg with its mask N.png")
    return cfg
