"""Training SmartBrush on accelerate: the paper's recipe on the project's trainer pattern.

``diffcompose train smartbrush --config FILE`` runs on one device; ``accelerate launch -m
diffcompose train smartbrush --config FILE`` runs the same code data-parallel on several
GPUs or nodes. Per micro-batch (data: :mod:`.data`):

* the image and the image with the coarse region zeroed are VAE-encoded (posterior
  samples); ``m`` is the coarse mask at latent size, the target the exact mask's coverage
  of each latent cell;
* ``x_t = noised(z_0) * m + z_0 * (1 - m)`` at a uniform timestep; the UNet gets
  ``[x_t, m, z_masked]``, the CLIP text context and ``class_labels = s`` (:mod:`.model`);
* loss = noise MSE **inside the region** (outside it ``x_t`` is clean: there is no noise to
  find) + ``dice_weight`` (0.01) x DICE(sigmoid(mask logit), target).

The UNet trains; the VAE and the text encoder are frozen. Every random draw is a function
of ``(seed, step, process)`` (sample ids, posterior samples, noise, timesteps), so a run
resumed from a checkpoint continues with exactly the loss curve it would have had.
The loop, checkpoints and resume are the shared ones (:mod:`diffcompose.training.loop`).
Checkpoints (``output_dir/checkpoint-NNNNNNN/``) are safetensors: the UNet
(``unet.safetensors``), the AdamW moments, the EMA weights (optional) and ``state.json``
(step, the three loss curves and, with fp16, the gradient scaler's state). The end of
training writes ``output_dir/final/``, a model directory ``inpaint --engine smartbrush
--model`` loads; :func:`export_checkpoint` makes one from any checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffcompose.errors import InputError
from diffcompose.methods.smartbrush.config import SmartBrushTrainConfig
from diffcompose.methods.smartbrush.model import (
    IN_CHANNELS, SmartBrushTrainModel, dice_loss, is_smartbrush_unet, latent_mask, model_index, noised_input,
    target_mask, to_smartbrush,
)
from diffcompose.models import codec
from diffcompose.outdir import MODEL, building, check_out_dir
from diffcompose.progress import CancelToken, ProgressCallback
from diffcompose.training.loop import Recipe, check_checkpoint, export_copy, fit, start_run, weight_dtype

log = logging.getLogger(__name__)


@dataclass
class History:
    """Per optimizer step from step 0: the total loss, the noise MSE and the DICE loss."""

    loss: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)


@dataclass
class Parts:
    """What training needs besides the trainable UNet: frozen parts and where they came from."""

    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    root: Path
    kind: str


SALT = 17  # SmartBrush's own random streams (the loop's ``_generator``)
WEIGHTS_FILE = "unet.safetensors"
WHAT = "SmartBrush training checkpoint"


def build_model(init: str, init_kind: str = "auto") -> tuple[Any, Parts]:
    """(trainable SmartBrush UNet, frozen parts) from an SD, SD-inpainting or SmartBrush directory/hub id."""
    from diffusers import UNet2DConditionModel

    from diffcompose.models.hub import quiet_libraries, resolve_name
    from diffcompose.models.loader import load_component, resolve_sd
    from diffcompose.models.tiny import ensure_tiny_inpainting_model

    quiet_libraries()
    hint = "; set model.init to a local SD or SD-inpainting directory"
    root = resolve_name(init, tiny=ensure_tiny_inpainting_model, missing="model.init is empty; name the initial model",
                        locate=lambda name: resolve_sd(name, hint=hint))
    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    kind = init_kind
    if kind == "auto":
        kind = ("smartbrush" if is_smartbrush_unet(unet) else
                "sd-inpainting" if unet.config.in_channels == IN_CHANNELS else "sd")
    if kind != "smartbrush":
        try:
            unet = to_smartbrush(unet, kind)
        except ValueError as exc:
            raise InputError(f"init {init}: {exc}") from None
    elif not is_smartbrush_unet(unet):
        raise InputError(f"init {init} is not a SmartBrush model")
    log.info("initialising SmartBrush from %s (%s)", root, kind)
    cpu = torch.device("cpu")
    parts = Parts(vae=load_component(root, "vae", cpu, torch.float32),
                  text_encoder=load_component(root, "text_encoder", cpu, torch.float32),
                  tokenizer=load_component(root, "tokenizer", cpu, torch.float32),
                  scheduler_config=dict(load_component(root, "scheduler", cpu, torch.float32).config),
                  root=root, kind=kind)
    return unet.train(), parts


def encode_text(parts: Parts, texts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    tok = parts.tokenizer(list(texts), padding="max_length", max_length=parts.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt")
    with torch.no_grad():
        return parts.text_encoder(tok.input_ids.to(device))[0].to(dtype)


def losses(model: Any, parts: Parts, noise_sched: Any, batch: dict[str, Any], gen: torch.Generator,
           weight_dtype: torch.dtype, dice_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, noise MSE inside the region, DICE) of one micro-batch (see the module docstring)."""
    image, coarse, target, level = batch["image"], batch["mask"], batch["target"], batch["level"]
    n, dev = image.shape[0], image.device
    stride = codec.vae_stride(parts.vae)
    scale = codec.latent_scale(parts.vae)
    with torch.no_grad():
        both = torch.cat([image, image * (coarse < 0.5)]).to(weight_dtype)
        lat = parts.vae.encode(both).latent_dist.sample(generator=gen).float() * scale
        z0, z_masked = lat[:n], lat[n:]
        context = encode_text(parts, batch["text"], dev, weight_dtype)
    m = latent_mask(coarse, stride)
    goal = target_mask(target, stride)
    noise = torch.randn(z0.shape, generator=gen).to(dev)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (n,), generator=gen).to(dev)
    x_t = noised_input(z0, noise, t, m, noise_sched)
    eps, logit = model(x_t, m, z_masked, t, context, level)
    want = noise_sched.get_velocity(z0, noise, t) if noise_sched.config.prediction_type == "v_prediction" else noise
    err = (eps.float() - want.float()).pow(2).mean(1, keepdim=True) * m
    noise_loss = err.sum() / m.sum().clamp_min(1.0)
    dice = dice_loss(torch.sigmoid(logit.float()), goal)
    return noise_loss + dice_weight * dice, noise_loss, dice


