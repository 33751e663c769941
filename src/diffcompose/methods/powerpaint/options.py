"""Options of the PowerPaint engine, and its registration (light: no heavy imports).

One engine for versions 1 and 2 (``--version``): v1 is an SD-1.5 inpainting UNet fine-tuned
with the task tokens; v2 adds a BrushNet branch, with the task tokens, to a frozen SD-1.5 UNet.
Each task's options extend :class:`PowerPaintOptions`; ``inpaint`` adds the shape task
(``--mode shape``) and its fitting degree, a 0..1 float (a slider on the web page).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import SamplerOptions, check_range, check_text, option, sampler_option
from diffcompose.methods.powerpaint.prompts import check_no_task_words
from diffcompose.methods.registry import DIFFUSION, ContractFacts, Converter, EngineInfo, register

ENGINE = "powerpaint"
#: The public checkpoints ``--model`` defaults to, per version (converted in memory when loaded).
DEFAULT_MODELS = {1: "JunhaoZhuang/PowerPaint-v1", 2: "JunhaoZhuang/PowerPaint-v2-1"}


@dataclass(frozen=True)
class PowerPaintOptions(SamplerOptions):
    version: Literal[1, 2] = option(1, "PowerPaint 1 (a fine-tuned SD-inpainting UNet) or 2 (a BrushNet branch "
                                       "beside a frozen SD-1.5 UNet); --model must hold that version")
    steps: int = sampler_option("steps", 45)
    guidance_scale: float = sampler_option("guidance_scale", 7.5)
    scheduler: Literal["plms", "ddim", "euler", "dpm"] = sampler_option(
        "scheduler", "plms", "sampler: PLMS (the public v1 demo's), DDIM, Euler, DPM-Solver++ (multistep)")
    eta: float = sampler_option("eta")
    num_images: int = sampler_option("num_images")
    conditioning_scale: float = option(1.0, "v2: weight of the BrushNet branch's features added to the base UNet")
    context: float = sampler_option("context")
    resolution: int | None = sampler_option("resolution")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("conditioning_scale", self.conditioning_scale, 0.0, 2.0)


@dataclass(frozen=True)
class FillOptions(PowerPaintOptions):
    """Removal and outpainting: the context task; the optional text describes the background."""

    prompt: str = option("", "optional words about the background to continue (the task adds its own)")
    negative_prompt: str = option("", "what to avoid (the task adds its own task word)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("prompt", "negative_prompt"):
            check_no_task_words(f"--{name.replace('_', '-')}", check_text(f"--{name.replace('_', '-')}",
                                                                        getattr(self, name)))


@dataclass(frozen=True)
class InpaintOptions(PowerPaintOptions):
    mode: Literal["object", "shape"] = option(
        "object", "object: paint what the prompt says inside the region; shape: make it fill the region's shape "
                  "(the shape task, see --fitting-degree)")
    fitting_degree: float = option(1.0, "shape mode: how closely the object fills the mask's shape, 0 (loosely, "
                                        "more background) .. 1 (exactly)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("fitting_degree", self.fitting_degree, 0.0, 1.0)


register(EngineInfo(
    ENGINE, "diffcompose.methods.powerpaint.engine:PowerPaintEngine",
    tasks={"remove": FillOptions, "inpaint": InpaintOptions, "outpaint": FillOptions},
    priority=20, wants_accelerator=True, requires=DIFFUSION, extra="diffusion", default_model=DEFAULT_MODELS[1],
    summary="PowerPaint v1/v2: removal, text- and shape-guided inpainting and outpainting with learned task tokens",
    tiny="diffcompose.methods.powerpaint.tiny:ensure_tiny_powerpaint",
    weights_available="diffcompose.methods.powerpaint.weights:weights_missing",
    converter=Converter(
        target="diffcompose.methods.powerpaint.convert:convert_checkpoint",
        help="PowerPaint v1 (unet/unet.safetensors + text_encoder/text_encoder.safetensors) or v2 "
             "(PowerPaint_Brushnet/ + its base model folder)",
        description="Convert a published PowerPaint checkpoint folder into OUT_DIR: v1 (the UNet and the text "
                    "encoder with the task tokens; the VAE, tokenizer and scheduler come from --like, an SD-1.5 "
                    "inpainting folder) or v2 (the BrushNet branch and its text encoder; the base model is the "
                    "folder's realisticVisionV60B1_v51VAE/ or --like).",
        like_help="v1: an SD-1.5 inpainting model folder (diffusers layout); v2: the SD-1.5 base model folder "
                  "(default: the checkpoint's realisticVisionV60B1_v51VAE/)"),
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64},
                           bad_options={"remove": {"steps": 0}, "inpaint": {"fitting_degree": 1.5},
                                        "outpaint": {"conditioning_scale": -1.0}},
                           steps="steps", previews=True),
))
