"""Options of the BrushNet engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.errors import InputError
from diffcompose.methods.options import SamplerOptions, check_range, option, sampler_option
from diffcompose.methods.registry import DIFFUSION, NO_DEFAULT_MODEL, ContractFacts, Converter, EngineInfo, register

ENGINE = "brushnet"
#: The base the branch is added to when ``--base`` is not given and the model folder has none:
#: BrushNet was trained beside SD-1.5's text-to-image UNet, and works with any SD-1.5 fine-tune.
DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: The published branches (segmentation-mask and random-mask, SD-1.5) are a folder of
#: TencentARC's Google Drive / their Hugging Face Space, not a model repository: there is no hub
#: default (:data:`NO_DEFAULT_MODEL`); ``--model DIR`` names the downloaded (or converted) folder.
NO_WEIGHTS = ("no BrushNet weights are given: download a published branch (TencentARC/BrushNet: "
              "segmentation_mask_brushnet_ckpt or random_mask_brushnet_ckpt, a folder with config.json and "
              "diffusion_pytorch_model.safetensors) and pass --model DIR (a single-file checkpoint: "
              "'diffcompose convert brushnet FILE DIR' first), or --model tiny for a smoke test")


@dataclass(frozen=True)
class BrushNetOptions(SamplerOptions):
    steps: int = sampler_option("steps")
    guidance_scale: float = sampler_option("guidance_scale")
    scheduler: Literal["plms", "ddim", "euler", "dpm"] = sampler_option(
        "scheduler", help="sampler: PLMS (the SD-1.5 base's own PNDM, what the public pipeline runs unless told "
                          "otherwise), DDIM, Euler, DPM-Solver++ (multistep)")
    eta: float = sampler_option("eta")
    num_images: int = sampler_option("num_images")
    conditioning_scale: float = option(
        1.0, "weight of the BrushNet branch's features added to the base UNet (0 = the plain base model)")
    blend: bool = option(
        True, "paste the photo back outside the region with a blurred mask after decoding (the paper's blending "
              "step: a soft seam, the region itself untouched)")
    blend_kernel: int = option(21, "size of the Gaussian kernel that blurs the mask for blending, in working "
                                   "pixels (odd; the public script's 21)")
    base: str | None = option(
        None, "the SD-1.5 text-to-image model the branch is added to: a hub id or local folder (default: the model "
              f"folder's own base when it has one, else {DEFAULT_BASE}; any SD-1.5 fine-tune works)")
    context: float = sampler_option("context")
    resolution: int | None = sampler_option("resolution")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("conditioning_scale", self.conditioning_scale, 0.0, 5.0)
        check_range("blend_kernel", self.blend_kernel, 1, 255)
        if self.blend_kernel % 2 == 0:
            raise InputError(f"--blend-kernel must be odd, got {self.blend_kernel}")
        if self.base is not None and not self.base.strip():
            raise InputError("--base must name a model (a hub id or a folder), got an empty string")


register(EngineInfo(
    ENGINE, "diffcompose.methods.brushnet.engine:BrushNetEngine", tasks={"inpaint": BrushNetOptions},
    priority=8, requires=DIFFUSION, extra="diffusion", default_model=NO_DEFAULT_MODEL,
    model_classes=("BrushNetModel",),  # a branch folder's config.json (TencentARC's, or ``convert brushnet``'s)
    summary="BrushNet: text-guided inpainting with a trained branch beside any SD-1.5 model (public weights)",
    tiny="diffcompose.methods.brushnet.tiny:ensure_tiny_brushnet",
    converter=Converter(
        "diffcompose.methods.brushnet.convert:convert_brushnet",
        help="BrushNet (a public brushnet folder or single-file state dict: conv_in_condition.*, brushnet_*_blocks.*, "
             "...)",
        description="Convert a public BrushNet branch (SD-1.5: TencentARC's segmentation/random-mask checkpoints, or "
                    "PowerPaint v2's BrushNet_CA) into OUT_DIR as config.json + diffusion_pytorch_model.safetensors. "
                    "CKPT is one state-dict file (.safetensors, or .bin/.pt/.ckpt read with weights_only: no code in "
                    "it runs); a published folder's own weights file works too (its config.json beside it is read), "
                    "though --model DIR loads such a folder as it is.",
        like_help="take the branch's geometry from this folder: a BrushNet folder (its config.json) or an SD model "
                  "(its unet/config.json); default: SD-1.5's, with or without cross-attention as the keys say"),
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64},
                           bad_options={"inpaint": {"conditioning_scale": -1.0}}, steps="steps", previews=True),
))
