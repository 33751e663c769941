"""AnyDoor's networks on diffusers/transformers, shared by the sampler (``engine.py``) and training.

* **ID extractor** (:class:`IDExtractor`): ``transformers.Dinov2Model`` (ViT-g/14 for the
  published model) on the 224x224 reference on white, in [0, 1], ImageNet-normalised. The
  public encoder takes DINOv2's ``x_norm_clstoken`` and ``x_norm_patchtokens``: both *after*
  the final LayerNorm, which is ``Dinov2Model``'s ``last_hidden_state``; ``[CLS, 256 patch
  tokens]`` then go through a trainable ``Linear(hidden, 1024)``: the ID tokens, the
  cross-attention context of the UNet and of the ControlNet. The unconditional context is the
  same extractor on an all-zeros image, zeros *before* normalisation (as the public code).
* **Position embeddings**: DINOv2 checkpoints hold them for a 37x37 grid (518 px). The
  public model resamples them to the 16x16 grid of 224 px with DINOv2's own formula
  (bicubic with ``scale_factor = (16 + 0.1) / 37``, a quirk kept from DINO), not with
  transformers' ``size=16``: the results differ slightly, and the projector was trained on
  the former. :func:`fit_position_embeddings` stores the public resampling in the module
  (and sets ``config.image_size = 224`` so transformers never resamples again).
* **Detail extractor**: a diffusers ``ControlNetModel`` with a 4-channel hint (collage RGB in
  [-1, 1] + mask) and the 16/32/96/256 hint embedding. The public ControlNet skips its first
  input block and starts from the hint embedding: the noisy latent never enters it. In
  diffusers terms that is a ControlNet whose ``conv_in`` is zero (weight and bias), frozen
  so training cannot bring the latent back in (:func:`zero_conv_in`).
* **UNet**: ``UNet2DConditionModel`` in SD2.1 geometry (4-channel latent, cross-attention
  1024), epsilon prediction; the ControlNet's 13 residuals, times ``control_strength``,
  added as usual.

:class:`AnyDoorModel` ``forward(noisy, t, hint, id_tokens)`` is the one noise prediction used
by sampling and training. :func:`save_anydoor` / :func:`load_anydoor` write and read the
model directory (``convert anydoor``, ``--model tiny`` and training all write this layout)::

    model_index.json  unet/  controlnet/  image_encoder/ (Dinov2Model)  id_projector/  vae/  scheduler/
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from diffcompose.errors import InputError, WeightsMissingError
from diffcompose.models.hub import check_complete, read_json, read_safetensors

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Side of the reference image the ID extractor sees.
ID_SIZE = 224
#: Hint channels: collage RGB in [-1, 1] and the mask channel.
HINT_CHANNELS = 4
#: Output widths of the ControlNet's hint embedding (16,16,32,32,96,96,256 convs, then 320).
HINT_EMBEDDING = (16, 32, 96, 256)
#: ``model_index.json`` key marking an AnyDoor directory (its value: the layout version).
LAYOUT_KEY = "diffcompose_anydoor"
LAYOUT_VERSION = 1
WAYS_OUT = "; pass --model DIR (a local AnyDoor directory, e.g. from 'diffcompose convert anydoor')"
REQUIRED = ["model_index.json", "unet/config.json", "controlnet/config.json", "image_encoder/config.json",
            "id_projector/config.json", "id_projector/model.safetensors", "vae/config.json",
            "scheduler/scheduler_config.json"]


# ----------------------------------------------------------------------------- ID extractor

def public_position_embeddings(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """``(1, 1 + N, D)`` position embeddings resampled to a ``grid`` x ``grid`` patch grid as the
    public DINOv2 code does: bicubic, ``scale_factor = (grid + 0.1) / sqrt(N)``, in float32."""
    n = pos.shape[1] - 1
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise ValueError(f"position embeddings of {n} patches are not a square grid")
    if side == grid:
        return pos
    patches = pos[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / side
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic")
    if patches.shape[-1] != grid:
        raise ValueError(f"resampling {side}x{side} position embeddings gave {patches.shape[-1]}, not {grid}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat([pos[:, :1].float(), patches], dim=1).to(pos.dtype)


def fit_position_embeddings(dinov2: Any, size: int = ID_SIZE) -> Any:
    """Store the public resampling of ``dinov2``'s position embeddings for ``size`` px inputs (in place)."""
    patch = int(dinov2.config.patch_size)
    grid = size // patch
    emb = dinov2.embeddings
    if emb.position_embeddings.shape[1] - 1 != grid * grid:
        new = public_position_embeddings(emb.position_embeddings.data, grid)
        emb.position_embeddings = nn.Parameter(new, requires_grad=emb.position_embeddings.requires_grad)
        log.debug("DINOv2 position embeddings resampled to %dx%d (public formula)", grid, grid)
    dinov2.config.image_size = size
    return dinov2


