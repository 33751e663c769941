"""Options of the Uni-paint engine, and its registration (light: no heavy imports).

Every task first fine-tunes the UNet on the photo's known region (``tune_steps``; the public
demo's 100 iterations at learning rate 1e-5), then samples with DDIM (the public sampler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.methods.options import SamplerOptions, check_range, option, sampler_option
from diffcompose.methods.registry import DIFFUSION, ContractFacts, Converter, EngineInfo, register

ENGINE = "unipaint"
#: The public code's base model: Stable Diffusion v1.4 (a text-to-image SD 1.x).
DEFAULT_SD = "CompVis/stable-diffusion-v1-4"
#: The public demo's and notebooks' fine-tuning iterations; the tiny model's default is smaller.
PUBLIC_TUNE_STEPS = 100
TINY_TUNE_STEPS = 4
#: The public notebooks' learning rate (Adam over the whole UNet).
PUBLIC_LEARNING_RATE = 1e-5
#: The name of the fine-tuning phase in progress events (before the task's sampling phase).
TUNE_PHASE = "tune"


def _tune_steps() -> int | None:
    return option(None, f"masked fine-tuning iterations on the photo's known region before sampling (default: "
                        f"{PUBLIC_TUNE_STEPS}, the public demo's; {TINY_TUNE_STEPS} with --model tiny; 0 skips it)")


@dataclass(frozen=True)
class UnipaintOptions(SamplerOptions):
    """What every Uni-paint task shares: the fine-tuning, then DDIM with masked attention."""

    steps: int = sampler_option("steps", 50, help="DDIM steps (the public default: 50)")
    scheduler: Literal["ddim"] = sampler_option("scheduler", "ddim", help="sampler: DDIM (the public code's)")
    eta: float = sampler_option("eta", 0.0)
    context: float = sampler_option("context")
    resolution: int | None = sampler_option("resolution")
    tune_steps: int | None = _tune_steps()
    learning_rate: float = option(PUBLIC_LEARNING_RATE, "learning rate of the masked fine-tuning (Adam on the "
                                                        "whole UNet; the public 1e-5)")
    masked_attention: bool = option(True, "masked attention while sampling with guidance: pixels outside the region "
                                          "ignore the region in self-attention and ignore the text (all tokens but "
                                          "the first) in cross-attention (the public control; off: plain attention)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tune_steps is not None:
            check_range("tune_steps", self.tune_steps, 0, 100_000)
        check_range("learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class UnipaintRemoveOptions(UnipaintOptions):
    """Unconditional fill: no guidance (the public unconditional mode samples at scale 1)."""


@dataclass(frozen=True)
class UnipaintInpaintOptions(UnipaintOptions):
    num_images: int = sampler_option("num_images")
    guidance_scale: float = sampler_option("guidance_scale", 8.0, help="classifier-free guidance (the public 8)")
    stroke_start: float = option(0.55, "with --stroke: where in the schedule the noised stroke replaces the "
                                       "sample inside the stroke (the public 'blending timestep' tau: share of the "
                                       "steps left; larger = more realistic, less faithful to the stroke)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("stroke_start", self.stroke_start, 0.0, 1.0)


@dataclass(frozen=True)
class UnipaintPaintOptions(UnipaintOptions):
    num_images: int = sampler_option("num_images")
    guidance_scale: float = sampler_option("guidance_scale", 8.0, help="classifier-free guidance (the public 8)")
    exemplar_word: str = option("", "one word (one CLIP token) whose embedding the exemplar's placeholder token "
                                    "'#' takes (the public 'subject word'); empty: '#' keeps its own embedding "
                                    "(the public '__null__' start)")
    exemplar_clip: str = option("", "a CLIP model (hub id or folder; the public code's "
                                    "openai/clip-vit-large-patch14) that picks the start word when --exemplar-word is "
                                    "empty: the vocabulary token whose CLIP text embedding best matches the exemplar "
                                    "(the public 'auto select'); empty: no auto-select")


register(EngineInfo(
    ENGINE, "diffcompose.methods.unipaint.engine:UnipaintEngine",
    tasks={"remove": UnipaintRemoveOptions, "inpaint": UnipaintInpaintOptions, "paint": UnipaintPaintOptions},
    takes={"inpaint": ("stroke",)},
    # below the engines trained for each task: the per-photo fine-tuning takes minutes on a GPU (far
    # longer on a CPU, so auto never picks it without one: a weightless remove stays classical)
    priority=3, wants_accelerator=True, requires=DIFFUSION, extra="diffusion", default_model=DEFAULT_SD,
    model_classes=("StableDiffusionPipeline",),
    summary="Uni-paint: SD fine-tuned on the photo's known region; text, stroke, exemplar or unconditional fill",
    tiny="diffcompose.models.tiny:ensure_tiny_model",
    converter=Converter(
        "diffcompose.methods.unipaint.convert:convert_unipaint",
        help="Uni-paint's base model: an SD 1.x checkpoint in the original LDM layout (sd-v1-4-full-ema.ckpt)",
        description="Convert a Stable Diffusion 1.x checkpoint in the original LDM layout (the public code's "
                    "sd-v1-4-full-ema.ckpt; .ckpt read with weights_only: no code in it runs; or .safetensors) "
                    "into OUT_DIR with unet/, vae/, text_encoder/, tokenizer/ and scheduler/ in safetensors. A "
                    "diffusers folder needs no conversion: pass it to --model.",
        like_help="take the component configs and the tokenizer from this model directory (default: SD 1.x's "
                  "geometry; the tokenizer then comes from --like only)",
    ),
    # the suite skips the tuning (its runs are many; tests/methods/unipaint checks the tune phase's events)
    contract=ContractFacts(fast_options={"steps": 2, "tune_steps": 0, "resolution": 64},
                           bad_options={"remove": {"tune_steps": -1}, "inpaint": {"stroke_start": 1.5},
                                        "paint": {"learning_rate": 0.0}},
                           steps="steps", previews=True, phases=(TUNE_PHASE,)),
))
