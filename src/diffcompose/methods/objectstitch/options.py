"""Options of the ObjectStitch engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffcompose.errors import InputError
from diffcompose.methods.options import SamplerOptions, option, sampler_option
from diffcompose.methods.registry import (
    DIFFUSION, NO_DEFAULT_MODEL, ContractFacts, Converter, EngineInfo, Trainer, register,
)

ENGINE = "objectstitch"


@dataclass(frozen=True)
class InsertOptions(SamplerOptions):
    steps: int = sampler_option("steps", 50)
    guidance_scale: float = sampler_option(
        "guidance_scale", 5.0, "classifier-free guidance scale against the learned unconditional vector "
                               "(the public default 5; exactly 1 = no guidance)")
    scheduler: Literal["ddim", "plms"] = sampler_option(
        "scheduler", "ddim", "sampler: DDIM on the public uniform timesteps (its default) or PLMS")
    eta: float = sampler_option("eta")
    num_images: int = sampler_option("num_images")
    context: float = sampler_option("context", help="context around the box in the window, as a share of the "
                                                    "box's size")
    resolution: int | None = sampler_option("resolution", help="working size in pixels (default: the model's "
                                                               "native size, 512)")
    crop: bool = option(True, "work in a square window around the box (off: the whole background, resized, "
                              "as the public script)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resolution is not None and self.resolution % 8:
            raise InputError(f"--resolution must be a multiple of 8, got {self.resolution}")


register(EngineInfo(
    ENGINE, "diffcompose.methods.objectstitch.engine:ObjectStitchEngine",
    tasks={"insert": InsertOptions},
    # below pbe: auto keeps Paint-by-Example's published hub model first
    priority=5, requires=DIFFUSION, extra="diffusion",
    # the public weights are one Lightning file (ObjectStitch.pth), not a hub model: convert it
    default_model=NO_DEFAULT_MODEL,
    summary="ObjectStitch: put an object into a box, adapting its view and lighting",
    tiny="diffcompose.methods.objectstitch.tiny:ensure_tiny_objectstitch",
    converter=Converter(
        "diffcompose.methods.objectstitch.convert:convert_objectstitch",
        help="ObjectStitch / MureObjectStitch (ObjectStitch.pth: model.diffusion_model.*, cond_stage_model.*, ...)",
        description="Convert the public ObjectStitch checkpoint (bcmi's ObjectStitch.pth, or a MureObjectStitch "
                    "fine-tune; read with weights_only: no code in it runs; or .safetensors) into OUT_DIR with "
                    "unet/, vae/, image_encoder/ (CLIP ViT-L/14 + content adaptor) and scheduler/ in safetensors.",
        like_help="take the component configs from this model directory (default: the published geometry: SD1.x "
                  "UNet with 9 input channels, SD VAE, CLIP ViT-L/14)",
    ),
    trainer=Trainer(
        config="diffcompose.methods.objectstitch.config:load_config",
        train="diffcompose.methods.objectstitch.train:train",
        example="src/diffcompose/methods/objectstitch/train.example.yaml",
        help="ObjectStitch, self-supervised (the object taken from the photo, augmented); "
             "--few-shot DIR: MureObjectStitch's fine-tuning on a few photos of one object",
        description="Train ObjectStitch from a YAML config (see "
                    "src/diffcompose/methods/objectstitch/train.example.yaml): the object of each photo, cut out by "
                    "its mask and augmented, is inserted back into its box. With --few-shot DIR (N.jpg photos and "
                    "N.png masks of one object) it fine-tunes the UNet on them as MureObjectStitch does.",
        flags=(("few_shot", "a folder of photos of one object (N.jpg, each with its mask N.png, white = object): "
                            "MureObjectStitch's few-shot fine-tuning instead of data.manifest"),),
    ),
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64},
                           bad_options={"insert": {"steps": 0}}, steps="steps", previews=True),
))
