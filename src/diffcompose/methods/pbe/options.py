"""Options of the Paint-by-Example engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.errors import InputError
from diffcompose.methods.options import SamplerOptions, option, option_named, sampler_option
from diffcompose.methods.registry import DIFFUSION, ContractFacts, Converter, EngineInfo, Trainer, register

ENGINE = "pbe"


@dataclass(frozen=True)
class PaintOptions(SamplerOptions):
    steps: int = sampler_option("steps")
    guidance_scale: float = sampler_option(
        "guidance_scale", 5.0, "classifier-free guidance scale: how closely the fill follows the reference "
                               "(1 = no guidance; below 1 leans to the unconditional fill)")
    scheduler: Literal["plms", "ddim", "euler", "dpm"] = sampler_option(
        "scheduler", help="sampler: PLMS (PNDM without Runge-Kutta warm-up), DDIM, Euler, DPM-Solver++ (multistep)")
    eta: float = sampler_option("eta")
    reference_preprocess: Literal["stretch", "crop"] = option(
        "stretch", "reference to CLIP's square: stretch the whole photo (original) or centre-crop it (diffusers)")
    latent_mask: Literal["bilinear", "nearest"] = option(
        "bilinear", "keep mask to latent size: bilinear (the original, as the published weights were trained; soft "
                    "at the hole's edge) or nearest (diffusers' pipeline)")
    num_images: int = sampler_option("num_images")
    crop: bool = option(True, "work in a square window around the mask (off: the whole image, resized)")
    context: float = sampler_option("context", help="context around the mask in the window, as a share of the "
                                                    "mask's size")
    resolution: int | None = sampler_option("resolution", help="working size in pixels (default: the model's "
                                                               "native size, 512)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resolution is not None and self.resolution % 8:  # Paint-by-Example's own rule
            raise InputError(f"{option_named('resolution')} must be a multiple of 8, got {self.resolution}")


DEFAULT_PBE = "Fantasy-Studio/Paint-by-Example"

register(EngineInfo(
    ENGINE, "diffcompose.methods.pbe.engine:PaintByExampleEngine",
    tasks={"paint": PaintOptions, "insert": PaintOptions},  # insert = paint into the region (or the shape mask)
    priority=10, requires=DIFFUSION, extra="diffusion", default_model=DEFAULT_PBE,
    summary="Paint-by-Example: fill the mask with an object like the reference",
    tiny="diffcompose.methods.pbe.tiny:ensure_tiny_pbe",
    model_classes=("PaintByExamplePipeline",),
    converter=Converter(
        "diffcompose.methods.pbe.convert:convert_pbe",
        help="Paint-by-Example (model.diffusion_model.*, cond_stage_model.*, ...)",
        description="Convert the original Paint-by-Example checkpoint (.ckpt, read with weights_only: no code in it "
                    "runs; or .safetensors) into OUT_DIR with unet/, vae/, image_encoder/ and scheduler/ in "
                    "safetensors.",
        like_help="take the component configs from this model directory (default: the published geometry: SD1.x "
                  "UNet with 9 input channels, SD VAE, CLIP ViT-L/14)",
    ),
    trainer=Trainer(
        config="diffcompose.methods.pbe.config:load_config",
        train="diffcompose.methods.pbe.train:train",
        example="src/diffcompose/methods/pbe/train.example.yaml",
        help="Paint-by-Example, self-reference training on images with object boxes",
        description="Self-reference training of Paint-by-Example from a YAML config "
                    "(see src/diffcompose/methods/pbe/train.example.yaml).",
    ),
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64},
                           bad_options={"paint": {"steps": 0}, "insert": {"steps": 0}}, steps="steps", previews=True),
))
