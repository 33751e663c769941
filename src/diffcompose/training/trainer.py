"""Self-reference training of Paint-by-Example on accelerate.

``diffcompose train pbe --config FILE`` runs on one device; ``accelerate launch -m
diffcompose train pbe --config FILE`` runs the same code data-parallel on several GPUs or
nodes. Every random draw is a function of ``(seed, step, process)``: the data sample ids,
the VAE posterior samples, noise, timesteps and condition dropout. So a run resumed from
a checkpoint continues with exactly the loss curve it would have had.

Checkpoints (``output_dir/checkpoint-NNNNNNN/``) are safetensors: the trainable weights,
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
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from diffcompose.errors import InputError
from diffcompose.methods.pbe.components import masked_condition
from diffcompose.models import codec
from diffcompose.outdir import check_out_dir, mark, new_beside, swap_in
from diffcompose.progress import CancelToken, Progress, ProgressCallback
from diffcompose.training.config import TrainConfig
from diffcompose.training.model import PbETrainModel, build_model, trainable_parameters, trainable_state

log = logging.getLogger(__name__)

CKPT_PREFIX = "checkpoint-"


class StepSampler(torch.utils.data.Sampler):
    """Sample ids of micro-batches ``start, start+1, ...`` for one process (never repeats, never ends)."""

    def __init__(self, start: int, batch: int, rank: int, world: int) -> None:
        self.start, self.batch, self.rank, self.world = start, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        m = self.start
        while True:
            base = (m * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)
            m += 1


class EMA:
    """Exponential moving average of the trainable weights (used for the final export)."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in named}

    @torch.no_grad()
    def update(self, named: list[tuple[str, torch.nn.Parameter]]) -> None:
        for n, p in named:
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)


def step_loader(ds: torch.utils.data.Dataset, cfg: Any, start: int, acc: Any) -> torch.utils.data.DataLoader:
    """Batches for this process from optimizer step ``start`` on (every trainer's loader: see :class:`StepSampler`)."""
    return torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers, pin_memory=acc.device.type == "cuda",
        sampler=StepSampler(start * cfg.gradient_accumulation_steps, cfg.batch_size, acc.process_index,
                            acc.num_processes),
        persistent_workers=cfg.num_workers > 0)


def _generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + rank)


