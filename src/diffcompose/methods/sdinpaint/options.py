"""Options of the SD-inpainting engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import check_range, option
from diffcompose.methods.registry import DIFFUSION, ContractFacts, EngineInfo, register

ENGINE = "sd-inpaint"
#: SD 1.5's inpainting checkpoint (9-channel UNet: noisy latent, mask, masked-image latent).
DEFAULT_SD_INPAINT = "stable-diffusion-v1-5/stable-diffusion-inpainting"


@dataclass(frozen=True)
class InpaintOptions:
    steps: int = option(50, "denoising steps")
    guidance_scale: float = option(7.5, "classifier-free guidance scale: how closely the fill follows the prompt "
                                        "(1 = no guidance)")
    scheduler: Literal["plms", "ddim", "euler", "dpm"] = option(
        "plms", "sampler: PLMS (the checkpoint's PNDM), DDIM, Euler, DPM-Solver++ (multistep)")
    eta: float = option(0.0, "DDIM noise (0 = deterministic; ddim only)")
    num_images: int = option(1, "how many results to make, in one batch")
    context: float = option(0.5, "context around the region in the window, as a share of its size")
    resolution: int | None = option(None, "working size in pixels (default: the model's native size, 512 for SD 1.5)")

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 1000)
        check_range("guidance_scale", self.guidance_scale, 0.0, 50.0)
        check_range("eta", self.eta, 0.0, 1.0)
        check_range("num_images", self.num_images, 1, 64)
        check_range("context", self.context, 0.0, 10.0)
        if self.resolution is not None:
            check_range("resolution", self.resolution, 64, 2048)


register(EngineInfo(
    ENGINE, "diffcompose.methods.sdinpaint.engine:SDInpaintEngine", tasks={"inpaint": InpaintOptions},
    priority=10, requires=DIFFUSION, extra="diffusion", default_model=DEFAULT_SD_INPAINT,
    summary="Stable Diffusion inpainting (9-channel UNet): public weights",
    tiny="diffcompose.models.tiny:ensure_tiny_inpainting_model",
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64},
                           bad_options={"inpaint": {"guidance_scale": -1.0}}, steps="steps", previews=True),
))
