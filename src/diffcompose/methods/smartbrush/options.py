"""Options of the SmartBrush engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import check_range, option
from diffcompose.methods.registry import DIFFUSION, NO_DEFAULT_MODEL, ContractFacts, EngineInfo, Trainer, register
from diffcompose.methods.smartbrush.precision import PRECISION_LEVELS

ENGINE = "smartbrush"
#: No SmartBrush weights are published: there is no default model (:data:`NO_DEFAULT_MODEL`:
#: ``--model DIR`` of a trained model, or ``tiny`` for a smoke test). The engine explains this
#: in one line.


@dataclass(frozen=True)
class SmartBrushOptions:
    steps: int = option(50, "denoising steps")
    guidance_scale: float = option(7.5, "classifier-free guidance scale: how closely the fill follows the prompt "
                                        "(1 = no guidance)")
    scheduler: Literal["ddim", "plms", "dpm"] = option(
        "ddim", "sampler: DDIM, PLMS, DPM-Solver++ (multistep); all variance-preserving, as the background "
                "blend needs")
    eta: float = option(0.0, "DDIM noise (0 = deterministic; ddim only)")
    num_images: int = option(1, "how many results to make, in one batch")
    precision: int | None = option(
        None, f"how exactly the mask follows the object's shape: 0 = its exact outline .. {PRECISION_LEVELS} = "
              f"only a rough box (default: {PRECISION_LEVELS} for a box or rectangular mask, else 0)")
    mask_threshold: float = option(0.5, "the predicted object mask is where the head's probability is at least this")
    mask_margin: int = option(8, "pixels the predicted object mask is grown by before it is used (whole latent "
                                 "cells while sampling)")
    mask_smoothing: float = option(0.5, "weight of the previous steps' object mask in each step's estimate "
                                        "(0 = each step's prediction alone)")
    context: float = option(0.5, "context around the region in the window, as a share of its size")
    resolution: int | None = option(None, "working size in pixels (default: the model's native size, 512 for SD 1.5)")

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 1000)
        check_range("guidance_scale", self.guidance_scale, 0.0, 50.0)
        check_range("eta", self.eta, 0.0, 1.0)
        check_range("num_images", self.num_images, 1, 64)
        if self.precision is not None:
            check_range("precision", self.precision, 0, PRECISION_LEVELS)
        check_range("mask_threshold", self.mask_threshold, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range("mask_margin", self.mask_margin, 0, 512)
        check_range("mask_smoothing", self.mask_smoothing, 0.0, 1.0, hi_open=True)
        check_range("context", self.context, 0.0, 10.0)
        if self.resolution is not None:
            check_range("resolution", self.resolution, 64, 2048)


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
        example="configs/train_smartbrush.example.yaml",
        help="SmartBrush, text and shape-guided inpainting with a mask head",
        description="Train SmartBrush from a YAML config (see configs/train_smartbrush.example.yaml) on object "
                    "instances with masks and texts (COCO polygons/RLE or .jsonl). Multi-GPU / multi-node: "
                    "'accelerate launch -m diffcompose train smartbrush --config FILE'.",
    ),
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64}, bad_options={"inpaint": {"precision": 6}},
                           steps="steps", previews=True),
))
