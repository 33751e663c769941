"""Options of the AnyDoor engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import SamplerOptions, check_range, option, sampler_option
from diffcompose.methods.registry import (
    DIFFUSION, NO_DEFAULT_MODEL, ContractFacts, Converter, EngineInfo, Trainer, register,
)

ENGINE = "anydoor"
#: The published weights are a Lightning checkpoint, not a diffusers directory: there is no
#: hub default (:data:`NO_DEFAULT_MODEL`). ``--model DIR`` of ``diffcompose convert anydoor``
#: (or ``tiny``).


@dataclass(frozen=True)
class AnyDoorInsertOptions(SamplerOptions):
    steps: int = sampler_option("steps", help="DDIM steps (eta 0, as published)")
    guidance_scale: float = sampler_option(
        "guidance_scale", 5.0, "classifier-free guidance scale: how closely the object follows the reference "
                               "(1 = no guidance; below 1 leans to the unconditional result)")
    control_strength: float = option(1.0, "weight of the detail extractor's (ControlNet's) residuals")
    num_images: int = sampler_option("num_images")
    ratios: Literal["inference", "demo"] = option(
        "inference", "how the expansion ratios are drawn (by the seed) when not given: as the public batch "
                     "inference (reference 1.2, box 1.1, crop 1.5-2.9) or its demo and training (reference 1.1-1.4, "
                     "box 1.1, crop 1.3-2.9)")
    reference_ratio: float | None = option(None, "padding around the reference object before it is squared, as a "
                                                 "ratio of its box (default: drawn per --ratios)")
    box_ratio: float | None = option(None, "target box expansion (default: drawn per --ratios, 1.1)")
    crop_ratio: float | None = option(None, "scene crop around the expanded target box, as a ratio of it (default: "
                                            "drawn per --ratios)")
    mask_padding: Literal["train", "inference"] = option(
        "train", "mask channel in the square padding: -1 as the model was trained, or the public inference "
                 "script's 1 (its uint8 wrap-around)")
    paste_rule: Literal["box", "mask"] = option(
        "box", "what of the result comes back into the scene: the whole expanded target box and nothing "
               "outside it, without a seam (the public demo), or the target region grown by the box expansion "
               "with a feathered seam (the project's rule)")
    cpu_offload: Literal["none", "model", "sequential"] = option(
        "none", "keep parts on the CPU while unused: model (whole parts, per stage) or sequential (per layer, "
                "least memory, slowest); no effect on a CPU device")
    attention_slicing: bool = option(False, "compute attention in slices (less GPU memory, a little slower)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("control_strength", self.control_strength, 0.0, 2.0)
        if self.reference_ratio is not None:
            check_range("reference_ratio", self.reference_ratio, 1.0, 3.0)
        if self.box_ratio is not None:
            check_range("box_ratio", self.box_ratio, 1.0, 3.0)
        if self.crop_ratio is not None:
            check_range("crop_ratio", self.crop_ratio, 1.0, 10.0)


register(EngineInfo(
    ENGINE, "diffcompose.methods.anydoor.engine:AnyDoorEngine", tasks={"insert": AnyDoorInsertOptions},
    priority=5, wants_accelerator=True, requires=DIFFUSION, extra="diffusion", default_model=NO_DEFAULT_MODEL,
    summary="AnyDoor: teleport the reference object into the target region, keeping its identity "
            "(needs converted weights)",
    tiny="diffcompose.methods.anydoor.tiny:ensure_tiny_anydoor",
    model_classes=("AnyDoorPipeline",),
    converter=Converter(
        "diffcompose.methods.anydoor.convert:convert_anydoor",
        help="AnyDoor (model.diffusion_model.*, control_model.*, cond_stage_model.*, ...)",
        description="Convert the public AnyDoor checkpoint (.ckpt, read with weights_only and memory-mapped: no "
                    "code in it runs, its optimizer state is never read; or .safetensors) into OUT_DIR with unet/, "
                    "controlnet/, image_encoder/ (DINOv2), id_projector/, vae/ and scheduler/ in safetensors.",
        like_help="take the UNet, VAE and scheduler configs from this AnyDoor directory (default: the published "
                  "geometry: SD2.1 UNet, SD VAE; DINOv2's size is read from the weights)",
    ),
    trainer=Trainer(
        config="diffcompose.methods.anydoor.config:load_config",
        train="diffcompose.methods.anydoor.train:train",
        example="src/diffcompose/methods/anydoor/train.example.yaml",
        help="AnyDoor, identity-preserving object insertion (ControlNet + DINOv2)",
        description="Train AnyDoor from a YAML config (see src/diffcompose/methods/anydoor/train.example.yaml) on object pairs from "
                    "videos, multi-view sets and still images with instance masks (.jsonl manifest). Multi-GPU / "
                    "multi-node: 'accelerate launch -m diffcompose train anydoor --config FILE'.",
    ),
    # The tiny model works at 128 px (AnyDoor crops and resizes itself): only the steps need cutting.
    contract=ContractFacts(fast_options={"steps": 2}, bad_options={"insert": {"control_strength": 2.5}},
                           steps="steps", previews=True),
))