# ----------------------------------------------------------------------------- checkpoints

def load_weights(unet: Any, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Put a checkpoint's UNet weights into ``unet``."""
    try:
        unet.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"checkpoint {where} does not fit the configured model ({first})") from None


# ----------------------------------------------------------------------------- export

def export_model(out: Path, unet: Any, parts: Parts, init: str, shadow: dict[str, torch.Tensor] | None = None
                 ) -> Path:
    """Write a SmartBrush model directory (SD layout, safetensors) at ``out``: ``unet`` (with the EMA
    weights ``shadow`` when given) and the frozen parts it was trained with."""
    from diffusers import DDIMScheduler

    final = export_copy(unet, shadow)
    with building(out, "train smartbrush") as tmp:
        final.save_pretrained(tmp / "unet", safe_serialization=True)
        copy.deepcopy(parts.vae).float().save_pretrained(tmp / "vae", safe_serialization=True)
        copy.deepcopy(parts.text_encoder).float().save_pretrained(tmp / "text_encoder", safe_serialization=True)
        parts.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        DDIMScheduler.from_config(parts.scheduler_config).save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps(model_index(init=init, init_kind=parts.kind), indent=2))
    return out


def export_checkpoint(cfg: SmartBrushTrainConfig, checkpoint: Path, out: Path, *, force: bool = False) -> Path:
    """A model directory at ``out`` from training checkpoint ``checkpoint`` (its EMA weights when it has them)."""
    from safetensors.torch import load_file

    out = check_out_dir(out, [checkpoint], force=force, kind=MODEL)
    check_checkpoint(checkpoint, WEIGHTS_FILE, WHAT)
    unet, parts = build_model(cfg.init, cfg.init_kind)
    load_weights(unet, load_file(str(checkpoint / WEIGHTS_FILE)), checkpoint)
    shadow = None
    if (checkpoint / "ema.safetensors").is_file():
        shadow = {k: v.float() for k, v in load_file(str(checkpoint / "ema.safetensors")).items()}
    return export_model(out, unet, parts, cfg.init, shadow)


# ----------------------------------------------------------------------------- the loop

def train(cfg: SmartBrushTrainConfig, *, on_progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None) -> History:
    """Run (or resume) training; return the loss curves of every optimizer step from step 0.

    ``on_progress`` gets one event per optimizer step (main process only). A ``cancel``
    stops within one step; the checkpoints written so far stay (``resume: latest``).
    """
    from diffusers import DDPMScheduler

    from diffcompose.methods.smartbrush.data import SmartBrushDataset, read_training_data, text_to_image_pairs

    acc, out = start_run(cfg, "train smartbrush")
    instances, pairs = read_training_data(Path(cfg.manifest), Path(cfg.image_root) if cfg.image_root else None,
                                          cfg.min_area, cfg.max_area, Path(cfg.captions) if cfg.captions else None)
    pairs = text_to_image_pairs(cfg.text_to_image, pairs)
    unet, parts = build_model(cfg.init, cfg.init_kind)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    noise_sched = DDPMScheduler.from_config(parts.scheduler_config)
    dtype = weight_dtype(cfg, acc)
    parts.vae.to(acc.device, dtype)
    parts.text_encoder.to(acc.device, dtype)
    model = SmartBrushTrainModel(unet).train()
    named = list(model.unet.named_parameters())
    ds = SmartBrushDataset(instances, resolution=cfg.resolution, seed=cfg.seed, inpaint_share=cfg.inpaint_share,
                           text_dropout=cfg.text_dropout, pairs=pairs)
    warmup = cfg.warmup_steps

    def micro_step(m: torch.nn.Module, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        return losses(m, parts, noise_sched, batch, gen, dtype, cfg.dice_weight)

    recipe = Recipe(
        task="train smartbrush", model=model, params=[p for _, p in named], named=named, dataset=ds,
        micro_step=micro_step, lr_lambda=lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0,
        weights=lambda: model.unet.state_dict(), load_weights=lambda weights, where: load_weights(unet, weights, where),
        export=lambda ema: export_model(out / "final", unet, parts, cfg.init, ema.shadow if ema is not None else None),
        curves=("loss", "noise", "dice"), salt=SALT, weights_file=WEIGHTS_FILE, what=WHAT)
    curves = fit(cfg, acc, out, recipe, on_progress=on_progress, cancel=cancel)
    return History(curves["loss"], curves["noise"], curves["dice"])