class IDExtractor(nn.Module):
    """DINOv2 + projector: ``(N, 3, 224, 224)`` images in [0, 1] -> ``(N, 1 + 256, context)`` ID tokens."""

    def __init__(self, dinov2: Any, context_dim: int = 1024) -> None:
        super().__init__()
        self.dinov2 = fit_position_embeddings(dinov2)
        self.projector = nn.Linear(dinov2.config.hidden_size, context_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_patches(self) -> int:
        return (ID_SIZE // int(self.dinov2.config.patch_size)) ** 2

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[normalised CLS, patch tokens]`` of DINOv2 (register tokens, if any, left out)."""
        dtype = self.projector.weight.dtype
        images = images.float()  # normalised in float32 on the images' device (offload hooks move the rest)
        x = (images - self.mean.to(images.device, torch.float32)) / self.std.to(images.device, torch.float32)
        hidden = self.dinov2(pixel_values=x.to(dtype)).last_hidden_state
        return torch.cat([hidden[:, :1], hidden[:, -self.num_patches:]], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.features(images))

    def uncond(self, n: int, device: Any = None) -> torch.Tensor:
        """The unconditional context: the extractor on ``n`` all-zeros images (zeros before normalisation)."""
        return self(torch.zeros(n, 3, ID_SIZE, ID_SIZE, device=device or self.projector.weight.device))


def reference_to_tensor(reference: Any, device: Any = "cpu") -> torch.Tensor:
    """uint8 ``(224, 224, 3)`` (or a list) -> ``(N, 3, 224, 224)`` float32 in [0, 1]."""
    import numpy as np

    batch = np.stack(list(reference)) if isinstance(reference, (list, tuple)) else np.asarray(reference)[None]
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div(255.0).to(device)


# ----------------------------------------------------------------------------- ControlNet

def zero_conv_in(controlnet: Any) -> Any:
    """Zero and freeze the ControlNet's ``conv_in``: the noisy latent no longer enters it (in place)."""
    with torch.no_grad():
        controlnet.conv_in.weight.zero_()
        if controlnet.conv_in.bias is not None:
            controlnet.conv_in.bias.zero_()
    controlnet.conv_in.requires_grad_(False)
    return controlnet


def controlnet_config(unet_config: Any) -> dict[str, Any]:
    """The AnyDoor ControlNet's config for a UNet config (same encoder geometry, 4-channel hint)."""
    keys = ("in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
            "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn",
            "norm_num_groups", "norm_eps", "cross_attention_dim", "transformer_layers_per_block",
            "attention_head_dim", "num_attention_heads", "use_linear_projection", "upcast_attention",
            "resnet_time_scale_shift")
    cfg = {k: unet_config[k] for k in keys if k in unet_config}
    return {**cfg, "conditioning_channels": HINT_CHANNELS, "conditioning_embedding_out_channels": HINT_EMBEDDING}


def build_controlnet(unet: Any, copy_unet_weights: bool = True) -> Any:
    """A ControlNet for ``unet`` (initialised from its encoder, as ControlNet training starts), zero ``conv_in``."""
    from diffusers import ControlNetModel

    if copy_unet_weights:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=HINT_EMBEDDING,
                                        conditioning_channels=HINT_CHANNELS)
    else:
        net = ControlNetModel(**controlnet_config(unet.config))
    net = net.to(unet.device)
    if net.dtype != unet.dtype:
        net = net.to(unet.dtype)
    return zero_conv_in(net)


# ----------------------------------------------------------------------------- the whole model

class AnyDoorModel(nn.Module):
    """UNet + ControlNet + ID extractor (+ VAE): :meth:`forward` is the one noise prediction."""

    def __init__(self, unet: Any, controlnet: Any, id_extractor: IDExtractor, vae: Any = None,
                 scheduler_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.unet, self.controlnet, self.id_extractor, self.vae = unet, controlnet, id_extractor, vae
        self.scheduler_config = dict(scheduler_config or {})

    def forward(self, noisy: torch.Tensor, t: Any, hint: torch.Tensor, id_tokens: torch.Tensor,
                control_strength: float = 1.0) -> torch.Tensor:
        """Noise prediction for latents ``noisy`` at ``t`` given the ``(N, 4, 8h, 8w)`` hint and ID tokens."""
        down, mid = self.controlnet(noisy, t, encoder_hidden_states=id_tokens, controlnet_cond=hint,
                                    conditioning_scale=control_strength, return_dict=False)
        return self.unet(noisy, t, encoder_hidden_states=id_tokens, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    def parts(self) -> list[nn.Module]:
        return [m for m in (self.id_extractor, self.controlnet, self.unet, self.vae) if m is not None]


def trainable_modules(model: AnyDoorModel) -> list[nn.Module]:
    """What the published training updates: the ControlNet (not its zero ``conv_in``), the UNet's
    decoder (``up_blocks``) and output, and the ID projector. DINOv2, the UNet encoder and middle
    block, and the VAE stay frozen."""
    return [model.controlnet, model.unet.up_blocks, model.unet.conv_norm_out, model.unet.conv_out,
            model.id_extractor.projector]


def set_trainable(model: AnyDoorModel) -> list[nn.Parameter]:
    """Freeze everything but :func:`trainable_modules`; returns the parameters to optimise."""
    model.requires_grad_(False)
    for m in trainable_modules(model):
        m.requires_grad_(True)
    model.controlnet.conv_in.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- guidance

def guided_model_fn(model: AnyDoorModel, hint: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
                    control_strength: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The model function for :func:`~diffcompose.models.sampling.denoise`: with ``uncond`` one
    batched call on ``[uncond, cond]`` (the hint is the same for both halves, as in the public
    sampler), else a plain conditional call."""
    context = cond if uncond is None else torch.cat([uncond, cond])
    hints = hint if uncond is None else torch.cat([hint, hint])

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t, hints, context, control_strength)

    return fn


def two_pass_prediction(model: AnyDoorModel, x: torch.Tensor, t: Any, hint: torch.Tensor, cond: torch.Tensor,
                        uncond: torch.Tensor, scale: float, control_strength: float = 1.0) -> torch.Tensor:
    """The public sampler's guided prediction: two separate calls (reference for tests and the benchmark)."""
    from diffcompose.models.sampling import guide

    e_u = model(x, t, hint, uncond, control_strength)
    e_c = model(x, t, hint, cond, control_strength)
    return guide(e_u, e_c, scale)


# ----------------------------------------------------------------------------- memory

def set_attention_slicing(model: AnyDoorModel, on: bool) -> None:
    """Attention in slices (``auto``: half the heads at a time) in the UNet and ControlNet, or all at once."""
    for net in (model.unet, model.controlnet):
        if on:
            net.set_attention_slice("auto")
        else:
            from diffusers.models.attention_processor import AttnProcessor2_0

            net.set_attn_processor(AttnProcessor2_0())


class Offload:
    """Where the parts live during a request. ``none``: all on ``device``. ``model``: parts wait
    on the CPU and each stage (ID extractor, then ControlNet + UNet, then VAE) moves its parts
    to ``device`` and back. ``sequential``: accelerate's hooks move each submodule at its call
    (least memory, slowest). On a CPU device every mode is ``none``."""

    def __init__(self, model: AnyDoorModel, device: torch.device, mode: str = "none") -> None:
        self.model, self.device = model, torch.device(device)
        self.mode = mode if self.device.type != "cpu" else "none"
        self._hooked: list[nn.Module] = []

    def __enter__(self) -> "Offload":
        if self.mode == "model":
            for part in self.model.parts():
                part.to("cpu")
        elif self.mode == "sequential":
            from accelerate import cpu_offload

            for part in self.model.parts():
                part.to("cpu")
                cpu_offload(part, execution_device=self.device)
                self._hooked.append(part)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._hooked:
            from accelerate.hooks import remove_hook_from_module

            for part in self._hooked:
                remove_hook_from_module(part, recurse=True)
            self._hooked.clear()
        if self.mode != "none":
            for part in self.model.parts():
                part.to(self.device)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    @contextmanager
    def stage(self, *parts: nn.Module) -> Iterator[None]:
        """Run a stage with ``parts`` on the device (``model`` mode moves them there and back)."""
        if self.mode != "model":
            yield
            return
        for part in parts:
            part.to(self.device)
        try:
            yield
        finally:
            for part in parts:
                part.to("cpu")


# ----------------------------------------------------------------------------- saving and loading

def model_index() -> dict[str, Any]:
    return {"_class_name": "AnyDoorPipeline", "_diffusers_version": "0.42.1",
            "unet": ["diffusers", "UNet2DConditionModel"], "controlnet": ["diffusers", "ControlNetModel"],
            "image_encoder": ["transformers", "Dinov2Model"], "id_projector": ["diffcompose", "Linear"],
            "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDIMScheduler"],
            LAYOUT_KEY: LAYOUT_VERSION}


def save_anydoor(model: AnyDoorModel, root: str | Path, extra_index: dict[str, Any] | None = None) -> Path:
    """Write ``model`` in the AnyDoor directory layout (safetensors) to ``root`` (created, or an empty folder)."""
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    model.unet.save_pretrained(root / "unet", safe_serialization=True)
    model.controlnet.save_pretrained(root / "controlnet", safe_serialization=True)
    model.id_extractor.dinov2.save_pretrained(root / "image_encoder", safe_serialization=True)
    proj = model.id_extractor.projector
    (root / "id_projector").mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in proj.state_dict().items()},
              str(root / "id_projector" / "model.safetensors"))
    (root / "id_projector" / "config.json").write_text(json.dumps(
        {"in_features": proj.in_features, "out_features": proj.out_features}))
    if model.vae is not None:
        model.vae.save_pretrained(root / "vae", safe_serialization=True)
    DDIMScheduler.from_config(model.scheduler_config).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({**model_index(), **(extra_index or {})}, indent=2))
    return root


