"""The SmartBrush UNet and the tensors around it, shared by the trainer and the engine.

The network is a plain diffusers ``UNet2DConditionModel`` (so a trained model saves and
loads as an ordinary diffusers directory) built from a Stable Diffusion UNet by three
changes, each starting at zero so that the new model's noise prediction at step 0 is the
base model's for every precision level:

* **Precision level** ``s`` (0 = exact mask .. S = box, :mod:`.precision`): a learned
  vector per level, added to the timestep embedding (after the time MLP, before it reaches
  every ResNet block). This is diffusers' ``num_class_embeds`` mechanism: an
  ``nn.Embedding(S + 1, time_embed_dim)`` whose output is added to ``emb``; the call
  passes ``class_labels=s``. All its vectors start at zero.
* **Object-mask head**: ``conv_out`` gets a fifth output channel, the logit of "this
  latent cell belongs to the object" (weights and bias zero: an untrained head says
  ``sigmoid(0) = 0.5``, undecided). The four noise channels keep their weights.
* **Input**: ``[x_t, m, z_masked]`` (9 channels, SD-inpainting's order and polarity: ``m``
  = 1 where to paint, at latent size; ``z_masked`` = latent of the image with the region
  zeroed). From SD-inpainting the input convolution is kept; from SD text-to-image its 5
  new input channels start at zero (the UNet first ignores them: the mask is still visible
  to it through ``x_t``, which is clean outside the region).

The noised input is the paper's ``x_t = noised(x_0) * m + x_0 * (1 - m)`` in latent space,
with ``m`` the coarse mask at latent size (:func:`latent_mask`: a latent cell is in the
region when any of its pixels is).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffcompose.methods.smartbrush.precision import PRECISION_LEVELS
from diffcompose.models.hub import ENGINE_KEY

log = logging.getLogger(__name__)

#: UNet input channels: [x_t (4), mask (1), z_masked (4)].
IN_CHANNELS = 9
#: UNet output channels: noise (4) + object-mask logit (1).
OUT_CHANNELS = 5
#: Index of the mask logit in the UNet's output.
MASK_CHANNEL = 4
#: Marker in ``model_index.json`` of a SmartBrush directory.
INDEX_KEY = "smartbrush"


def model_index(*, init: str, init_kind: str, levels: int = PRECISION_LEVELS) -> dict[str, Any]:
    """``model_index.json`` of a SmartBrush directory: SD's layout, plus what it was made from."""
    return {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False, ENGINE_KEY: "smartbrush",
        INDEX_KEY: {"format": 1, "precision_levels": levels, "init": init, "init_kind": init_kind,
                    "unet_input": "[x_t, mask, z_masked]", "unet_output": "[noise (4), object-mask logit (1)]"},
    }


def is_smartbrush_unet(unet: Any) -> bool:
    cfg = unet.config
    return (cfg.in_channels == IN_CHANNELS and cfg.out_channels == OUT_CHANNELS
            and cfg.get("num_class_embeds") is not None and cfg.get("class_embed_type") is None)


def precision_levels(unet: Any) -> int:
    """S of a SmartBrush UNet (its number of level embeddings minus one)."""
    return int(unet.config.num_class_embeds) - 1


def to_smartbrush(unet: Any, kind: str, levels: int = PRECISION_LEVELS) -> Any:
    """A SmartBrush UNet from a base SD (``kind="sd"``, 4 input channels) or SD-inpainting
    (``"sd-inpainting"``, 9) ``UNet2DConditionModel``: see the module docstring. New weights are
    zeros; every base weight is kept as is (copied into a new model of the widened config, in the base's dtype)."""
    from diffusers import UNet2DConditionModel

    expected = {"sd": 4, "sd-inpainting": IN_CHANNELS}[kind]
    cfg = unet.config
    if cfg.in_channels != expected or cfg.out_channels != 4:
        raise ValueError(f"a {kind} UNet takes {expected} input and 4 output channels, this one "
                         f"{cfg.in_channels} and {cfg.out_channels}")
    if cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
        raise ValueError("the base UNet already has a class embedding")
    new_cfg = {k: v for k, v in dict(cfg).items() if not k.startswith("_")}
    new_cfg.update(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_class_embeds=levels + 1)
    with torch.device("meta"):  # no memory and no random init for weights that are replaced next
        new = UNet2DConditionModel.from_config(new_cfg)
    state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    with torch.no_grad():
        w_in = state["conv_in.weight"]
        if kind == "sd":
            w_in = torch.cat([w_in, w_in.new_zeros(w_in.shape[0], IN_CHANNELS - 4, *w_in.shape[2:])], dim=1)
        state["conv_in.weight"] = w_in
        w_out, b_out = state["conv_out.weight"], state["conv_out.bias"]
        state["conv_out.weight"] = torch.cat([w_out, w_out.new_zeros(1, *w_out.shape[1:])])
        state["conv_out.bias"] = torch.cat([b_out, b_out.new_zeros(1)])
        state["class_embedding.weight"] = w_out.new_zeros(new.class_embedding.weight.shape)
    new.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in list(new.named_parameters()) + list(new.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"weights not initialised: {', '.join(left[:5])}")
    return new


def latent_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """A pixel mask ``(N, 1, H, W)`` in [0, 1] at latent size: 1 where any pixel of the cell is set."""
    return (F.max_pool2d(mask.float(), stride) > 0.5).to(mask.dtype)


def target_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """The exact object mask at latent size as the share of each cell it covers (the DICE target)."""
    return F.avg_pool2d(mask.float(), stride)


def noised_input(z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, m: torch.Tensor, scheduler: Any
                 ) -> torch.Tensor:
    """``x_t = noised(z0) * m + z0 * (1 - m)``: only the region is noised."""
    return scheduler.add_noise(z0, noise, t) * m + z0 * (1 - m)


def unet_input(x_t: torch.Tensor, m: torch.Tensor, z_masked: torch.Tensor) -> torch.Tensor:
    """The 9-channel input ``[x_t, m, z_masked]``."""
    return torch.cat([x_t, m, z_masked], dim=1)


def split_output(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's 5 channels -> (noise prediction (N, 4, h, w), mask logit (N, 1, h, w))."""
    return out[:, :MASK_CHANNEL], out[:, MASK_CHANNEL:MASK_CHANNEL + 1]


def dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - 2|X n Y| / (|X| + |Y|)`` per sample (soft: products and sums of probabilities), averaged.

    ``eps`` (one latent cell) keeps it defined for empty masks.
    """
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dims)
    return (1.0 - (2.0 * inter + eps) / (prob.sum(dims) + target.sum(dims) + eps)).mean()


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Hard DICE of two binary masks (1.0 when both are empty)."""
    a, b = a.bool(), b.bool()
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


class SmartBrushTrainModel(nn.Module):
    """The UNet as the one trainable module (one DDP wrapper, one optimizer)."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, m: torch.Tensor, z_masked: torch.Tensor, t: torch.Tensor,
                context: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.unet(unet_input(x_t, m, z_masked), t, encoder_hidden_states=context, class_labels=level).sample
        return split_output(out)
