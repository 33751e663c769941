"""The processor that applies an :class:`AttentionEdit`, and its installation on a UNet.

The processor wraps the layer's original processor and calls it unchanged whenever the
edit does not apply (gate closed, layer outside the range), so an idle edit costs nothing
and changes nothing. When it applies it computes Q, K, V once for the whole batch and
runs SDPA; nothing beyond what SDPA does is materialised:

* ``mask``: source rows attend as usual; target rows attend to the gathered background
  keys/values only (exactly the softmax with -inf on the masked key columns);
* ``inject``: keys/values are gathered so each target row sees its source row's (one SDPA
  call for the whole batch).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from diffcompose.attention.controller import AttentionEdit

_NAME = re.compile(r"^(down_blocks|mid_block|up_blocks)(?:\.(\d+))?\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.attn1\.processor$")
_STAGE = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def self_attention_layers(unet: Any) -> list[str]:
    """Processor names of the UNet's self-attention (``attn1``) layers, in execution order."""
    found = []
    for name in unet.attn_processors:
        m = _NAME.match(name)
        if m:
            stage, block, attn, tb = m.groups()
            found.append(((_STAGE[stage], int(block or 0), int(attn), int(tb)), name))
    return [name for _, name in sorted(found)]


class EditedSelfAttention:
    """diffusers attention processor for one ``attn1`` layer at execution index ``layer``."""

    def __init__(self, original: Any, layer: int, edit: AttentionEdit) -> None:
        self.original = original
        self.layer = layer
        self.edit = edit

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        if (not self.edit.applies_to(self.layer) or encoder_hidden_states is not None
                or attention_mask is not None or attn.spatial_norm is not None):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch, tokens, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        heads = attn.heads
        q, k, v = (t.view(batch, tokens, heads, -1).transpose(1, 2) for t in (q, k, v))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = self._attend(q, k, v, tokens)
        out = out.transpose(1, 2).reshape(batch, tokens, -1).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if four_d:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: int) -> torch.Tensor:
        edit = self.edit
        src = torch.tensor(edit.src_rows, device=q.device)
        tgt = torch.tensor(edit.tgt_rows, device=q.device)
        if edit.mode == "inject":
            rows = torch.arange(q.shape[0], device=q.device)
            rows[tgt] = src
            return F.scaled_dot_product_attention(q, k[rows], v[rows])
        keep = edit.keep_index(tokens, q.device)
        if keep is None:  # nothing (or everything) masked at this grid: plain attention
            return F.scaled_dot_product_attention(q, k, v)
        out = torch.empty_like(q)
        others = torch.ones(q.shape[0], dtype=torch.bool, device=q.device)
        others[tgt] = False
        out[others] = F.scaled_dot_product_attention(q[others], k[others], v[others])
        out[tgt] = F.scaled_dot_product_attention(q[tgt], k[tgt][:, :, keep], v[tgt][:, :, keep])
        return out


@contextmanager
def edit_attention(unet: Any, edit: AttentionEdit) -> Iterator[list[str]]:
    """Install the edit on the layers it gates for the ``with`` block; restore the originals after.

    Yields the names of the wrapped layers. Only processors are swapped (no copy of the
    UNet); the original processor objects are put back even on error.
    """
    original = dict(unet.attn_processors)
    order = self_attention_layers(unet)
    wrapped = {}
    for index, name in enumerate(order):
        if edit.min_layer <= index <= edit.max_layer:
            wrapped[name] = EditedSelfAttention(original[name], index, edit)
    if not wrapped:
        raise ValueError(f"no self-attention layer with index in [{edit.min_layer}, {edit.max_layer}]; "
                         f"this UNet has {len(order)}")
    unet.set_attn_processor({**original, **wrapped})
    try:
        yield list(wrapped)
    finally:
        unet.set_attn_processor(original)
