"""Attention edits against explicit reference computations (tiny modules, CPU)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import torch.nn.functional as F  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402

from diffcompose.attention import AttentionEdit, EditedSelfAttention, edit_attention, self_attention_layers  # noqa: E402
from diffcompose.models.tiny import tiny_unet_config  # noqa: E402


def _attn(dim: int = 16, heads: int = 2) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=dim, heads=heads, dim_head=dim // heads).eval()


def _reference(attn: Attention, x: torch.Tensor, kv_x: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + (-inf on excluded keys)) V, written out with matrices."""
    b, n, _ = x.shape
    q = attn.to_q(x).view(b, n, attn.heads, -1).transpose(1, 2)
    k = attn.to_k(kv_x).view(b, n, attn.heads, -1).transpose(1, 2)
    v = attn.to_v(kv_x).view(b, n, attn.heads, -1).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if excluded is not None:
        logits = logits.masked_fill(excluded.view(1, 1, 1, n), float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
    return attn.to_out[0](out)


def _masks(h: int, w: int) -> list[torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rect = ((yy >= h // 4) & (yy < h // 2) & (xx >= w // 3) & (xx < w - 2)).float()
    disc = (((yy - h * 0.6) / (h * 0.3)) ** 2 + ((xx - w * 0.4) / (w * 0.25)) ** 2 <= 1).float()
    corner = torch.zeros(h, w)
    corner[: h // 3, : w // 5] = 1
    return [rect, disc, corner]


@pytest.mark.parametrize("latent", [(16, 24), (12, 8), (10, 14)])
@pytest.mark.parametrize("level", [0, 1])
def test_masked_attention_matches_reference(latent: tuple[int, int], level: int) -> None:
    attn = _attn()
    h, w = latent
    for mask in _masks(h, w):
        edit = AttentionEdit("mask", latent, mask=mask, min_layer=0)
        gh, gw = math.ceil(h / 2**level), math.ceil(w / 2**level)
        x = torch.randn(4, gh * gw, 16)
        excluded = edit.excluded(gh * gw)
        assert excluded.any() and not excluded.all()
        # The exclusion is the mask sampled bilinearly at the grid's cell centres, as the public code.
        m = F.interpolate(mask[None, None], size=(gh, gw), mode="bilinear", align_corners=False)[0, 0]
        assert torch.equal(excluded, (m > 0.1).flatten())
        with torch.no_grad():
            got = EditedSelfAttention(AttnProcessor2_0(), 0, edit)(attn, x)
            plain = AttnProcessor2_0()(attn, x)
            ref = _reference(attn, x, x, excluded)
        tgt, src = [1, 3], [0, 2]
        torch.testing.assert_close(got[tgt], ref[tgt], atol=1e-5, rtol=1e-4)
        assert torch.equal(got[src], plain[src]) or torch.allclose(got[src], plain[src], atol=1e-6, rtol=0)
        assert not torch.allclose(got[tgt], plain[tgt], atol=1e-4)


def test_kv_injection_matches_reference() -> None:
    attn = _attn()
    edit = AttentionEdit("inject", (6, 10), min_layer=0)
    x = torch.randn(4, 60, 16)
    with torch.no_grad():
        got = EditedSelfAttention(AttnProcessor2_0(), 0, edit)(attn, x)
        plain = AttnProcessor2_0()(attn, x)
        kv = x[[0, 0, 2, 2]]
        ref = _reference(attn, x, kv, None)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[[0, 2]], plain[[0, 2]], atol=1e-6, rtol=0)


def test_gates_pass_through_unchanged() -> None:
    attn = _attn()
    edit = AttentionEdit("inject", (6, 10), min_layer=3, start_iter=4, t_min=400, t_max=1000)
    x = torch.randn(4, 60, 16)
    proc = EditedSelfAttention(AttnProcessor2_0(), 5, edit)
    with torch.no_grad():
        plain = AttnProcessor2_0()(attn, x)
        assert not edit.update(iteration=2, timestep=900)
        assert torch.equal(proc(attn, x), plain)
        assert not edit.update(iteration=9, timestep=300)
        assert torch.equal(proc(attn, x), plain)
        assert edit.update(iteration=9, timestep=500)
        assert not torch.allclose(proc(attn, x), plain)
        assert torch.equal(EditedSelfAttention(AttnProcessor2_0(), 2, edit)(attn, x), plain)  # layer below range


def test_layer_order_and_clean_removal() -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_unet_config()).eval()
    order = self_attention_layers(unet)
    assert len(order) == 16
    assert order[6].startswith("mid_block") and order[10].startswith("up_blocks.2.attentions.0")
    assert order[13].startswith("up_blocks.3.attentions.0")
    before_procs = dict(unet.attn_processors)
    before_state = {k: v.clone() for k, v in unet.state_dict().items()}
    x = torch.randn(4, 4, 16, 8)
    emb = torch.randn(4, 77, 32)
    mask = torch.zeros(16, 8)
    mask[4:10, 2:6] = 1
    with torch.no_grad():
        ref = unet(x, 500, emb).sample
        with edit_attention(unet, AttentionEdit("mask", (16, 8), mask=mask, min_layer=10)) as names:
            assert len(names) == 6
            edited = unet(x, 500, emb).sample
        after = unet(x, 500, emb).sample
    assert not torch.allclose(edited[[1, 3]], ref[[1, 3]])
    torch.testing.assert_close(edited[[0, 2]], ref[[0, 2]], atol=1e-5, rtol=1e-5)  # source rows untouched
    assert torch.equal(after, ref)
    assert all(unet.attn_processors[k] is p for k, p in before_procs.items())
    assert all(torch.equal(before_state[k], v) for k, v in unet.state_dict().items())
