"""Whether PowerPaint's public weights are on this machine (light: folders only, no torch).

``auto`` asks :func:`weights_missing` before it picks PowerPaint for a task (object removal
above all, where the classical engine is the fallback): the public v1 checkpoint and the
SD-1.5 inpainting model it was fine-tuned from, both in the hub cache, or a converted folder
named by ``DIFFCOMPOSE_POWERPAINT`` (what ``diffcompose convert powerpaint`` wrote).
"""

from __future__ import annotations

import os
from pathlib import Path

from diffcompose.models.hub import cached_snapshot

#: The SD-1.5 inpainting model v1 was fine-tuned from (the public code's runwayml/stable-diffusion-inpainting,
#: since moved): its VAE, tokenizer and scheduler complete the v1 checkpoint.
V1_BASE = "stable-diffusion-v1-5/stable-diffusion-inpainting"
#: The files of the public v1 checkpoint that the engine reads.
PUBLIC_V1_FILES = ("unet/unet.safetensors", "text_encoder/text_encoder.safetensors")
#: What the v1 checkpoint takes from its SD-1.5 inpainting base.
BASE_FILES = ("vae/config.json", "tokenizer/vocab.json", "scheduler/scheduler_config.json", "unet/config.json",
              "text_encoder/config.json")
#: Environment variable naming a converted PowerPaint folder that ``auto`` may use.
LOCAL_ENV = "DIFFCOMPOSE_POWERPAINT"


def weights_missing() -> str | None:
    """``None`` when PowerPaint v1 can load without a download, else why it cannot."""
    from diffcompose.methods.powerpaint.options import DEFAULT_MODELS

    local = os.environ.get(LOCAL_ENV)
    if local and (Path(local).expanduser() / "model_index.json").is_file():
        return None
    if cached_snapshot(DEFAULT_MODELS[1], PUBLIC_V1_FILES) is None:
        return f"no PowerPaint weights in the hub cache ({DEFAULT_MODELS[1]}) nor in ${LOCAL_ENV}"
    if cached_snapshot(V1_BASE, BASE_FILES) is None:
        return f"PowerPaint v1 is cached but its base model {V1_BASE} is not"
    return None
