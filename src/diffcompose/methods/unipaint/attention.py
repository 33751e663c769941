"""Uni-paint's masked attention control, on every attention layer of the UNet's transformer blocks.

Applied to the attention *probabilities* (after the softmax, not renormalised), with the region
``m`` (1 = to fill) resampled to each layer's token grid (bilinear, half-pixel centres, no
antialiasing: a soft map at the region's edge):

* self-attention: ``A[i, j] *= 1 - (1 - m_i) * m_j``: a query outside the region stops reading the
  keys inside it (the known pixels are not pulled towards what is being made);
* cross-attention: every text token but the first (BOS) is multiplied by ``m_i``: only the region
  reads the prompt; outside it only the start token's share is left.

The public code applies it on both halves of the guided batch, at every step, and only when it
samples with guidance (its unguided call passes no mask), never while fine-tuning.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F


@dataclass
class RegionMasks:
    """The region (float ``(H, W)`` in 0..1 at the working size) and the latent grid it is resampled from."""

    region: torch.Tensor
    latent_size: tuple[int, int]
    active: bool = True
    _cache: dict = field(default_factory=dict, repr=False)

    def grid(self, tokens: int) -> tuple[int, int]:
        """The ``(h, w)`` grid of a layer with ``tokens`` tokens (each UNet level halves the latent, rounding up)."""
        h, w = self.latent_size
        while h * w > tokens and (h > 1 or w > 1):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        if h * w != tokens:
            raise ValueError(f"{tokens} tokens match no level of a {self.latent_size} latent")
        return h, w

    def at(self, tokens: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(tokens,)``: the region on the layer's grid, row-major (the public ``F.interpolate`` bilinear)."""
        key = (tokens, str(device), dtype)
        if key not in self._cache:
            m = self.region.to(device=device, dtype=torch.float32)[None, None]
            m = F.interpolate(m, size=self.grid(tokens), mode="bilinear", align_corners=False)
            self._cache[key] = m.flatten().to(dtype)
        return self._cache[key]


def mask_probabilities(probs: torch.Tensor, region: torch.Tensor, cross: bool) -> torch.Tensor:
    """Uni-paint's control on attention probabilities ``(batch*heads, queries, keys)`` (see the module)."""
    if cross:
        return torch.cat([probs[:, :, :1], probs[:, :, 1:] * region[None, :, None]], dim=2)
    outside_reads_inside = (1 - region)[:, None] * region[None, :]
    return probs * (1 - outside_reads_inside)[None]


class MaskedAttention:
    """diffusers attention processor applying :func:`mask_probabilities` while ``masks.active``."""

    def __init__(self, original: Any, masks: RegionMasks) -> None:
        self.original = original
        self.masks = masks

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        if (not self.masks.active or hidden_states.ndim != 3 or attention_mask is not None
                or attn.spatial_norm is not None or attn.group_norm is not None):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        cross = encoder_hidden_states is not None
        context = encoder_hidden_states if cross else hidden_states
        if cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(q, k, None)
        region = self.masks.at(hidden_states.shape[1], probs.device, probs.dtype)
        out = torch.bmm(mask_probabilities(probs, region, cross), v)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def transformer_attention_layers(unet: Any) -> list[str]:
    """Processor names of every self- (``attn1``) and cross-attention (``attn2``) layer of the transformer blocks."""
    return [n for n in unet.attn_processors if ".transformer_blocks." in n and n.endswith(("attn1.processor",
                                                                                          "attn2.processor"))]


@contextmanager
def masked_attention(unet: Any, masks: RegionMasks) -> Iterator[list[str]]:
    """Install :class:`MaskedAttention` on every transformer attention layer for the ``with`` block."""
    original = dict(unet.attn_processors)
    names = transformer_attention_layers(unet)
    unet.set_attn_processor({**original, **{n: MaskedAttention(original[n], masks) for n in names}})
    try:
        yield names
    finally:
        unet.set_attn_processor(original)