def check_anydoor_dir(root: Path) -> Path:
    """Refuse a directory that is not a complete AnyDoor model, in one line."""
    try:
        check_complete(root, REQUIRED, "AnyDoor model")
    except WeightsMissingError as exc:
        raise WeightsMissingError(f"{exc}{WAYS_OUT}") from None
    for part, names in (("unet", "diffusion_pytorch_model"), ("controlnet", "diffusion_pytorch_model"),
                        ("vae", "diffusion_pytorch_model"), ("image_encoder", "model")):
        if not any((root / part / f"{names}.{ext}").is_file() for ext in ("safetensors", "bin")):
            raise WeightsMissingError(f"AnyDoor model directory {root} is incomplete: missing "
                                      f"{part}/{names}.safetensors{WAYS_OUT}")
    return root


def load_anydoor(root: str | Path, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> AnyDoorModel:
    """The model of an AnyDoor directory, frozen, on ``device`` in ``dtype`` (through the shared loader)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import Dinov2Model

    from diffcompose.models.loader import load_component

    root = check_anydoor_dir(Path(root))
    device = torch.device(device)
    unet = load_component(root, "unet", device, dtype, cls=UNet2DConditionModel)
    controlnet = load_component(root, "controlnet", device, dtype, cls=ControlNetModel)
    vae = load_component(root, "vae", device, dtype, cls=AutoencoderKL)
    dinov2 = load_component(root, "image_encoder", device, dtype, cls=Dinov2Model)
    width = read_json(root / "id_projector" / "config.json", "AnyDoor ID projector config").get("out_features")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise InputError(f"AnyDoor model {root}: id_projector/config.json needs a positive whole out_features, "
                         f"got {width!r}")
    extractor = IDExtractor(dinov2, width)
    state = read_safetensors(root / "id_projector" / "model.safetensors", "ID projector weights")
    try:
        extractor.projector.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsMissingError(f"AnyDoor model {root}: the ID projector does not fit DINOv2's width: "
                                  f"{str(exc).splitlines()[0]}") from None
    extractor.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if controlnet.config.conditioning_channels != HINT_CHANNELS:
        raise WeightsMissingError(f"{root} is not an AnyDoor model: its ControlNet takes "
                                  f"{controlnet.config.conditioning_channels} hint channels, not {HINT_CHANNELS}")
    if unet.config.cross_attention_dim != extractor.projector.out_features:
        raise WeightsMissingError(f"{root}: the ID projector gives {extractor.projector.out_features}-d tokens, "
                                  f"the UNet expects {unet.config.cross_attention_dim}")
    zero_conv_in(controlnet)
    sched = read_json(root / "scheduler" / "scheduler_config.json", "AnyDoor scheduler config")
    sched = {k: v for k, v in sched.items() if not k.startswith("_")}
    return AnyDoorModel(unet, controlnet, extractor, vae, sched).eval()


def sd21_unet_config(**overrides: Any) -> dict[str, Any]:
    """SD2.1's UNet geometry (4-channel latent, 1024-d cross-attention, 64-channel heads, linear projections)."""
    cfg: dict[str, Any] = dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        norm_num_groups=32)
    cfg.update(overrides)
    return cfg


def vitg14_config(**overrides: Any) -> dict[str, Any]:
    """DINOv2 ViT-g/14's geometry as a ``Dinov2Config`` (SwiGLU FFN, 1536 wide, 40 layers)."""
    cfg: dict[str, Any] = dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, mlp_ratio=4,
                               patch_size=14, image_size=518, use_swiglu_ffn=True, layerscale_value=1.0)
    cfg.update(overrides)
    return cfg


def build_anydoor(unet_config: dict[str, Any], dinov2_config: dict[str, Any], vae_config: dict[str, Any] | None,
                  scheduler_config: dict[str, Any], *, seed: int = 0) -> AnyDoorModel:
    """A randomly initialised AnyDoor of the given geometry (tiny models, benchmarks, training from scratch)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import Dinov2Config, Dinov2Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config)
        controlnet = build_controlnet(unet)
        dinov2 = Dinov2Model(Dinov2Config(**dinov2_config))
        extractor = IDExtractor(dinov2, int(unet.config.cross_attention_dim))
        vae = AutoencoderKL(**vae_config) if vae_config is not None else None
    return AnyDoorModel(unet, controlnet, extractor, vae, scheduler_config)
