"""Training AnyDoor on accelerate: the published recipe on the project's trainer pattern.

``diffcompose train anydoor --config FILE`` runs on one device; ``accelerate launch -m
diffcompose train anydoor --config FILE`` runs the same code data-parallel on several GPUs
or nodes. Per micro-batch (data: :mod:`.data`, one timestep per sample, drawn adaptively by
the dataset):

* the target crop is VAE-encoded (a posterior sample) and noised at the sample's timestep;
* the ID tokens are the projector applied to DINOv2's features of the augmented reference
  (DINOv2 runs without gradients: it is frozen);
* the model (:class:`~.model.AnyDoorModel`: ControlNet on the 4-channel hint, UNet) predicts
  the noise; loss = MSE to the noise (or to the velocity for a v-prediction schedule).

Trained, as published (``cldm.py``'s optimizer): the ControlNet (but its zero ``conv_in``, which
stands for the skipped first block), the UNet decoder (``up_blocks``) and output
(``conv_norm_out``, ``conv_out``) and the ID projector; DINOv2, the VAE and the UNet encoder
and middle block are frozen (:func:`~.model.set_trainable`). No condition dropout (the public
training has none). Every random draw is a function of ``(seed, step, process)`` (sample ids,
the data recipe, posterior samples, noise), so a run resumed from a checkpoint continues with
exactly the loss curve it would have had. Checkpoints (``output_dir/checkpoint-NNNNNNN/``)
hold only the trained weights, the AdamW moments, the EMA weights (optional) and
``state.json``, in safetensors (the shared loop: :mod:`diffcompose.training.loop`). The end
of training writes ``output_dir/final/``, an AnyDoor model directory ``insert --engine anydoor
--model`` loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffcompose.errors import InputError
from diffcompose.methods.anydoor.config import AnyDoorTrainConfig
from diffcompose.methods.anydoor.model import AnyDoorModel, save_anydoor, set_trainable
from diffcompose.models import codec
from diffcompose.outdir import building
from diffcompose.progress import CancelToken, ProgressCallback
from diffcompose.training.loop import Recipe, export_copy, fit, start_run, warmup_factor, weight_dtype

log = logging.getLogger(__name__)


class AnyDoorTrainModel(nn.Module):
    """The noise prediction from the raw batch, as one module (one DDP wrapper, one optimizer)."""

    def __init__(self, anydoor: AnyDoorModel) -> None:
        super().__init__()
        self.anydoor = anydoor

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, hint: torch.Tensor, reference: torch.Tensor
                ) -> torch.Tensor:
        ext = self.anydoor.id_extractor
        with torch.no_grad():  # DINOv2 is frozen: no activations kept for it
            features = ext.features(reference)
        id_tokens = ext.projector(features.to(ext.projector.weight.dtype))
        return self.anydoor(noisy, t, hint, id_tokens)


SALT = 29  # AnyDoor's own random streams (the loop's ``_generator``)


def build_model(init: str, init_kind: str = "auto", image_encoder: str = "tiny", seed: int = 0) -> AnyDoorModel:
    """The AnyDoor model to train, in float32 on the CPU.

    ``anydoor``: an AnyDoor directory (``convert anydoor``, a run's ``final/``; ``init: tiny``:
    the tiny random one). ``sd``: a new AnyDoor from an SD2.1-style text-to-image directory (UNet,
    VAE, scheduler) and a DINOv2 model (``image_encoder``): the ControlNet copies the UNet's
    encoder (zero ``conv_in``, zero-initialised output convolutions, as ControlNet training
    starts), the ID projector is drawn from ``seed``. ``auto``: ``anydoor`` for a directory
    whose ``model_index.json`` marks the AnyDoor layout, else ``sd``.
    """
    import json

    from diffcompose.methods.anydoor.model import LAYOUT_KEY, load_anydoor
    from diffcompose.methods.anydoor.tiny import ensure_tiny_anydoor
    from diffcompose.models.hub import TINY, quiet_libraries, resolve_name

    quiet_libraries()
    if init == TINY:  # the one reading of "tiny" (with its warning); any other name is read by its kind below
        init, init_kind = str(resolve_name(init, locate=Path, tiny=ensure_tiny_anydoor)), "anydoor"
    if init_kind == "auto":
        index = Path(init) / "model_index.json"
        marked = index.is_file() and LAYOUT_KEY in json.loads(index.read_text(encoding="utf-8"))
        init_kind = "anydoor" if marked else "sd"
    model = load_anydoor(init, "cpu", torch.float32) if init_kind == "anydoor" else _from_sd(init, image_encoder, seed)
    if model.vae is None:
        raise InputError(f"init {init}: the AnyDoor directory has no VAE")
    log.info("initialising AnyDoor training from %s (%s)", init, init_kind)
    return model


def _from_sd(init: str, image_encoder: str, seed: int) -> AnyDoorModel:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import Dinov2Config, Dinov2Model

    from diffcompose.methods.anydoor.model import IDExtractor, build_controlnet
    from diffcompose.models.hub import resolve_model
    from diffcompose.models.loader import resolve_sd

    hint = "; set model.init to a local SD2.1-style directory (or an AnyDoor directory)"
    root = resolve_sd(init, ("unet", "vae", "scheduler"), hint=hint)
    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    if unet.config.in_channels != 4:
        raise InputError(f"init {init}: AnyDoor starts from a text-to-image UNet (4 input channels), this one "
                         f"takes {unet.config.in_channels}")
    vae = AutoencoderKL.from_pretrained(str(root / "vae")).requires_grad_(False).eval()
    sched = dict(DDIMScheduler.from_pretrained(str(root / "scheduler")).config)
    if image_encoder == "tiny":
        from diffcompose.methods.anydoor.tiny import tiny_dinov2_config

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dinov2 = Dinov2Model(Dinov2Config(**tiny_dinov2_config()))
    else:
        path = resolve_model(image_encoder, ["config.json"], what="DINOv2 model",
                             hint="; set model.image_encoder to a local DINOv2 directory")
        dinov2 = Dinov2Model.from_pretrained(str(path))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = build_controlnet(unet)
        extractor = IDExtractor(dinov2, int(unet.config.cross_attention_dim))
    sched = {k: v for k, v in sched.items() if not k.startswith("_")}
    return AnyDoorModel(unet, controlnet, extractor, vae, sched)


def trained_state(model: AnyDoorModel) -> dict[str, torch.Tensor]:
    """The weights training changes, by their names in :class:`~.model.AnyDoorModel` (what checkpoints hold)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def loss_fn(model: nn.Module, vae: Any, noise_sched: Any, batch: dict[str, torch.Tensor], gen: torch.Generator,
            weight_dtype: torch.dtype) -> torch.Tensor:
    """Noise-prediction MSE of one micro-batch at the dataset's per-sample timesteps."""
    image, hint, reference, t = batch["image"], batch["hint"], batch["reference"], batch["timestep"]
    with torch.no_grad():
        z0 = vae.encode(image.to(weight_dtype)).latent_dist.sample(generator=gen).float() * codec.latent_scale(vae)
    noise = torch.randn(z0.shape, generator=gen).to(z0.device)
    noisy = noise_sched.add_noise(z0, noise, t)
    pred = model(noisy, t, hint, reference)
    target = noise_sched.get_velocity(z0, noise, t) if noise_sched.config.prediction_type == "v_prediction" else noise
    return F.mse_loss(pred.float(), target.float())


