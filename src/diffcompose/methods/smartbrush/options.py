"""Options of the SmartBrush engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import SamplerOptions, check_range, option, sampler_option
from diffcompose.methods.registry import DIFFUSION, NO_DEFAULT_MODEL, ContractFacts, EngineInfo, Trainer, register
from diffcompose.methods.smartbrush.precision import PRECISION_LEVELS

ENGINE = "smartbrush"
#: No SmartBrush weights are published: there is no default model (:data:`NO_DEFAULT_MODEL`:
#: ``--model DIR`` of a trained model, or ``tiny`` for a smoke test). The engine explains this
#: in one line.


@dataclass(frozen=True)
class SmartBrushOptions(SamplerOptions):
    steps: int = sampler_option("steps")
    guidance_scale: float = sampler_option("guidance_scale")
    scheduler: Literal["ddim", "plms", "dpm"] = sampler_option(
        "scheduler", "ddim", "sampler: DDIM, PLMS, DPM-Solver++ (multistep); all variance-preserving, as the "
                             "background blend needs")
    eta: float = sampler_option("eta")
    num_images: int = sampler_option("num_images")
    precision: int | None = option(
        None, f"how exactly the mask follows the object's shape: 0 = its exact outline .. {PRECISION_LEVELS} = "
              f"only a rough box (default: {PRECISION_LEVELS} for a box or rectangular mask, else 0)")
    mask_threshold: float = option(0.5, "the predicted object mask is where the head's probability is at least this")
    mask_margin: int = option(8, "pixels the predicted object mask is grown by before it is used (whole latent "
                                 "cells while sampling)")
    start: Literal["noise", "noised-image"] = option(
        "noise", "what sampling starts from inside the region: pure Gaussian noise (as Stable Diffusion samples) or "
                 "the photo's latent noised to the first step (keeps a faint trace of the region's colours)")
    mask_smoothing: float = option(0.5, "weight of the previous steps' object mask in each step's estimate "
                                        "(0 = each step's prediction alone)")
    context: float = sampler_option("context")
    resolution: int | None = sampler_option("resolution")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.precision is not None:
            check_range("precision", self.precision, 0, PRECISION_LEVELS)
        check_range("mask_threshold", self.mask_threshold, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range("mask_margin", self.mask_margin, 0, 512)
        check_range("mask_smoothing", self.mask_smoothing, 0.0, 1.0, hi_open=True)


register(EngineInfo(
    ENGINE, "diffcompose.methods.smartbrush.engine:SmartBrushEngine", tasks={"inpaint": SmartBrushOptions},
    priority=5, requires=DIFFUSION, extra="diffusion", default_model=NO_DEFAULT_MODEL,
    summary="SmartBrush: text and shape-guided object inpainting with a predicted object mask (needs training)",
    tiny="diffcompose.methods.smartbrush.tiny:ensure_tiny_smartbrush",
    predicts_mask=True,
    trainer=Trainer(
        config="diffcompose.methods.smartbrush.config:load_config",
        train="diffcompose.methods.smartbrush.train:train",
        export="diffcompose.methods.smartbrush.train:export_checkpoint",
        example="src/diffcompose/methods/smartbrush/train.example.yaml",
        help="SmartBrush, text and shape-guided inpainting with a mask head",
        description="Train SmartBrush from a YAML config (see src/diffcompose/methods/smartbrush/train.example.yaml) on object "
                    "instances with masks and texts (COCO polygons/RLE or .jsonl). Multi-GPU / multi-node: "
                    "'accelerate launch -m diffcompose train smartbrush --config FILE'.",
    ),
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64}, bad_options={"inpaint": {"precision": 6}},
                           steps="steps", previews=True),
))
