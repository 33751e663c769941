"""Options of the Paint-by-Sketch engine, and its registration (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

from diffcompose.methods.options import check_range, option
from diffcompose.methods.pbe.options import PaintOptions
from diffcompose.methods.registry import (
    DIFFUSION, NO_DEFAULT_MODEL, ContractFacts, Converter, EngineInfo, Trainer, register,
)

ENGINE = "pbsketch"


@dataclass(frozen=True)
class SketchPaintOptions(PaintOptions):
    """Paint-by-Example's options, and how long the sketch is shown."""

    sketch_steps: float = option(
        1.0, "share of the sampling steps, from the first, that see the sketch (the public demo's "
             "not_use_sketch_after, default 1: all); later steps see zeroed sketch channels, so the "
             "fine detail is free to leave the lines")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("sketch_steps", self.sketch_steps, 0.0, 1.0)


register(EngineInfo(
    ENGINE, "diffcompose.methods.pbsketch.engine:PaintBySketchEngine",
    tasks={"paint": SketchPaintOptions, "insert": SketchPaintOptions},
    takes={"paint": ("sketch",), "insert": ("sketch",)},
    # below pbe: without a sketch, auto keeps choosing Paint-by-Example; with one, only this engine takes it
    priority=5, requires=DIFFUSION, extra="diffusion",
    # the public weights are a Google Drive checkpoint, not a hub model: convert it (convert pbsketch)
    default_model=NO_DEFAULT_MODEL,
    summary="Paint-by-Sketch: Paint-by-Example whose fill follows a sketch",
    tiny="diffcompose.methods.pbsketch.tiny:ensure_tiny_pbsketch",
    converter=Converter(
        "diffcompose.methods.pbsketch.convert:convert_pbsketch",
        help="Paint-by-Sketch (Paint-by-Example's keys, 12-channel UNet input)",
        description="Convert the public Paint-by-Sketch checkpoint (e.g. the Cartoon_v1_aesthetic last.ckpt; "
                    ".ckpt read with weights_only: no code in it runs; or .safetensors) into OUT_DIR with unet/ "
                    "(12 input channels), vae/, image_encoder/ and scheduler/ in safetensors.",
        like_help="take the component configs from this model directory (default: the published geometry: SD1.x "
                  "UNet with 12 input channels, SD VAE, CLIP ViT-L/14)",
    ),
    trainer=Trainer(
        config="diffcompose.methods.pbsketch.config:load_config",
        train="diffcompose.methods.pbsketch.train:train",
        example="src/diffcompose/methods/pbsketch/train.example.yaml",
        help="Paint-by-Sketch, Paint-by-Example's self-reference training with a sketch of the target",
        description="Self-reference training of Paint-by-Sketch from a YAML config: Paint-by-Example's trainer "
                    "with the sketch of the target region as three more UNet input channels "
                    "(see src/diffcompose/methods/pbsketch/train.example.yaml).",
    ),
    contract=ContractFacts(fast_options={"steps": 2, "resolution": 64},
                           bad_options={"paint": {"sketch_steps": 1.5}, "insert": {"sketch_steps": -0.1}},
                           steps="steps", previews=True),
))
