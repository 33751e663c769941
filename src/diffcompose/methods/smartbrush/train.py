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
Checkpoints (``output_dir/checkpoint-NNNNNNN/``) are safetensors: the UNet, the AdamW
moments, the EMA weights (optional) and ``state.json`` (step, the three loss curves and,
with fp16, the gradient scaler's state). The end of training writes ``output_dir/final/``,
a model directory ``inpaint --engine smartbrush --model`` loads; :func:`export_checkpoint`
makes one from any checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
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
from diffcompose.outdir import check_out_dir, mark, new_beside, swap_in
from diffcompose.progress import CancelToken, Progress, ProgressCallback
from diffcompose.training.trainer import CKPT_PREFIX, EMA, latest_checkpoint, step_loader

log = logging.getLogger(__name__)


@dataclass
class History:
    """Per optimizer step from step 0: the total loss, the noise MSE and the DICE loss."""

    loss: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)

    def truncate(self, n: int) -> None:
        self.loss, self.noise, self.dice = self.loss[:n], self.noise[:n], self.dice[:n]


@dataclass
class Parts:
    """What training needs besides the trainable UNet: frozen parts and where they came from."""

    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    root: Path
    kind: str


def _generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + rank + 17)


def build_model(init: str, init_kind: str = "auto") -> tuple[Any, Parts]:
    """(trainable SmartBrush UNet, frozen parts) from an SD, SD-inpainting or SmartBrush directory/hub id."""
    from diffusers import UNet2DConditionModel

    from diffcompose.models.loader import load_component, quiet_libraries, resolve_sd

    quiet_libraries()
    if init == "tiny":
        from diffcompose.models.tiny import ensure_tiny_inpainting_model

        root = ensure_tiny_inpainting_model()
    else:
        root = resolve_sd(init, hint="; set model.init to a local SD or SD-inpainting directory")
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