WARMUP_START = 1e-6  # the original's f_start: the first step's share of the learning rate


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based): linear from 1e-6 to 1 over
    ``warmup_steps``, then 1 (the original's ``LambdaLinearScheduler`` with ``configs/v1.yaml``)."""
    if step >= warmup_steps:
        return 1.0
    return WARMUP_START + (1.0 - WARMUP_START) * step / warmup_steps


def condition_dropout(n: int, p: float, per: str, gen: torch.Generator) -> torch.Tensor:
    """Which of ``n`` samples train the unconditional vector: all or none of the micro-batch at once
    (``per="batch"``, the original) or each sample on its own (``"sample"``)."""
    if per == "batch":
        return (torch.rand(1, generator=gen) < p).expand(n)
    return torch.rand(n, generator=gen) < p


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted(p for p in output_dir.glob(CKPT_PREFIX + "*") if (p / "state.json").is_file())
    return ckpts[-1] if ckpts else None


def save_checkpoint(path: Path, model: PbETrainModel, optimizer: torch.optim.Optimizer, ema: EMA | None,
                    step: int, losses: list[float], scaler: torch.amp.GradScaler | None = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable_state(model).items()},
              str(tmp / "model.safetensors"))
    opt: dict[str, torch.Tensor] = {}
    for i, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            opt[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().cpu()
    save_file(opt, str(tmp / "optimizer.safetensors"))
    if ema is not None:
        save_file({k: v.contiguous().cpu() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
    state: dict = {"step": step, "losses": losses}
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def load_checkpoint(path: Path, model: PbETrainModel, optimizer: torch.optim.Optimizer, ema: EMA | None,
                    scaler: torch.amp.GradScaler | None = None) -> tuple[int, list[float]]:
    from safetensors.torch import load_file

    if not (path / "state.json").is_file():
        raise InputError(f"not a training checkpoint (no state.json): {path}")
    missing, unexpected = model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
    missing = [k for k in missing if not k.startswith("encoder.model.")]
    if missing or unexpected:
        raise InputError(f"checkpoint {path} does not fit the configured model "
                         f"({len(missing)} missing, {len(unexpected)} unexpected weights)")
    flat = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        i, _, name = key.partition(".")
        state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    if ema is not None:
        if not (path / "ema.safetensors").is_file():
            raise InputError(f"checkpoint {path} has no EMA weights but ema_decay is set")
        ema.shadow = {k: v.float() for k, v in load_file(str(path / "ema.safetensors")).items()}
    info = json.loads((path / "state.json").read_text())
    if scaler is not None:
        if "grad_scaler" in info:
            scaler.load_state_dict(info["grad_scaler"])
        else:
            log.warning("checkpoint %s has no gradient scaler state (saved without fp16): the loss scale "
                        "starts afresh", path)
    return int(info["step"]), list(info.get("losses", []))


def export_model(out: Path, model: PbETrainModel, vae, sched_config: dict, ema: EMA | None) -> Path:
    """A Paint-by-Example directory of the trained (or EMA) weights."""
    import copy

    from diffusers import PNDMScheduler

    from diffcompose.methods.pbe.tiny import model_index

    final = copy.deepcopy(model).cpu().float()
    if ema is not None:
        params = dict(final.named_parameters())
        with torch.no_grad():
            for n, v in ema.shadow.items():
                params[n].copy_(v)
    tmp = new_beside(out)
    final.unet.save_pretrained(tmp / "unet", safe_serialization=True)
    vae.save_pretrained(tmp / "vae", safe_serialization=True)
    final.encoder.save_pretrained(tmp / "image_encoder")
    PNDMScheduler.from_config({**sched_config, "skip_prk_steps": True}).save_pretrained(tmp / "scheduler")
    (tmp / "model_index.json").write_text(json.dumps(model_index(), indent=2))
    mark(tmp, "train pbe")
    swap_in(tmp, out)
    return out


def train(cfg: TrainConfig, *, on_progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None) -> list[float]:
    """Run (or resume) training; return the loss of every optimizer step from step 0.

    ``on_progress`` gets one event per optimizer step (main process only). A ``cancel``
    stops within one step; the checkpoints written so far stay, so ``--resume latest``
    continues from the last one.
    """
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from diffcompose.training.dataset import SelfReferenceDataset, read_records

    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    inputs = [Path(cfg.manifest)] + ([Path(cfg.image_root)] if cfg.image_root else [])
    out = check_out_dir(Path(cfg.output_dir), inputs, force=False, reuse=True)
    if acc.is_main_process:
        out.mkdir(exist_ok=True)
        mark(out, "train pbe")
    records = read_records(Path(cfg.manifest), Path(cfg.image_root) if cfg.image_root else None,
                           cfg.min_area, cfg.max_area)
    model, vae, sched_config, _ = build_model(cfg.init, cfg.init_kind, cfg.image_encoder, cfg.seed)
    if model.unet.config.cross_attention_dim != model.encoder.proj_size:
        raise InputError("the image encoder's projection does not match the UNet's cross-attention width")
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    noise_sched = DDPMScheduler.from_config(sched_config)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
    if not acc.native_amp:  # e.g. fp16 on a CPU: accelerate trains in fp32 without autocast, so must we
        weight_dtype = torch.float32
    vae.to(acc.device, weight_dtype)
    model.encoder.model.to(weight_dtype)
    latent_scale = codec.latent_scale(vae)

    named = trainable_parameters(model)
    optimizer = torch.optim.AdamW([p for _, p in named], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    ema = EMA(named, cfg.ema_decay) if cfg.ema_decay is not None else None
    start, losses = 0, []
    resume = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume) if cfg.resume else None
    if resume is not None:
        start, losses = load_checkpoint(resume, model, optimizer, ema, acc.scaler)
        losses = losses[:start]
        log.info("resumed from %s at step %d", resume, start)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", cfg.learning_rate)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_factor(s, cfg.warmup_steps), last_epoch=start - 1)

    ds = SelfReferenceDataset(records, resolution=cfg.resolution, reference_size=model.encoder.image_size,
                              seed=cfg.seed, max_extend=cfg.max_extend, bezier_p=cfg.bezier_p)
    accum = cfg.gradient_accumulation_steps
    loader = step_loader(ds, cfg, start, acc)
    model, optimizer = acc.prepare(model, optimizer)
    model.train()
    batches = iter(loader)
    progress = Progress("train pbe", cfg.max_steps, on_progress if acc.is_main_process else None, cancel)
    progress.done = start
    progress.check()
    for step in range(start, cfg.max_steps):
        step_loss = 0.0
        for a in range(accum):
            batch = {k: v.to(acc.device, non_blocking=True) for k, v in next(batches).items()}
            gen = _generator(cfg.seed, step * accum + a, acc.process_index)
            with acc.accumulate(model):
                loss = _loss(model, vae, noise_sched, batch, gen, latent_scale, cfg.cond_dropout, weight_dtype,
                             cfg.cond_dropout_per)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += acc.gather(loss.detach()[None]).mean().item() / accum
        lr_sched.step()
        if ema is not None:
            ema.update(named)
        losses.append(step_loss)
        if (step + 1) % cfg.log_every == 0 and acc.is_main_process:
            log.info("step %d: loss %.4f (lr %.2e)", step + 1, step_loss, lr_sched.get_last_lr()[0])
        if ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps) and acc.is_main_process:
            save_checkpoint(out / f"{CKPT_PREFIX}{step + 1:07d}", acc.unwrap_model(model), optimizer, ema,
                            step + 1, losses, acc.scaler)
        acc.wait_for_everyone()
        progress.step()
    if acc.is_main_process and start < cfg.max_steps:
        path = export_model(out / "final", acc.unwrap_model(model), vae.float(), sched_config, ema)
        log.info("trained model written to %s", path)
    acc.end_training()
    return losses


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
    masked, keep_lat = masked_condition(image, hole, (image.shape[-2] // stride, image.shape[-1] // stride))
    with torch.no_grad():
        both = torch.cat([image, masked]).to(weight_dtype)
        lat = vae.encode(both).latent_dist.sample(generator=gen).float() * latent_scale
        z, z_masked = lat[:n], lat[n:]
    noise = torch.randn(z.shape, generator=gen).to(z.device)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (n,), generator=gen).to(z.device)
    drop = condition_dropout(n, cond_dropout, cond_dropout_per, gen).to(z.device)
    noisy = noise_sched.add_noise(z, noise, t)
    target = noise_sched.get_velocity(z, noise, t) if noise_sched.config.prediction_type == "v_prediction" else noise
    pred = model(noisy, z_masked, keep_lat, reference.to(weight_dtype), drop, t)
    return F.mse_loss(pred.float(), target.float())
