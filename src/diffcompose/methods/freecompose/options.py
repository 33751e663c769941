"""Options of the FreeCompose engine (defaults from the paper and its public code), and its registration.

Optimiser: both the paper and the public code use lr 0.05; the paper says Adam, the code
SGD with the DDS loss scaled by 20000/4096 (an effective step of 0.244 x the DDS
gradient, while perceptual terms keep their plain weights). We default to SGD like the
code: Adam normalises every latent element by its own gradient scale, which cancels the
removal weight map ``M + 0.2 (1-M)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.errors import InputError
from diffcompose.methods.options import check_range, option, option_named
from diffcompose.methods.registry import DIFFUSION, ContractFacts, EngineInfo, register

ENGINE = "freecompose"


@dataclass(frozen=True)
class _Common:
    """Knobs every FreeCompose task has."""

    guidance: float = option(7.5, "classifier-free guidance scale of both DDS branches")
    lr: float = option(0.05, "optimiser learning rate (the DDS gradient is scaled by 20000/4096 first)")
    optimizer: Literal["sgd", "adam"] = option("sgd", "optimiser of the latent (public code: sgd; paper: adam)")
    resolution: int | None = option(None, "working resolution in pixels, about RES x RES (default: the model's, "
                                          "512 for SD1.5)")
    context: float = option(0.75, "context around the region in the working window, as a share of its size")
    band: float = option(0.5, "around the region, a band this share of the object's height may change freely "
                              "(shadows, edges); beyond it a seam of --margin px, then the original pixels; 0 = strict")

    def _check_common(self, t_range: tuple[int | None, int | None] = (None, None)) -> None:
        check_range("guidance", self.guidance, 0.0, 100.0)
        check_range("lr", self.lr, 0.0, 100.0, lo_open=True)
        if self.resolution is not None:
            check_range("resolution", self.resolution, 64, 4096)
        check_range("context", self.context, 0.0, 10.0)
        check_range("band", self.band, 0.0, 10.0)
        lo, hi = t_range
        if lo is not None:
            check_range("t_min", lo, 1, 999)
        if hi is not None:
            check_range("t_max", hi, 1, 999)
        if lo is not None and hi is not None and lo > hi:
            raise InputError(f"{option_named('t_min')} ({lo}) must not exceed {option_named('t_max')} ({hi})")


@dataclass(frozen=True)
class RemoveOptions(_Common):
    band: float = option(1.0, "around the mask, a band this share of the object's height may change freely (its "
                              "shadow and reflection go too); beyond it a seam of --margin px, then the original "
                              "pixels; 0 = strict")
    iterations: int = option(150, "DDS iterations")
    t_min: int = option(50, "smallest diffusion timestep drawn")
    t_max: int = option(950, "largest diffusion timestep drawn")
    source_prompt: str = option("Something in some place", "prompt of the source branch")
    target_prompt: str = option("Some place", "prompt of the target branch")
    attn_layer: int = option(10, "first decoder self-attention layer (execution index of 16) with masked keys")
    attn_start: int = option(4, "iteration from which the masked attention applies")
    background_weight: float = option(0.2, "DDS weight outside the mask (1 inside)")
    perceptual_weight: float = option(0.3, "weight of the perceptual loss on the background")
    perceptual_model: str | None = option(None, "VGG16 weights: hub id, directory or .safetensors "
                                                "(default: the model's vgg/ folder, else timm/vgg16.tv_in1k)", weights=True)

    def __post_init__(self) -> None:
        self._check_common((self.t_min, self.t_max))
        check_range("iterations", self.iterations, 1, 100000)
        check_range("attn_layer", self.attn_layer, 0, 63)
        check_range("attn_start", self.attn_start, 0, 100000)
        check_range("background_weight", self.background_weight, 0.0, 10.0)
        check_range("perceptual_weight", self.perceptual_weight, 0.0, 100.0)


@dataclass(frozen=True)
class HarmonizeOptions(_Common):
    iterations: int = option(200, "DDS iterations")
    t_min: int = option(50, "smallest diffusion timestep drawn")
    t_max: int = option(950, "largest diffusion timestep drawn")
    source_prompt: str = option("", "prompt of the source branch")
    target_prompt: str = option("A harmonious scene.", "prompt of the target branch (must differ from the source's)")
    background_weight: float = option(0.3, "weight of the perceptual loss on the background")
    object_weight: float = option(0.1, "weight of the perceptual loss on the object")
    perceptual_model: str | None = option(None, "VGG16 weights: hub id, directory or .safetensors "
                                                "(default: the model's vgg/ folder, else timm/vgg16.tv_in1k)", weights=True)

    def __post_init__(self) -> None:
        self._check_common((self.t_min, self.t_max))
        check_range("iterations", self.iterations, 1, 100000)
        check_range("background_weight", self.background_weight, 0.0, 100.0)
        check_range("object_weight", self.object_weight, 0.0, 100.0)
        if self.source_prompt == self.target_prompt:
            raise InputError(f"{option_named('source_prompt')} and {option_named('target_prompt')} are identical: "
                             "the DDS gradient would be zero")


#: Timestep ranges per condition type (public code), and of the final iterations.
COMPOSE_T_RANGE = {"canny": (50, 948), "sketch": (100, 598)}
FINAL_T_MIN = 50


@dataclass(frozen=True)
class ComposeOptions(_Common):
    band: float = option(0.25, "around --mask, a band this share of the region's height may change freely; beyond "
                               "it a seam of --margin px, then the original pixels; 0 = strict")
    iterations: int = option(200, "DDS iterations")
    t_min: int | None = option(None, "smallest timestep drawn (default: 50 for canny, 100 for sketch)")
    t_max: int | None = option(None, "largest timestep drawn (default: 948 for canny, 598 for sketch)")
    final_iters: int = option(50, "the last N iterations draw timesteps from [50, final-t-max]")
    final_t_max: int = option(148, "largest timestep of the final iterations")
    adapter: str | None = option(None, "T2I-Adapter: hub id or directory (default: the model's t2i_adapter_TYPE/ "
                                       "folder, else TencentARC/t2iadapter_TYPE_sd15v2)", weights=True)
    adapter_scale: float = option(0.9, "conditioning scale of the adapter features")
    attn_layer: int = option(10, "first decoder self-attention layer (execution index of 16) with K/V injection")
    attn_start: int = option(0, "iteration from which K/V injection applies")
    inject_t_min: int = option(0, "inject only at timesteps above this (0 = every iteration, as the public code "
                                  "that made the published figures; the paper's text says 400)")
    target_prompt: str | None = option(None, "prompt of the target branch (default: the same as --prompt)")
    canny_low: int = option(100, "lower hysteresis threshold of the OpenCV canny condition")
    canny_high: int = option(200, "upper hysteresis threshold of the OpenCV canny condition")

    def __post_init__(self) -> None:
        self._check_common((self.t_min, self.t_max))
        check_range("iterations", self.iterations, 1, 100000)
        check_range("final_iters", self.final_iters, 0, 100000)
        check_range("final_t_max", self.final_t_max, FINAL_T_MIN, 999)
        check_range("adapter_scale", self.adapter_scale, 0.0, 10.0)
        check_range("attn_layer", self.attn_layer, 0, 63)
        check_range("attn_start", self.attn_start, 0, 100000)
        check_range("inject_t_min", self.inject_t_min, 0, 999)
        check_range("canny_low", self.canny_low, 0, 1000)
        check_range("canny_high", self.canny_high, 0, 1000)

    def t_range(self, condition_type: str) -> tuple[int, int]:
        lo, hi = COMPOSE_T_RANGE[condition_type]
        lo, hi = self.t_min if self.t_min is not None else lo, self.t_max if self.t_max is not None else hi
        if lo > hi:
            raise InputError(f"timestep range [{lo}, {hi}] is empty; set {option_named('t_min')}/"
                             f"{option_named('t_max')}")
        return lo, hi


#: Default checkpoint: SD 1.5 (the T2I-Adapters FreeCompose uses are trained for it).
DEFAULT_SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"

register(EngineInfo(
    ENGINE, "diffcompose.methods.freecompose.engine:FreeComposeEngine",
    tasks={"remove": RemoveOptions, "harmonize": HarmonizeOptions, "compose": ComposeOptions},
    priority=10, wants_accelerator=True, requires=DIFFUSION, extra="diffusion", default_model=DEFAULT_SD,
    summary="FreeCompose: DDS latent optimisation with Stable Diffusion",
    tiny="diffcompose.models.tiny:ensure_tiny_model",
    model_classes=("StableDiffusionPipeline",),
    contract=ContractFacts(fast_options={"iterations": 2, "resolution": 64, "band": 0.2},
                           bad_options={task: {"iterations": 0} for task in ("remove", "harmonize", "compose")},
                           steps="iterations", previews=True),
))
