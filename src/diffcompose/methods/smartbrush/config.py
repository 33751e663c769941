"""SmartBrush training configuration: a YAML file with ``data``, ``model`` and ``train`` sections.

Every key is checked (unknown keys and out-of-range values are one-line errors) before
anything heavy is loaded. See ``src/diffcompose/methods/smartbrush/train.example.yaml``. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffcompose.errors import InputError, cut
from diffcompose.methods.options import check_choice, check_range
from diffcompose.training import config as shared

#: The base model training starts from by default: SD 1.5 inpainting, whose 9-channel input
#: already reads the mask and the masked image, so the fine-tune starts from a working inpainter.
DEFAULT_INIT = "stable-diffusion-v1-5/stable-diffusion-inpainting"
#: The paper's base: Stable Diffusion v1.2, text-to-image (``init_kind: auto`` finds ``sd``: the 5
#: new input channels start at zero).
PAPER_INIT = "CompVis/stable-diffusion-v1-2"
#: Where text-to-image samples come from (``data.py``): image-caption pairs when the data has any.
TEXT_TO_IMAGE = ("auto", "captions", "instances")


@dataclass
class SmartBrushTrainConfig:
    # data
    manifest: str = ""  # COCO instances .json (polygons or RLE) or .jsonl manifest (instances, caption pairs)
    captions: str | None = None  # a second manifest, e.g. COCO captions .json: image-caption pairs
    image_root: str | None = None  # default: the manifest's folder
    resolution: int = 512
    min_area: float = 0.01  # instances covering 1%..90% of their image
    max_area: float = 0.9
    inpaint_share: float = 0.8  # the rest: text-to-image samples (the whole image is the region)
    text_to_image: str = "auto"  # their source: auto (captions when there are pairs) | captions | instances
    text_dropout: float = 0.1  # empty text, for classifier-free guidance
    num_workers: int = 2
    # model
    init: str = DEFAULT_INIT  # SD or SD-inpainting (the paper: PAPER_INIT), a SmartBrush export, or "tiny"
    init_kind: str = "auto"  # auto | sd | sd-inpainting | smartbrush (continue from an export)
    # optimisation
    output_dir: str = "runs/smartbrush"
    max_steps: int = 100000
    batch_size: int = 4
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 500
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = True
    ema_decay: float | None = None
    dice_weight: float = 0.01  # lambda of the mask head's DICE loss
    checkpoint_every: int = 2000
    seed: int = 0
    log_every: int = 10
    resume: str | None = None  # "latest" or a checkpoint directory

    def __post_init__(self) -> None:
        shared.check_training_keys(self)
        check_range("inpaint_share", self.inpaint_share, 0.0, 1.0)
        check_range("text_dropout", self.text_dropout, 0.0, 1.0)
        check_choice("text_to_image", self.text_to_image, TEXT_TO_IMAGE)
        check_choice("init_kind", self.init_kind, ("auto", "sd", "sd-inpainting", "smartbrush"))
        check_range("dice_weight", self.dice_weight, 0.0, 1e3)


def config_from_dict(raw: Any) -> SmartBrushTrainConfig:
    """Flatten the sections and build a validated :class:`SmartBrushTrainConfig` (the shared reader)."""
    return shared.config_from_dict(raw, SmartBrushTrainConfig)


def load_config(path: Path) -> SmartBrushTrainConfig:
    """The config in YAML file ``path``; data paths in it are relative to its folder (the shared reader,
    and ``captions`` here)."""
    cfg = shared.load_config(path, SmartBrushTrainConfig)
    if cfg.captions:
        captions = Path(cfg.captions)
        cfg.captions = str(captions if captions.is_absolute() else Path(path).parent / captions)
        if not shared.is_file(cfg.captions):
            raise InputError(f"config: data.captions not found: {cut(cfg.captions)}")
    return cfg
