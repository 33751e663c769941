"""Self-reference training of Paint-by-Example on accelerate.

``diffcompose train pbe --config FILE`` runs on one device; ``accelerate launch -m
diffcompose train pbe --config FILE`` runs the same code data-parallel on several GPUs or
nodes. Every random draw is a function of ``(seed, step, process)``: the data sample ids,
the VAE posterior samples, noise, timesteps and condition dropout. So a run resumed from
a checkpoint continues with exactly the loss curve it would have had.

The loop, checkpoints and resume are the shared ones (:mod:`diffcompose.training.loop`); this
module brings the loss and the export, :mod:`.train_model` the model and :mod:`.data` the data. Checkpoints
(``output_dir/checkpoint-NNNNNNN/``) are safetensors: the trainable weights,
the AdamW moments, the EMA weights (optional) and ``state.json`` (step, losses and, with
fp16 mixed precision, the gradient scaler's loss scale and growth counter, so a resumed fp16
run skips exactly the steps the uninterrupted one would). The end of training writes
``output_dir/final/``, a model directory ``paint --model`` loads.

The optimisation defaults are the original's (``configs/v1.yaml``): AdamW, a linear warmup
of the learning rate over 10,000 steps from 1e-6 of it, no gradient clipping, no EMA, and
condition dropout drawn once per micro-batch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from diffcompose.errors import InputError
from diffcompose.methods.pbe.components import masked_condition
from diffcompose.methods.pbe.config import TrainConfig
from diffcompose.methods.pbe.train_model import PbETrainModel, build_model, trainable_parameters, trainable_state
from diffcompose.models import codec
from diffcompose.outdir import building
from diffcompose.progress import CancelToken, ProgressCallback
from diffcompose.training.loop import EMA, Recipe, export_copy, fit, start_run, warmup_factor, weight_dtype

log = logging.getLogger(__name__)

def condition_dropout(n: int, p: float, per: str, gen: torch.Generator) -> torch.Tensor:
    """Which of ``n`` samples train the unconditional vector: all or none of the micro-batch at once
    (``per="batch"``, the original) or each sample on its own (``"sample"``)."""
    if per == "batch":
        return (torch.rand(1, generator=gen) < p).expand(n)
    return torch.rand(n, generator=gen) < p


def load_weights(model: PbETrainModel, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Put a checkpoint's trainable weights into ``model`` (the frozen CLIP backbone is not in checkpoints)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith("encoder.model.")]
    if missing or unexpected:
        raise InputError(f"checkpoint {where} does not fit the configured model "
                         f"({len(missing)} missing, {len(unexpected)} unexpected weights)")


@dataclass(frozen=True)
class Variant:
    """What a trainer that extends this recipe changes (Paint-by-Sketch: a sketch as 3 more input channels).

    ``extra_channels``: UNet input channels after the 9, zero-initialised from a 9-channel init.
    ``dataset(records, cfg, reference_size)``: its dataset, whose items add ``"extra"``: those
    channels at pixel size (``(C, R, R)``), resized to the latent grid as the keep mask is.
    ``task``: its name in logs and on the folders it writes; ``engine``: the engine that runs the
    model it exports (``None``: Paint-by-Example's own, whose pipeline class says so).
    """

    task: str = "train pbe"
    engine: str | None = None
    extra_channels: int = 0
    dataset: Callable[[list, Any, int], torch.utils.data.Dataset] | None = None


def export_model(out: Path, model: PbETrainModel, vae, sched_config: dict, ema: EMA | None,
                 task: str = "train pbe", engine: str | None = None) -> Path:
    """A Paint-by-Example directory of the trained (or EMA) weights (``task``: the trainer named on the folder;
    Paint-by-Sketch's and ObjectStitch's trainers write the same layout, ``engine`` naming theirs)."""
    from diffusers import PNDMScheduler

    from diffcompose.methods.pbe.tiny import model_index

    final = export_copy(model, ema.shadow if ema is not None else None)
    with building(out, task) as tmp:
        final.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        final.encoder.save_pretrained(tmp / "image_encoder")
        PNDMScheduler.from_config({**sched_config, "skip_prk_steps": True}).save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps(model_index(engine), indent=2))
    return out


def train(cfg: TrainConfig, *, on_progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None, variant: Variant = Variant()) -> list[float]:
    """Run (or resume) training; return the loss of every optimizer step from step 0.

    ``on_progress`` gets one event per optimizer step (main process only). A ``cancel``
    stops within one step; the checkpoints written so far stay, so ``--resume latest``
    continues from the last one. ``variant``: a trainer that extends this recipe (:class:`Variant`).
    """
    from diffusers import DDPMScheduler

    from diffcompose.methods.pbe.data import SelfReferenceDataset, read_records

    acc, out = start_run(cfg, variant.task)
    records = read_records(Path(cfg.manifest), Path(cfg.image_root) if cfg.image_root else None,
                           cfg.min_area, cfg.max_area)
    model, vae, sched_config, _ = build_model(cfg.init, cfg.init_kind, cfg.image_encoder, cfg.seed,
                                              variant.extra_channels)
    if model.unet.config.cross_attention_dim != model.encoder.proj_size:
        raise InputError("the image encoder's projection does not match the UNet's cross-attention width")
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    noise_sched = DDPMScheduler.from_config(sched_config)
    dtype = weight_dtype(cfg, acc)
    vae.to(acc.device, dtype)
    model.encoder.model.to(dtype)
    latent_scale = codec.latent_scale(vae)
    model.train()
    named = trainable_parameters(model)
    if variant.dataset is not None:
        ds = variant.dataset(records, cfg, model.encoder.image_size)
    else:
        ds = SelfReferenceDataset(records, resolution=cfg.resolution, reference_size=model.encoder.image_size,
                                  seed=cfg.seed, max_extend=cfg.max_extend, bezier_p=cfg.bezier_p)

    def micro_step(m: torch.nn.Module, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor]:
        return (_loss(m, vae, noise_sched, batch, gen, latent_scale, cfg.cond_dropout, dtype, cfg.cond_dropout_per),)

    recipe = Recipe(
        task=variant.task, model=model, params=[p for _, p in named], named=named, dataset=ds, micro_step=micro_step,
        lr_lambda=lambda s: warmup_factor(s, cfg.warmup_steps), weights=lambda: trainable_state(model),
        load_weights=lambda weights, where: load_weights(model, weights, where),
        export=lambda ema: export_model(out / "final", model, vae.float(), sched_config, ema, variant.task,
                                        variant.engine))
    return fit(cfg, acc, out, recipe, on_progress=on_progress, cancel=cancel)["losses"]


def _loss(model, vae, noise_sched, batch: dict[str, torch.Tensor], gen: torch.Generator, latent_scale: float,
          cond_dropout: float, weight_dtype: torch.dtype, cond_dropout_per: str = "batch") -> torch.Tensor:
    """Noise-prediction MSE for one batch (the target follows the scheduler's prediction type).

    The masked image and the latent keep mask come from the sampler's own function
    (:func:`~diffcompose.methods.pbe.components.masked_condition`, bilinear as the original),
    the channel order from the model's (:func:`~diffcompose.methods.pbe.components.unet_input`).
    """
    image, hole, reference = batch["image"], batch["mask"], batch["reference"]
    n = image.shape[0]
    stride = codec.vae_stride(vae)
    latent_size = (image.shape[-2] // stride, image.shape[-1] // stride)
    masked, keep_lat = masked_condition(image, hole, latent_size)
    extra = () if "extra" not in batch else (
        F.interpolate(batch["extra"], size=latent_size, mode="bilinear", align_corners=False).to(weight_dtype),)
    with torch.no_grad():
        both = torch.cat([image, masked]).to(weight_dtype)
        lat = vae.encode(both).latent_dist.sample(generator=gen).float() * latent_scale
        z, z_masked = lat[:n], lat[n:]
    noise = torch.randn(z.shape, generator=gen).to(z.device)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (n,), generator=gen).to(z.device)
    drop = condition_dropout(n, cond_dropout, cond_dropout_per, gen).to(z.device)
    noisy = noise_sched.add_noise(z, noise, t)
    target = noise_sched.get_velocity(z, noise, t) if noise_sched.config.prediction_type == "v_prediction" else noise
    pred = model(noisy, z_masked, keep_lat, reference.to(weight_dtype), drop, t, *extra)
    return F.mse_loss(pred.float(), target.float())
