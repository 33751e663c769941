"""Self-attention edits for a UNet running the 4-row DDS batch ``[u_src, u_tgt, c_src, c_tgt]``.

* ``mask``: the target rows attend only to keys/values outside a region (object removal);
* ``inject``: the target rows use the source rows' keys/values (semantic composition).

:class:`AttentionEdit` holds the configuration and the per-iteration gate;
:func:`edit_attention` installs diffusers-style processors on the chosen ``attn1`` layers
for the duration of a ``with`` block and restores the original processor objects after.
"""

from diffcompose.attention.controller import AttentionEdit
from diffcompose.attention.processors import EditedSelfAttention, edit_attention, self_attention_layers

__all__ = ["AttentionEdit", "EditedSelfAttention", "edit_attention", "self_attention_layers"]
