"""Convert the public AnyDoor checkpoint into our directory layout (``convert anydoor CKPT OUT_DIR``).

The public file is one Lightning checkpoint whose ``state_dict`` holds:

* ``model.diffusion_model.*``: the UNet (LDM names; diffusers' own LDM converter maps it);
* ``control_model.*``: the ControlNet (LDM names, ``input_hint_block.{0..14}``,
  ``zero_convs.{i}.0``, ``middle_block_out.0``; diffusers' ControlNet converter maps it).
  Its ``input_blocks.0`` (a conv from the latent) is never run by the public model: it
  becomes ``conv_in`` and is zeroed (see :func:`~.model.zero_conv_in`);
* ``cond_stage_model.model.*``: DINOv2 in the DINOv2 repository's own names (any of
  ViT-S/B/L/g: width from the weights, one head per 64 channels, MLP or SwiGLU from the
  key names, ``blocks.{i}`` or chunked ``blocks.{c}.{i}``): mapped here to
  ``transformers.Dinov2Model`` (fused ``qkv`` split into q, k, v; SwiGLU ``w12`` split into
  gate and up halves, in that order). Its 37x37 position embeddings are resampled to 16x16
  with DINOv2's formula (:func:`~.model.fit_position_embeddings`);
* ``cond_stage_model.projector.*``: the Linear 1536 -> 1024;
* ``first_stage_model.*``: the VAE.

Besides ``state_dict`` the published file holds the optimizer state (most of its size).
``.ckpt`` files are read with the weights-only unpickler and the Lightning allowlist of
``convert pbe`` (no code in the file runs), memory-mapped: tensors outside the prefixes
above (the optimizer's) are never read from disk, and each weight is read once, when its
module is filled. ``.safetensors`` files are read key by key, only the prefixes above.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from diffcompose.errors import InputError
from diffcompose.methods.pbe.convert import _torch_load, configs_like, strict_load

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
CONTROL_PREFIX = "control_model."
DINO_PREFIX = "cond_stage_model.model."
PROJ_PREFIX = "cond_stage_model.projector."
VAE_PREFIX = "first_stage_model."
PREFIXES = (UNET_PREFIX, CONTROL_PREFIX, DINO_PREFIX, PROJ_PREFIX, VAE_PREFIX)

#: The public noise schedule (``configs/anydoor.yaml``: linear_start 0.00085, linear_end 0.012), DDIM as published.
SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    set_alpha_to_one=False, steps_offset=1, clip_sample=False, prediction_type="epsilon",
)
#: SD's VAE (``first_stage_config`` of the public config: ch 128, ch_mult 1,2,4,4, 2 res blocks).
VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, sample_size=512,
    scaling_factor=0.18215,
)
#: DINOv2's heads are 64 channels wide at every size (S 6, B 12, L 16, g 24).
DINO_HEAD_DIM = 64


# ----------------------------------------------------------------------------- reading

def load_anydoor_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The model tensors (:data:`PREFIXES`) of a public checkpoint, without reading the optimizer state."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIXES)}
        except Exception as exc:  # not a safetensors file, truncated
            raise InputError(f"cannot read {path} as safetensors: {str(exc).splitlines()[0]}") from None
    # zip checkpoints are memory-mapped: the optimizer state inside is never read
    state: Any = _torch_load(path, mmap=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state dict")
    out = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith(PREFIXES)}
    if not all(isinstance(v, torch.Tensor) for v in out.values()):
        raise InputError(f"{path} holds model entries that are not tensors")
    return out


def check_public_layout(state: dict[str, torch.Tensor], source: Any) -> None:
    for prefix in PREFIXES:
        if not any(k.startswith(prefix) for k in state):
            raise InputError(f"{source} is not an AnyDoor checkpoint: no '{prefix}*' weights")


# ----------------------------------------------------------------------------- DINOv2

_BLOCK = re.compile(r"blocks\.(\d+)\.(?:(\d+)\.)?(.+)")
_DINO_RENAMES = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj",
                 "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1", "mlp.fc1": "mlp.fc1",
                 "mlp.fc2": "mlp.fc2", "mlp.w3": "mlp.down_proj"}


def convert_dinov2_state(state: dict[str, torch.Tensor], num_heads: int | None = None
                         ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(Dinov2Config kwargs, Dinov2Model state)`` from DINOv2-repository keys (prefix already removed)."""
    out: dict[str, torch.Tensor] = {}
    layers: set[int] = set()
    swiglu = False
    for key, value in state.items():
        if key in ("cls_token", "mask_token", "register_tokens"):
            out[f"embeddings.{key}"] = value.reshape(1, -1) if key == "mask_token" else value
        elif key == "pos_embed":
            out["embeddings.position_embeddings"] = value
        elif key.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("norm."):
            out["layernorm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("head."):
            continue
        elif (m := _BLOCK.fullmatch(key)) is not None:
            # chunked blocks (``blocks.{chunk}.{i}``) keep the global index i
            i, rest = (int(m[2]), m[3]) if m[2] is not None else (int(m[1]), m[3])
            layers.add(i)
            base = f"encoder.layer.{i}."
            module, _, param = rest.rpartition(".")
            if module == "attn.qkv":
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{base}attention.{name}.{param}"] = part.clone()
            elif module == "mlp.w12":
                swiglu = True
                gate, up = value.chunk(2, dim=0)  # public SwiGLU: silu(first half) * second half
                out[f"{base}mlp.gate_proj.{param}"], out[f"{base}mlp.up_proj.{param}"] = gate.clone(), up.clone()
            elif rest in _DINO_RENAMES:
                out[base + _DINO_RENAMES[rest]] = value
            elif module in _DINO_RENAMES:
                out[f"{base}{_DINO_RENAMES[module]}.{param}"] = value
            else:
                raise InputError(f"unexpected DINOv2 key in checkpoint: {DINO_PREFIX}{key}")
        else:
            raise InputError(f"unexpected DINOv2 key in checkpoint: {DINO_PREFIX}{key}")
    for needed in ("embeddings.cls_token", "embeddings.position_embeddings",
                   "embeddings.patch_embeddings.projection.weight"):
        if needed not in out:
            raise InputError(f"the checkpoint's DINOv2 lacks {needed}")
    hidden = int(out["embeddings.cls_token"].shape[-1])
    patch = int(out["embeddings.patch_embeddings.projection.weight"].shape[-1])
    grid = int(round((out["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    if swiglu:
        mlp_hidden = int(out["encoder.layer.0.mlp.gate_proj.weight"].shape[0])
        ratio = 4  # the repository's SwiGLU: 2/3 of 4x the width, rounded up to 8
        if (int(hidden * ratio * 2 / 3) + 7) // 8 * 8 != mlp_hidden:
            raise InputError(f"DINOv2 SwiGLU width {mlp_hidden} does not follow the repository's rule "
                             f"for width {hidden}")
    else:
        ratio = out["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden
        if ratio * hidden != out["encoder.layer.0.mlp.fc1.weight"].shape[0]:
            raise InputError(f"DINOv2 MLP width {out['encoder.layer.0.mlp.fc1.weight'].shape[0]} is not a multiple "
                             f"of its width {hidden}")
    registers = out.get("embeddings.register_tokens")
    cfg = dict(hidden_size=hidden, num_hidden_layers=len(layers),
               num_attention_heads=num_heads or max(1, hidden // DINO_HEAD_DIM),
               mlp_ratio=ratio, patch_size=patch, image_size=grid * patch, use_swiglu_ffn=swiglu,
               layerscale_value=1.0, layer_norm_eps=1e-6, qkv_bias="encoder.layer.0.attention.q_proj.bias" in out,
               num_register_tokens=int(registers.shape[1]) if registers is not None else 0)
    if hidden % cfg["num_attention_heads"]:
        raise InputError(f"DINOv2 width {hidden} is not a multiple of {cfg['num_attention_heads']} heads")
    return cfg, out


# ----------------------------------------------------------------------------- the whole model

def _configs(like: Path | None) -> dict[str, dict[str, Any]]:
    from diffcompose.methods.anydoor.model import sd21_unet_config

    if like is None:
        return {"unet": sd21_unet_config(), "vae": VAE_CONFIG, "scheduler": SCHEDULER_CONFIG}
    return configs_like(like, {"unet": "unet/config.json", "vae": "vae/config.json",
                               "scheduler": "scheduler/scheduler_config.json"})


def convert_state(state: dict[str, torch.Tensor], like: Path | None = None, *, dinov2_heads: int | None = None):
    """An :class:`~.model.AnyDoorModel` (float32, CPU) holding a public checkpoint's weights."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_controlnet_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
    )
    from transformers import Dinov2Config, Dinov2Model

    from diffcompose.methods.anydoor.model import AnyDoorModel, IDExtractor, controlnet_config, zero_conv_in

    cfg = _configs(like)
    unet = UNet2DConditionModel(**cfg["unet"])
    strict_load(unet, convert_ldm_unet_checkpoint(state, dict(unet.config)), "UNet")
    controlnet = ControlNetModel(**controlnet_config(dict(unet.config)))
    control_state = {k: v for k, v in state.items() if k.startswith(CONTROL_PREFIX)}
    strict_load(controlnet, convert_controlnet_checkpoint(control_state, dict(controlnet.config)), "ControlNet")
    zero_conv_in(controlnet)  # input_blocks.0 is skipped by the public ControlNet
    vae = AutoencoderKL(**cfg["vae"])
    strict_load(vae, convert_ldm_vae_checkpoint(state, dict(vae.config)), "VAE")
    dino_cfg, dino_state = convert_dinov2_state(
        {k[len(DINO_PREFIX):]: v for k, v in state.items() if k.startswith(DINO_PREFIX)}, dinov2_heads)
    dinov2 = Dinov2Model(Dinov2Config(**dino_cfg))
    strict_load(dinov2, dino_state, "DINOv2")
    extractor = IDExtractor(dinov2, int(state[PROJ_PREFIX + "weight"].shape[0]))
    strict_load(extractor.projector, {k[len(PROJ_PREFIX):]: v for k, v in state.items() if k.startswith(PROJ_PREFIX)},
                 "ID projector")
    if extractor.projector.out_features != unet.config.cross_attention_dim:
        raise InputError(f"the ID projector gives {extractor.projector.out_features}-d tokens, the UNet expects "
                         f"{unet.config.cross_attention_dim}")
    return AnyDoorModel(unet, controlnet, extractor, vae, cfg["scheduler"])


def convert_anydoor(checkpoint: Path, out_dir: Path, *, like: Path | None = None, force: bool = False,
                    dinov2_heads: int | None = None) -> Path:
    """Write the AnyDoor directory ``out_dir`` (see :mod:`~.model`) from the public ``checkpoint``."""
    from diffcompose.methods.anydoor.model import save_anydoor
    from diffcompose.outdir import MODEL, building, check_out_dir

    out_dir = check_out_dir(Path(out_dir), [Path(checkpoint)] + ([Path(like)] if like else []), force=force,
                            kind=MODEL)
    state = load_anydoor_checkpoint(Path(checkpoint))
    check_public_layout(state, checkpoint)
    model = convert_state(state, like, dinov2_heads=dinov2_heads)
    del state
    with building(out_dir, "convert anydoor") as tmp:
        save_anydoor(model, tmp)
    log.info("converted %s -> %s", checkpoint, out_dir)
    return out_dir
