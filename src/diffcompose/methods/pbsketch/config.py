"""Paint-by-Sketch training configuration: Paint-by-Example's, plus where the training sketch comes from.

See ``src/diffcompose/methods/pbsketch/train.example.yaml`` and :mod:`.extract`. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffcompose.errors import InputError
from diffcompose.methods.options import check_range
from diffcompose.methods.pbe.config import TrainConfig as PbETrainConfig
from diffcompose.training import config as shared


@dataclass
class TrainConfig(PbETrainConfig):
    output_dir: str = "runs/pbsketch"
    sketch_dir: str | None = None  # edge maps made beforehand (<image stem>.png, e.g. PiDiNet's); None: Canny
    sketch_threshold: int = 153  # binarisation: an edge value above it is a stroke (the public 153)
    canny_low: int = 100  # Canny's hysteresis thresholds (only without sketch_dir)
    canny_high: int = 200
    sketch_dilate: int = 0  # grow the strokes by this many pixels (the public pipeline: 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("sketch_threshold", self.sketch_threshold, 0, 254)
        check_range("canny_low", self.canny_low, 0, 10_000)
        check_range("canny_high", self.canny_high, self.canny_low, 10_000)
        check_range("sketch_dilate", self.sketch_dilate, 0, 64)


def config_from_dict(raw: Any) -> TrainConfig:
    return shared.config_from_dict(raw, TrainConfig)


def load_config(path: Path) -> TrainConfig:
    """The config in YAML file ``path``; its data paths (``sketch_dir`` too) are relative to its folder."""
    cfg = shared.load_config(path, TrainConfig)
    if cfg.sketch_dir:
        if not Path(cfg.sketch_dir).is_absolute():
            cfg.sketch_dir = str(Path(path).parent / cfg.sketch_dir)
        if not shared.is_dir(cfg.sketch_dir):
            raise InputError(f"config: data.sketch_dir not found: {cfg.sketch_dir}")
    return cfg