def load_weights(model: AnyDoorModel, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Put checkpoint ``weights`` (exactly the trained parts) into ``model``."""
    expected = trained_state(model)
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise InputError(f"checkpoint {where} does not fit the configured model ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected weights)")
    with torch.no_grad():
        for name, p in expected.items():
            if p.shape != weights[name].shape:
                raise InputError(f"checkpoint {where}: {name} is {tuple(weights[name].shape)}, the model's "
                                 f"{tuple(p.shape)}")
            p.copy_(weights[name])


def export_model(out: Path, model: AnyDoorModel, shadow: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` (with the EMA weights ``shadow`` when given) as an AnyDoor directory at ``out``."""
    final = export_copy(model, shadow)
    with building(out, "train anydoor") as tmp:
        save_anydoor(final, tmp)
    return out


def train(cfg: AnyDoorTrainConfig, *, on_progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None) -> list[float]:
    """Run (or resume) training; return the loss of every optimizer step from step 0.

    ``on_progress`` gets one event per optimizer step (main process only). A ``cancel``
    stops within one step; the checkpoints written so far stay (``resume: latest``).
    """
    from diffusers import DDPMScheduler

    from diffcompose.methods.anydoor.data import AnyDoorDataset, read_sources

    acc, out = start_run(cfg, "train anydoor")
    sources = read_sources(Path(cfg.manifest), Path(cfg.image_root) if cfg.image_root else None)
    model = build_model(cfg.init, cfg.init_kind, cfg.image_encoder, cfg.seed)
    params = set_trainable(model)
    model.train()
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        model.controlnet.enable_gradient_checkpointing()
    noise_sched = DDPMScheduler.from_config(model.scheduler_config)
    dtype = weight_dtype(cfg, acc)
    vae = model.vae.to(acc.device, dtype).eval()  # frozen parts in the training precision
    model.id_extractor.dinov2.to(dtype)
    ds = AnyDoorDataset(sources, resolution=cfg.resolution, seed=cfg.seed, shape_p=cfg.shape_p,
                        uniform_t_p=cfg.uniform_t_p, min_area=cfg.min_area, max_area=cfg.max_area)

    def micro_step(m: nn.Module, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor]:
        return (loss_fn(m, vae, noise_sched, batch, gen, dtype),)

    def export(ema: Any) -> Path:
        model.vae = vae.float()
        return export_model(out / "final", model, ema.shadow if ema is not None else None)

    recipe = Recipe(
        task="train anydoor", model=AnyDoorTrainModel(model), params=params, named=list(trained_state(model).items()),
        dataset=ds, micro_step=micro_step, lr_lambda=lambda s: warmup_factor(s, cfg.warmup_steps),
        weights=lambda: trained_state(model), load_weights=lambda weights, where: load_weights(model, weights, where),
        export=export, salt=SALT)
    return fit(cfg, acc, out, recipe, on_progress=on_progress, cancel=cancel)["losses"]
