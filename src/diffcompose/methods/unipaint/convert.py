"""Convert Uni-paint's base model, an SD 1.x checkpoint in the original LDM layout, into ours.

The public code loads ``ckpt/sd-v1-4-full-ema.ckpt`` (CompVis' Stable Diffusion v1.4) into its
``LatentDiffusion`` with ``strict=False`` and ``use_ema: False``: it reads

* ``model.diffusion_model.*`` (the UNet) -> ``unet/``,
* ``first_stage_model.*`` (the KL autoencoder) -> ``vae/``,
* ``cond_stage_model.transformer.*`` (CLIP ViT-L/14's text model, in Hugging Face's names) -> ``text_encoder/``,

and leaves ``model_ema.*`` (the EMA copy, unused with ``use_ema: False``) and the noise schedule's
buffers (our ``scheduler/`` config holds the schedule) aside. Any other key is one line: a weight of
no known part is never dropped silently. Mapping reuses diffusers' LDM converters (the UNet and VAE
ones Paint-by-Example's converter uses, and the CLIP prefix removal). A diffusers-shaped SD folder
needs no conversion: ``--model DIR`` loads it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from diffcompose.errors import InputError
from diffcompose.outdir import MODEL, building, check_out_dir

log = logging.getLogger(__name__)

UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."
#: The families that become the model, and those knowingly left aside.
MAPPED = (UNET, VAE, TEXT)
SKIPPED = ("model_ema.",)

#: SD 1.x's geometry (CompVis v1-inference.yaml) in diffusers' names.
SD1_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768, attention_head_dim=8,
                down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                  "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
SD1_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
               block_out_channels=[128, 256, 512, 512], layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4,
               up_block_types=["UpDecoderBlock2D"] * 4)
SD1_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
SD1_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")



def text_keys(state: dict, expected: list[str]) -> dict:
    """The CLIP text weights named as this transformers version's ``CLIPTextModel`` names them: with or
    without the ``text_model.`` level (the v1.4 file has it; transformers 5 dropped it; older files lack it)."""
    nested = any(k.startswith("text_model.") for k in expected)
    out = {}
    for k, v in state.items():
        bare = k[len("text_model."):] if k.startswith("text_model.") else k
        out[f"text_model.{bare}" if nested else bare] = v
    return out


def _configs(like: Path | None) -> dict[str, dict]:
    if like is None:
        return {"unet": SD1_UNET, "vae": SD1_VAE, "text_encoder": SD1_TEXT, "scheduler": SD1_SCHEDULER}
    from diffcompose.methods.pbe.convert import configs_like

    return configs_like(Path(like), {"unet": "unet/config.json", "vae": "vae/config.json",
                                     "text_encoder": "text_encoder/config.json",
                                     "scheduler": "scheduler/scheduler_config.json"})


#: The tokenizer of SD 1.x's text encoder (the LDM checkpoint holds none).
CLIP_TOKENIZER = "openai/clip-vit-large-patch14"


def _find_tokenizer(like: Path | None) -> Path | str:
    """``--like``'s tokenizer folder, else CLIP ViT-L/14's from the local Hugging Face cache, else one line."""
    if like is not None:
        if not (Path(like) / "tokenizer").is_dir():
            raise InputError(f"--like {like}: missing tokenizer/")
        return Path(like) / "tokenizer"
    from transformers import CLIPTokenizer

    try:
        CLIPTokenizer.from_pretrained(CLIP_TOKENIZER, local_files_only=True)
    except (OSError, ValueError):
        raise InputError(f"the checkpoint holds no tokenizer and {CLIP_TOKENIZER}'s is not in the local cache; "
                         "pass --like DIR (an SD 1.x diffusers folder with tokenizer/)") from None
    return CLIP_TOKENIZER


def _write_tokenizer(like: Path | None, target: Path) -> None:
    source = _find_tokenizer(like)
    if isinstance(source, Path):
        shutil.copytree(source, target)
        return
    from transformers import CLIPTokenizer

    CLIPTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(target)


def convert_unipaint(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False) -> Path:
    """Write ``out_dir`` (unet/, vae/, text_encoder/, scheduler/, tokenizer/ with --like) from ``checkpoint``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffcompose.methods.pbe.convert import load_checkpoint, refuse_unknown_keys, strict_load

    out_dir = check_out_dir(Path(out_dir), [Path(checkpoint)] + ([Path(like)] if like else []), force=force,
                            kind=MODEL)
    state = load_checkpoint(Path(checkpoint))
    for prefix in MAPPED:
        if not any(k.startswith(prefix) for k in state):
            raise InputError(f"{checkpoint} is not an SD 1.x checkpoint in the LDM layout: no '{prefix}*' weights")
    refuse_unknown_keys(state, MAPPED + SKIPPED, checkpoint, "SD 1.x")
    first = state[UNET + "input_blocks.0.0.weight"] if UNET + "input_blocks.0.0.weight" in state else None
    if first is not None and first.shape[1] != 4:
        raise InputError(f"{checkpoint} is not a text-to-image SD: its UNet takes {first.shape[1]} input channels, "
                         "not 4 (an inpainting checkpoint?)")
    _find_tokenizer(like)  # before the heavy work: where the tokenizer comes from, or one line
    cfg = _configs(like)
    unet = UNet2DConditionModel(**cfg["unet"])
    strict_load(unet, convert_ldm_unet_checkpoint(state, dict(unet.config)), "UNet")
    vae = AutoencoderKL(**cfg["vae"])
    strict_load(vae, convert_ldm_vae_checkpoint(state, dict(vae.config)), "VAE")
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in cfg["text_encoder"].items() if k != "architectures"}))
    strict_load(text, text_keys(convert_ldm_clip_checkpoint({k: v for k, v in state.items() if k.startswith(TEXT)}),
                                list(text.state_dict())), "text encoder")

    with building(out_dir, "convert unipaint") as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        text.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        DDIMScheduler.from_config(cfg["scheduler"]).save_pretrained(tmp / "scheduler")
        _write_tokenizer(like, tmp / "tokenizer")
        index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                 "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
                 "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    log.info("converted %s -> %s", checkpoint, out_dir)
    return out_dir