def save_checkpoint(path: Path, unet: Any, optimizer: torch.optim.Optimizer, ema: EMA | None, step: int,
                    history: History, scaler: Any = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()}, str(tmp / "unet.safetensors"))
    opt: dict[str, torch.Tensor] = {}
    for i, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            opt[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().cpu()
    save_file(opt, str(tmp / "optimizer.safetensors"))
    if ema is not None:
        save_file({k: v.contiguous().cpu() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
    state: dict[str, Any] = {"step": step, "loss": history.loss, "noise": history.noise, "dice": history.dice}
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _load_weights(path: Path, unet: Any) -> None:
    from safetensors.torch import load_file

    if not (path / "state.json").is_file() or not (path / "unet.safetensors").is_file():
        raise InputError(f"not a SmartBrush training checkpoint (no state.json / unet.safetensors): {path}")
    try:
        unet.load_state_dict(load_file(str(path / "unet.safetensors")))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"checkpoint {path} does not fit the configured model ({first})") from None


def load_checkpoint(path: Path, unet: Any, optimizer: torch.optim.Optimizer, ema: EMA | None,
                    scaler: Any = None) -> tuple[int, History]:
    from safetensors.torch import load_file

    _load_weights(path, unet)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in load_file(str(path / "optimizer.safetensors")).items():
        i, _, name = key.partition(".")
        state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    if ema is not None:
        if not (path / "ema.safetensors").is_file():
            raise InputError(f"checkpoint {path} has no EMA weights but ema_decay is set")
        ema.shadow = {k: v.float() for k, v in load_file(str(path / "ema.safetensors")).items()}
    info = json.loads((path / "state.json").read_text())
    if scaler is not None and "grad_scaler" in info:
        scaler.load_state_dict(info["grad_scaler"])
    step = int(info["step"])
    history = History(list(info.get("loss", [])), list(info.get("noise", [])), list(info.get("dice", [])))
    history.truncate(step)
    return step, history


# ----------------------------------------------------------------------------- export

def export_model(out: Path, unet: Any, parts: Parts, init: str, shadow: dict[str, torch.Tensor] | None = None
                 ) -> Path:
    """Write a SmartBrush model directory (SD layout, safetensors) at ``out``: ``unet`` (with the EMA
    weights ``shadow`` when given) and the frozen parts it was trained with."""
    from diffusers import DDIMScheduler

    final = copy.deepcopy(unet).cpu().float()
    if shadow is not None:
        params = dict(final.named_parameters())
        with torch.no_grad():
            for name, value in shadow.items():
                params[name].copy_(value)
    tmp = new_beside(out)
    final.save_pretrained(tmp / "unet", safe_serialization=True)
    copy.deepcopy(parts.vae).float().save_pretrained(tmp / "vae", safe_serialization=True)
    copy.deepcopy(parts.text_encoder).float().save_pretrained(tmp / "text_encoder", safe_serialization=True)
    parts.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    DDIMScheduler.from_config(parts.scheduler_config).save_pretrained(tmp / "scheduler")
    (tmp / "model_index.json").write_text(json.dumps(model_index(init=init, init_kind=parts.kind), indent=2))
    mark(tmp, "train smartbrush")
    swap_in(tmp, out)
    return out


def export_checkpoint(cfg: SmartBrushTrainConfig, checkpoint: Path, out: Path, *, force: bool = False) -> Path:
    """A model directory at ``out`` from training checkpoint ``checkpoint`` (its EMA weights when it has them)."""
    from safetensors.torch import load_file

    out = check_out_dir(out, [checkpoint], force=force)
    unet, parts = build_model(cfg.init, cfg.init_kind)
    _load_weights(checkpoint, unet)
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
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from diffcompose.methods.smartbrush.data import SmartBrushDataset, read_instances

    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    inputs = [Path(cfg.manifest)] + ([Path(cfg.image_root)] if cfg.image_root else [])
    out = check_out_dir(Path(cfg.output_dir), inputs, force=False, reuse=True)
    if acc.is_main_process:
        out.mkdir(exist_ok=True)
        mark(out, "train smartbrush")
    instances = read_instances(Path(cfg.manifest), Path(cfg.image_root) if cfg.image_root else None,
                               cfg.min_area, cfg.max_area)
    unet, parts = build_model(cfg.init, cfg.init_kind)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    noise_sched = DDPMScheduler.from_config(parts.scheduler_config)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
    parts.vae.to(acc.device, weight_dtype)
    parts.text_encoder.to(acc.device, weight_dtype)

    model = SmartBrushTrainModel(unet)
    named = list(model.unet.named_parameters())
    optimizer = torch.optim.AdamW([p for _, p in named], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    ema = EMA(named, cfg.ema_decay) if cfg.ema_decay is not None else None
    start, history = 0, History()
    resume = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume) if cfg.resume else None
    if resume is not None:
        start, history = load_checkpoint(resume, model.unet, optimizer, ema, acc.scaler)
        log.info("resumed from %s at step %d", resume, start)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", cfg.learning_rate)
    warmup = cfg.warmup_steps
    lr_sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0, last_epoch=start - 1)

    ds = SmartBrushDataset(instances, resolution=cfg.resolution, seed=cfg.seed, inpaint_share=cfg.inpaint_share,
                           text_dropout=cfg.text_dropout)
    accum = cfg.gradient_accumulation_steps
    loader = step_loader(ds, cfg, start, acc)
    model, optimizer = acc.prepare(model, optimizer)
    model.train()
    batches = iter(loader)
    progress = Progress("train smartbrush", cfg.max_steps, on_progress if acc.is_main_process else None, cancel)
    progress.done = start
    progress.check()
    for step in range(start, cfg.max_steps):
        totals = torch.zeros(3)
        for a in range(accum):
            batch = {k: v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in next(batches).items()}
            gen = _generator(cfg.seed, step * accum + a, acc.process_index)
            with acc.accumulate(model):
                loss, noise_loss, dice = losses(model, parts, noise_sched, batch, gen, weight_dtype, cfg.dice_weight)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            parts_now = torch.stack([loss.detach(), noise_loss.detach(), dice.detach()]).float()
            totals += acc.gather(parts_now[None]).mean(0).cpu() / accum
        lr_sched.step()
        if ema is not None:
            ema.update(named)
        history.loss.append(float(totals[0]))
        history.noise.append(float(totals[1]))
        history.dice.append(float(totals[2]))
        if (step + 1) % cfg.log_every == 0 and acc.is_main_process:
            log.info("step %d: loss %.4f (noise %.4f, dice %.4f; lr %.2e)", step + 1, *totals.tolist(),
                     lr_sched.get_last_lr()[0])
        if ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps) and acc.is_main_process:
            save_checkpoint(out / f"{CKPT_PREFIX}{step + 1:07d}", acc.unwrap_model(model).unet, optimizer, ema,
                            step + 1, history, acc.scaler)
        acc.wait_for_everyone()
        progress.step()
    if acc.is_main_process and start < cfg.max_steps:
        path = export_model(out / "final", acc.unwrap_model(model).unet, parts, cfg.init,
                            ema.shadow if ema is not None else None)
        log.info("trained SmartBrush model written to %s", path)
    acc.end_training()
    return history
