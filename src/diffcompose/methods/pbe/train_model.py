"""Building the trainable Paint-by-Example model from an initial checkpoint (for :mod:`.train`).

* ``pbe``: a Paint-by-Example directory (fine-tuning, or continuing a run's export).
* ``sd-inpainting``: SD inpainting's 9-channel UNet takes ``[z_t, mask, z_masked]`` with
  mask 1 = hole; ours is ``[z_t, z_masked, keep]`` with keep = 1 - mask. Its first
  convolution is re-ordered, and the mask channel's weights are negated with their sum
  folded into the bias (``w * mask = w - w * keep``), so the widened UNet computes what the
  inpainting UNet computed (exactly away from the border, where zero padding breaks the
  identity). ``init_kind: auto`` takes this path for any 9-channel UNet without an
  ``image_encoder/``.
* ``sd``: SD text-to-image's 4-channel UNet gets 5 more input channels, zero-initialised,
  so training starts from exactly the text-to-image model's behaviour.

The exemplar encoder's CLIP tower comes from a CLIP checkpoint (frozen); its mapper,
final LayerNorm, projection and unconditional vector start random (seeded).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffcompose.errors import InputError
from diffcompose.methods.pbe.components import IN_CHANNELS, unet_input
from diffcompose.methods.pbe.encoder import ExemplarEncoder

log = logging.getLogger(__name__)


class PbETrainModel(nn.Module):
    """UNet + exemplar encoder as one module (one DDP wrapper, one optimizer)."""

    def __init__(self, unet: Any, encoder: ExemplarEncoder) -> None:
        super().__init__()
        self.unet = unet
        self.encoder = encoder
        encoder.model.requires_grad_(False)  # CLIP stays frozen

    def forward(self, noisy: torch.Tensor, z_masked: torch.Tensor, keep: torch.Tensor, reference: torch.Tensor,
                drop: torch.Tensor, t: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """``extra``: more input channels after the 9 (a model that extends the input, e.g. a sketch)."""
        ctx = self.encoder(reference)
        ctx = torch.where(drop[:, None, None], self.encoder.uncond_vector.to(ctx.dtype).expand_as(ctx), ctx)
        return self.unet(unet_input(noisy, z_masked, keep, *extra), t, encoder_hidden_states=ctx).sample


def trainable_state(model: PbETrainModel) -> dict[str, torch.Tensor]:
    """What training changes (everything but the CLIP tower), by name."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.model.")}


def trainable_parameters(model: PbETrainModel) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if not n.startswith("encoder.model.")]


def _resolve(name: str, required: list[str], what: str) -> Path:
    from diffcompose.models.hub import resolve_model

    return resolve_model(name, required, what=what, hint="; pass a local directory in the config")


def widen_conv_in(unet: Any, kind: str) -> None:
    """Give ``unet`` the 9-channel ``[z_t, z_masked, keep]`` input (see the module docstring)."""
    conv = unet.conv_in
    w = conv.weight.data
    new = nn.Conv2d(IN_CHANNELS, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    with torch.no_grad():
        new.bias.copy_(conv.bias)
        if kind == "sd-inpainting":  # [z_t, hole, z_masked] -> [z_t, z_masked, keep], hole = 1 - keep
            hole = w[:, 4:5]
            new.weight.copy_(torch.cat([w[:, :4], w[:, 5:9], -hole], dim=1))
            new.bias.add_(hole.sum(dim=(1, 2, 3)))
        else:
            new.weight.zero_()
            new.weight[:, :4] = w
    unet.conv_in = new
    unet.register_to_config(in_channels=IN_CHANNELS)


def add_input_channels(unet: Any, extra: int) -> None:
    """``extra`` more input channels after the 9, zero-initialised, so training starts from exactly the
    9-channel model (how Paint-by-Sketch's ``scripts/modify_checkpoints.py`` widens Paint-by-Example)."""
    conv = unet.conv_in
    new = nn.Conv2d(conv.in_channels + extra, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :conv.in_channels] = conv.weight
        new.bias.copy_(conv.bias)
    unet.conv_in = new.to(conv.weight.dtype)
    unet.register_to_config(in_channels=conv.in_channels + extra)


def build_model(init: str, init_kind: str, image_encoder: str, seed: int, extra_channels: int = 0
                ) -> tuple[PbETrainModel, Any, dict, Path]:
    """(trainable model, frozen VAE, noise scheduler config, init directory).

    ``extra_channels``: input channels after the 9 (Paint-by-Sketch: 3). A ``pbe`` init may already
    have them (continuing such a run); otherwise they are added, zero-initialised."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from diffcompose.methods.pbe.components import scheduler_config
    from diffcompose.models.hub import quiet_libraries, resolve_name
    from diffcompose.models.tiny import ensure_tiny_model

    quiet_libraries()
    root = resolve_name(init, tiny=ensure_tiny_model, missing="model.init is empty; name the initial model",
                        locate=lambda name: _resolve(name, ["unet/config.json", "vae/config.json",
                                                            "scheduler/scheduler_config.json"], "initial model"))
    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    has_encoder = (root / "image_encoder" / "config.json").is_file()
    kind = init_kind
    if kind == "auto":
        channels = unet.config.in_channels
        kind = "pbe" if has_encoder and channels in (IN_CHANNELS, IN_CHANNELS + extra_channels) else \
            "sd-inpainting" if channels == IN_CHANNELS else "sd"
    expected = {"pbe": IN_CHANNELS, "sd-inpainting": IN_CHANNELS, "sd": 4}[kind]
    if kind == "pbe" and extra_channels and unet.config.in_channels == IN_CHANNELS + extra_channels:
        expected = IN_CHANNELS + extra_channels  # a model that has them already
    if unet.config.in_channels != expected:
        raise InputError(f"init {init}: a {kind} UNet takes {expected} input channels, this one "
                         f"{unet.config.in_channels}")
    log.info("initialising from %s (%s)", root, kind)
    torch.manual_seed(seed)
    if kind == "pbe":
        encoder = ExemplarEncoder.from_pretrained(root / "image_encoder")
    else:
        widen_conv_in(unet, kind)
        cross = unet.config.cross_attention_dim
        if image_encoder == "tiny":
            from diffcompose.methods.pbe.tiny import tiny_vision_config

            encoder = ExemplarEncoder(CLIPVisionConfig(**tiny_vision_config(projection_dim=cross)))
        else:
            path = _resolve(image_encoder, ["config.json"], "CLIP vision model")
            clip = CLIPVisionModel.from_pretrained(str(path))
            config = clip.config
            config.projection_dim = cross
            encoder = ExemplarEncoder(config)
            encoder.model.load_state_dict(clip.state_dict())
    if unet.config.in_channels < IN_CHANNELS + extra_channels:
        add_input_channels(unet, IN_CHANNELS + extra_channels - unet.config.in_channels)
    vae = AutoencoderKL.from_pretrained(str(root / "vae")).requires_grad_(False).eval()
    return PbETrainModel(unet, encoder), vae, scheduler_config(root), root
