"""Options of the SD-inpainting engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import SamplerOptions, sampler_option
from diffcompose.methods.registry import DIFFUSION, ContractFacts, EngineInfo, register

ENGINE = "sd-inpaint"
#: SD 1.5's inpainting checkpoint (9-channel UNet: noisy latent, mask, masked-image latent).
DEFAULT_SD_INPAINT = "stable-diffusion-v1-5/stable-diffusion-inpainting"


@dataclass(frozen=True)
class InpaintOptions(SamplerOptions):
    steps: int = sampler_option("steps")
    guidance_scale: float = sampler_option("guidance_scale")
    scheduler: Literal["plms", "ddim", "euler", "dpm"] = sampler_option(
        "scheduler", help="sampler: PLMS (the checkpoint's PNDM), DDIM, Euler, DPM-Solver++ (multistep)")
    eta: float = sampler_option("eta")
    num_images: int = sampler_option("num_images")
    context: float = sampler_option("context")
    resolution: int | None = sampler_option("resolution")


register(EngineInfo(
    ENGINE, "diffcompose.methods.sdinpaint.engine:SDInpaintEngine", tasks={"inpaint": InpaintOptions},
    priority=10, requires=DIFFUSION, extra="diffusion", default_model=DEFAULT_SD_INPAINT,
    summary="Stable Diffusion inpainting (9-channel UNet): public weights",
    tiny="diffcompose.models.tiny:ensure_tiny_inpainting_model",
    model_classes=("StableDiffusionInpaintPipeline",),
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64},
                           bad_options={"inpaint": {"guidance_scale": -1.0}}, steps="steps", previews=True),
))
