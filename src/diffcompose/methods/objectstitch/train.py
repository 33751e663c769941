"""ObjectStitch's self-supervised training and MureObjectStitch's few-shot fine-tuning, on the shared loop.

``diffcompose train objectstitch --config FILE`` (``--few-shot DIR`` for a folder of photos of
one object). The recipe is the public one (``configs/v1.yaml``, ``LatentDiffusion`` in
``ldm/models/diffusion/ddpm.py``; MureObjectStitch's ``configs/murecom.yaml`` is the same):

* the loss is Paint-by-Example's trainer's (:func:`diffcompose.methods.pbe.train._loss`): noise
  MSE on ``[z_t, z_masked, keep]``, the latent keep mask resized bilinearly as the public
  training's tensor ``Resize`` (inference thresholds a nearest one), and with probability 0.2
  (``u_cond_percent``) a whole micro-batch conditioned on the unconditional vector;
* only the UNet trains (``cond_stage_trainable: False``; ``proj_out`` and ``learnable_vector``
  are never in the public optimizer); ``train_adaptor: true`` adds the adaptor's mapper and
  final LayerNorm, as the public optimizer does when the condition stage is trainable;
* AdamW at 1e-5 (no learning-rate scaling), warmup 1e-6 -> 1 over 1,000 steps, no EMA;
* few-shot: the condition is the concatenation of every photo's adaptor tokens (``fg_img_list``).

Data, checkpoints and resume are the shared loop's; ``output_dir/final`` is an ObjectStitch
directory that ``insert --engine objectstitch --model`` loads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from diffcompose.errors import InputError
from diffcompose.methods.objectstitch.config import TrainConfig, check_few_shot
from diffcompose.methods.pbe.components import unet_input
from diffcompose.models import codec
from diffcompose.progress import CancelToken, ProgressCallback
from diffcompose.training.loop import Recipe, fit, start_run, warmup_factor, weight_dtype

log = logging.getLogger(__name__)

#: Weights the adaptor option trains (the public ``configure_optimizers``: ``final_ln`` and ``mapper``).
ADAPTOR = ("encoder.mapper.", "encoder.final_layer_norm.")


class ObjectStitchTrainModel(nn.Module):
    """UNet + CLIP/adaptor as one module; ``objects`` ``(B, N, 3, S, S)``: their tokens are concatenated."""

    def __init__(self, unet, encoder, train_adaptor: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.encoder = encoder
        encoder.requires_grad_(False)
        if train_adaptor:
            encoder.mapper.requires_grad_(True)
            encoder.final_layer_norm.requires_grad_(True)

    def condition(self, objects: torch.Tensor) -> torch.Tensor:
        b, n = objects.shape[:2]
        grad = any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            tokens = self.encoder(objects.flatten(0, 1))  # (B*N, T, D)
        return tokens.reshape(b, n * tokens.shape[1], tokens.shape[2])

    def forward(self, noisy: torch.Tensor, z_masked: torch.Tensor, keep: torch.Tensor, objects: torch.Tensor,
                drop: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ctx = self.condition(objects)
        ctx = torch.where(drop[:, None, None], self.encoder.uncond_vector.to(ctx.dtype).expand_as(ctx), ctx)
        return self.unet(unet_input(noisy, z_masked, keep), t, encoder_hidden_states=ctx).sample


def trainable(model: ObjectStitchTrainModel) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def build_model(init: str, train_adaptor: bool):
    """(trainable model, frozen VAE, noise scheduler config) from an ObjectStitch directory or ``tiny``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from diffcompose.methods.objectstitch.components import TOKEN_MODE, locate_objectstitch
    from diffcompose.methods.objectstitch.tiny import ensure_tiny_objectstitch
    from diffcompose.methods.pbe.components import scheduler_config
    from diffcompose.methods.pbe.encoder import ExemplarEncoder
    from diffcompose.models.hub import quiet_libraries, resolve_name

    quiet_libraries()
    root = resolve_name(init, tiny=ensure_tiny_objectstitch, missing="model.init is empty; name the initial model",
                        locate=locate_objectstitch)
    encoder = ExemplarEncoder.from_pretrained(root / "image_encoder")
    if encoder.tokens != TOKEN_MODE:
        raise InputError(f"init {init}: not an ObjectStitch model (its image encoder reads CLIP's pooled token)")
    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    vae = AutoencoderKL.from_pretrained(str(root / "vae")).requires_grad_(False).eval()
    log.info("initialising from %s", root)
    return ObjectStitchTrainModel(unet, encoder, train_adaptor), vae, scheduler_config(root)


def load_weights(model: ObjectStitchTrainModel, weights: dict[str, torch.Tensor], where: Path) -> None:
    expected = {n for n, _ in trainable(model)}
    if set(weights) != expected:
        raise InputError(f"checkpoint {where} does not fit the configured model "
                         f"({len(expected - set(weights))} missing, {len(set(weights) - expected)} unexpected weights)")
    model.load_state_dict(weights, strict=False)


def train(cfg: TrainConfig, *, on_progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None) -> list[float]:
    """Run (or resume) training; return the loss of every optimizer step from step 0."""
    from diffusers import DDPMScheduler

    from diffcompose.methods.objectstitch.data import ObjectStitchDataset, few_shot_records, read_records
    from diffcompose.methods.pbe.train import _loss, export_model

    check_few_shot(cfg)
    if cfg.few_shot:
        records = few_shot_records(Path(cfg.few_shot), cfg.few_shot_images)
    else:
        records = read_records(Path(cfg.manifest), Path(cfg.image_root) if cfg.image_root else None,
                               cfg.min_area, cfg.max_area)
    acc, out = start_run(cfg, "train objectstitch")
    model, vae, sched_config = build_model(cfg.init, cfg.train_adaptor)
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    noise_sched = DDPMScheduler.from_config(sched_config)
    dtype = weight_dtype(cfg, acc)
    vae.to(acc.device, dtype)
    latent_scale = codec.latent_scale(vae)
    model.train()
    model.encoder.eval()  # frozen CLIP (and adaptor, unless trained): no dropout
    named = trainable(model)
    ds = ObjectStitchDataset(records, resolution=cfg.resolution, object_size=model.encoder.image_size,
                             seed=cfg.seed, few_shot=bool(cfg.few_shot))

    def micro_step(m: torch.nn.Module, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor]:
        return (_loss(m, vae, noise_sched, batch, gen, latent_scale, cfg.cond_dropout, dtype, "batch"),)

    recipe = Recipe(
        task="train objectstitch", model=model, params=[p for _, p in named], named=named, dataset=ds,
        micro_step=micro_step, lr_lambda=lambda s: warmup_factor(s, cfg.warmup_steps),
        weights=lambda: {n: p.detach() for n, p in trainable(model)},
        load_weights=lambda weights, where: load_weights(model, weights, where),
        export=lambda ema: export_model(out / "final", model, vae.float(), sched_config, ema,
                                        task="train objectstitch", engine="objectstitch"))
    return fit(cfg, acc, out, recipe, on_progress=on_progress, cancel=cancel)["losses"]
