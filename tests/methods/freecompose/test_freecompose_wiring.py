"""What each FreeCompose task hands the DDS optimiser, checked by content, not by presence.

The method tests show each piece is installed; these show it carries the right thing: which
token positions removal's attention excludes, which prompt sits on which branch, where each
perceptual term looks and what it compares with, which condition map feeds which adapter row
and at what scale, which layers are edited, the guidance scale, and the dtype of the decode
the perceptual gradients flow through. Each test here fails under one sabotage of
``methods/freecompose/engine.py`` that the rest of the suite let through
(``benchmarks/mutations.py`` applies them). The inputs are 64x64, the tiny model's working
size, so the window is the whole image and the engine sees exactly the arrays given here.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import torch.nn.functional as F  # noqa: E402

from diffcompose import EngineManager  # noqa: E402
from diffcompose.attention import EditedSelfAttention  # noqa: E402
from diffcompose.methods.freecompose import dds  # noqa: E402
from diffcompose.models import codec  # noqa: E402

S = 64  # working size of the tiny model: the window is the whole image, nothing is resized
FAST = dict(resolution=S, band=0)


class Captured(Exception):
    """Raised by the optimiser spy once it has what the task handed over (no need to run DDS)."""


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    return EngineManager().get("freecompose", model="tiny", device="cpu")


@pytest.fixture
def handed(monkeypatch):
    """``dds.optimise`` replaced by a spy that records its arguments and stops the task."""
    seen: dict = {}

    def spy(sd, z_src, branches, cfg, generator, **kw):
        seen.update(z_src=z_src, branches=branches, cfg=cfg, **kw)
        raise Captured

    monkeypatch.setattr(dds, "optimise", spy)
    return seen


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    mask = np.zeros((S, S), bool)
    mask[16:48, 20:44] = True  # latent cells rows 2..5 whole, columns 2 and 5 half covered
    return img, mask


def _prompts(sd, texts: list[str]) -> torch.Tensor:
    return dds.encode_prompts(sd, texts)


def _run(fn, *args, **kw) -> None:
    with pytest.raises(Captured):
        fn(*args, **kw)


def _flipped(img: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[where] = 255 - out[where]
    return out


# ----------------------------------------------------------------------------- remove

def test_removal_weight_map_is_one_on_the_object(engine, handed) -> None:
    img, mask = _inputs()
    _run(engine.remove, img, mask, background_weight=0.35, **FAST)
    coverage = torch.from_numpy(mask.reshape(8, 8, 8, 8).mean(axis=(1, 3)).astype(np.float32))
    want = coverage + 0.35 * (1 - coverage)
    torch.testing.assert_close(handed["cfg"].weight_map[0, 0], want)
    w = handed["cfg"].weight_map[0, 0]
    assert float(w[3, 3]) == 1.0 and float(w[0, 0]) == pytest.approx(0.35)  # object cell, background cell


def test_removal_prompts_sit_on_their_branches(engine, handed) -> None:
    img, mask = _inputs()
    _run(engine.remove, img, mask, source_prompt="a red ball on the grass", target_prompt="the grass", **FAST)
    emb = handed["branches"].embeddings
    assert torch.equal(emb, _prompts(engine.sd, ["", "", "a red ball on the grass", "the grass"]))
    assert not torch.equal(emb[2], emb[3]) and handed["branches"].adapter_features is None


def test_removal_attention_excludes_the_object_tokens(engine, handed) -> None:
    img, mask = _inputs()
    _run(engine.remove, img, mask, attn_layer=12, attn_start=5, **FAST)
    edit = handed["attention"]
    assert (edit.mode, edit.min_layer, edit.start_iter, edit.latent_size) == ("mask", 12, 5, (8, 8))
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    for side in (8, 4):  # the object's tokens, sampled as the public editor samples the mask
        want = F.interpolate(m, size=(side, side), mode="bilinear", align_corners=False).flatten() > 0.1
        assert want.any() and not want.all()
        assert torch.equal(edit.excluded(side * side), want)
    assert bool(edit.excluded(64).view(8, 8)[3, 3]) and not bool(edit.excluded(64).view(8, 8)[0, 0])


def test_removal_perceptual_term_anchors_the_background_to_the_input(engine, handed) -> None:
    img, mask = _inputs()
    _run(engine.remove, img, mask, perceptual_weight=0.45, **FAST)
    [(weight, loss)] = handed["losses"]
    assert weight == 0.45
    assert float(loss(engine._image01(img))) == 0.0
    assert float(loss(engine._image01(_flipped(img, mask)))) == 0.0  # blind to the object
    assert float(loss(engine._image01(_flipped(img, ~mask)))) > 0.0  # sees the background
    assert handed["decode"] == engine._decode32


# ----------------------------------------------------------------------------- harmonize

def test_harmonize_anchors_background_and_object(engine, handed) -> None:
    img, mask = _inputs()
    _run(engine.harmonize, img, mask, background_weight=0.45, object_weight=0.15,
         source_prompt="a photo", target_prompt="a calm scene", **FAST)
    assert torch.equal(handed["branches"].embeddings, _prompts(engine.sd, ["", "", "a photo", "a calm scene"]))
    (wb, background), (wo, obj) = handed["losses"]
    assert (wb, wo) == (0.45, 0.15)
    x = engine._image01(img)
    assert float(background(x)) == 0.0 and float(obj(x)) == 0.0
    inside, outside = engine._image01(_flipped(img, mask)), engine._image01(_flipped(img, ~mask))
    assert float(background(inside)) == 0.0 and float(background(outside)) > 0.0
    assert float(obj(outside)) == 0.0 and float(obj(inside)) > 0.0
    assert handed["decode"] == engine._decode32


# ----------------------------------------------------------------------------- compose

def _maps() -> tuple[np.ndarray, np.ndarray]:
    original = np.zeros((S, S), np.float32)
    original[10:54, 18] = 1.0
    original[10, 18:40] = 1.0
    edited = np.zeros((S, S), np.float32)
    edited[20:50, 40] = 1.0
    edited[30:33, 10:30] = 1.0
    return original, edited


def test_compose_feeds_each_condition_map_to_its_rows_at_the_adapter_scale(engine, handed) -> None:
    img, _ = _inputs()
    original, edited = _maps()
    _run(engine.compose, img, edited, condition=original, prompt="A toy.", target_prompt="A tall toy.",
         adapter_scale=1.7, attn_layer=13, **FAST)
    branches = handed["branches"]
    assert torch.equal(branches.embeddings, _prompts(engine.sd, ["", "", "A toy.", "A tall toy."]))
    adapter = engine._adapter(engine.options("compose"), "canny")
    with torch.no_grad():
        fo = adapter(torch.from_numpy(original)[None, None])
        fe = adapter(torch.from_numpy(edited)[None, None])
    assert len(branches.adapter_features) == len(fo)
    for got, a, b in zip(branches.adapter_features, fo, fe):
        assert not torch.allclose(a, b)
        for row, want in ((0, a), (1, b), (2, a), (3, b)):  # [u_src, u_tgt, c_src, c_tgt]
            torch.testing.assert_close(got[row:row + 1], 1.7 * want)
    edit = handed["attention"]
    assert (edit.mode, edit.min_layer) == ("inject", 13)


# ----------------------------------------------------------------------------- on real runs

class LayerSpy:
    """Per UNet call: the execution indices of the self-attention layers whose edit applies."""

    def __init__(self, unet) -> None:
        self.unet, self.active = unet, []

    def __enter__(self):
        unet, active = self.unet, self.active
        original = unet.forward

        def forward(*args, **kwargs):
            procs = [p for p in unet.attn_processors.values() if isinstance(p, EditedSelfAttention)]
            active.append(sorted(p.layer for p in procs if p.edit.applies_to(p.layer)))
            return original(*args, **kwargs)

        unet.forward = forward
        return self

    def __exit__(self, *exc) -> None:
        del self.unet.forward


def test_attention_edits_apply_from_the_requested_layer(engine) -> None:
    img, mask = _inputs()
    original, edited = _maps()
    with LayerSpy(engine.sd.unet) as spy:
        engine.remove(img, mask, iterations=2, attn_layer=12, attn_start=0, perceptual_weight=0, **FAST)
    assert spy.active == [[12, 13, 14, 15]] * 2
    with LayerSpy(engine.sd.unet) as spy:
        engine.compose(img, edited, condition=original, prompt="A toy.", iterations=2, final_iters=0,
                       attn_layer=14, **FAST)
    assert spy.active == [[14, 15]] * 2


def test_every_task_guides_with_the_requested_scale(engine, monkeypatch) -> None:
    scales = []
    real = dds.guide
    monkeypatch.setattr(dds, "guide", lambda u, c, scale: (scales.append(scale), real(u, c, scale))[1])
    img, mask = _inputs()
    original, edited = _maps()
    engine.remove(img, mask, iterations=1, guidance=4.5, perceptual_weight=0, **FAST)
    engine.harmonize(img, mask, iterations=1, guidance=3.25, background_weight=0, object_weight=0, **FAST)
    engine.compose(img, edited, condition=original, prompt="A toy.", iterations=1, final_iters=0, guidance=9.0,
                   **FAST)
    assert scales == [4.5, 4.5, 3.25, 3.25, 9.0, 9.0]  # source and target branch, per iteration


def test_perceptual_gradients_flow_through_a_float32_decode_for_a_bf16_model(monkeypatch) -> None:
    """In bf16 most of the perceptual gradient rounds to zero: the decode it flows through must be float32."""
    eng = EngineManager().get("freecompose", model="tiny", device="cpu", dtype="bfloat16")
    decodes = []
    real = codec.decode

    def spy(vae, z, *args, **kw):
        if torch.is_grad_enabled() and z.requires_grad:
            decodes.append((next(vae.parameters()).dtype, z.dtype))
        return real(vae, z, *args, **kw)

    monkeypatch.setattr(codec, "decode", spy)
    img, mask = _inputs()
    eng.remove(img, mask, iterations=1, perceptual_weight=0.3, **FAST)
    eng.harmonize(img, mask, iterations=1, **FAST)
    assert decodes == [(torch.float32, torch.float32)] * 2
