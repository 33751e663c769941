"""Tests that pin FreeCompose's method, not only its plumbing: each part of the method, removed,
makes one of these fail (the DDS step, weight map, scale, perceptual terms with LPIPS weights,
masked attention and its start, K/V injection and its gate, adapter rows, final timesteps,
binary condition maps, the default prompt, the free band of the paste-back)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose import EngineManager  # noqa: E402
from diffcompose.attention import AttentionEdit, EditedSelfAttention  # noqa: E402
from diffcompose.inputs import Box  # noqa: E402
from diffcompose.methods.freecompose import dds  # noqa: E402
from diffcompose.methods.freecompose import engine as fc  # noqa: E402
from diffcompose.methods.freecompose.perceptual import MaskedPerceptual  # noqa: E402
from diffcompose.models.lpips import find_heads, load_heads  # noqa: E402
from diffcompose.progress import Progress  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402

H, W = 96, 128


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    return EngineManager().get("freecompose", model="tiny", device="cpu")


def _inputs():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), bool)
    mask[30:70, 40:90] = True
    edges = np.zeros((H, W), np.float32)
    edges[20:80, 30] = 1.0
    moved = np.roll(edges, 20, axis=1)
    return img, mask, edges, moved


class UNetSpy:
    """Records, per UNet call (one per DDS iteration), the timestep and the state of every attention edit."""

    def __init__(self, unet) -> None:
        self.unet, self.calls = unet, []
        self.original = unet.forward

    def __enter__(self):
        def forward(sample, timestep, *args, **kwargs):
            procs = [p for p in self.unet.attn_processors.values() if isinstance(p, EditedSelfAttention)]
            self.calls.append(SimpleNamespace(
                t=int(timestep), modes={p.edit.mode for p in procs}, layers=sorted(p.layer for p in procs),
                active=[p.layer for p in procs if p.edit.applies_to(p.layer)],
                residuals=kwargs.get("down_intrablock_additional_residuals")))
            return self.original(sample, timestep, *args, **kwargs)

        self.unet.forward = forward
        return self

    def __exit__(self, *exc) -> None:
        del self.unet.forward


# ----------------------------------------------------------------------------- the DDS step

def _fake_sd(prediction: str = "epsilon"):
    def unet(x, t, encoder_hidden_states=None, down_intrablock_additional_residuals=None):
        return SimpleNamespace(sample=torch.sin(3 * x + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)))

    sched = SimpleNamespace(alphas_cumprod=torch.linspace(0.999, 0.01, 1000))
    return SimpleNamespace(unet=unet, dtype=torch.float32, prediction_type=prediction, scheduler=sched)


def test_one_sgd_step_is_lr_times_scale_times_weight_times_delta() -> None:
    """z_1 = z_0 - lr * (20000 / latent pixels) * weight * (e_tgt - e_src), on a 6x10 latent."""
    sd = _fake_sd()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 6, 10, generator=gen)
    emb = torch.tensor([0.1, 0.1, 0.7, 1.3]).view(4, 1, 1).expand(4, 2, 3).contiguous()
    weight = torch.rand(1, 1, 6, 10, generator=gen) + 0.2
    cfg = dds.DDSConfig(iterations=1, lr=0.05, t_range=lambda i: (321, 321), weight_map=weight)
    out = dds.optimise(sd, z, dds.Branches(emb), cfg, torch.Generator().manual_seed(5), progress=Progress("t", 1))
    # the same draws the loop makes: t from [321, 321], then the noise
    g = torch.Generator().manual_seed(5)
    t = int(torch.randint(321, 322, (1,), generator=g))
    noise = torch.randn(z.shape, generator=g)
    delta = dds.dds_gradient(sd, z, z, t, noise, dds.Branches(emb), 7.5, sd.scheduler.alphas_cumprod)
    want = z - 0.05 * (20000 / 60) * weight * delta
    assert torch.count_nonzero(delta) > 0
    torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-5)


def test_perceptual_term_alone_moves_the_latent_toward_its_reference(engine) -> None:
    """Identical prompts: the DDS gradient is zero, so only the LPIPS term can move the latent."""
    sd = engine.sd
    img, mask, _, _ = _inputs()
    vgg, heads = engine._perceptual(None)
    target = np.clip(img.astype(int) + 60, 0, 255).astype(np.uint8)
    z = dds.encode_image(sd, img)
    loss = MaskedPerceptual(vgg, heads, engine._image01(target), torch.ones(1, 1, H, W))
    emb = dds.encode_prompts(sd, ["", "", "same", "same"])
    cfg = dds.DDSConfig(iterations=2, lr=0.01)
    out = dds.optimise(sd, z, dds.Branches(emb), cfg, torch.Generator().manual_seed(0),
                       progress=Progress("t", 2), losses=[(1.0, loss)], decode=engine._decode32)
    with torch.no_grad():
        before, after = float(loss(engine._decode32(z))), float(loss(engine._decode32(out)))
    assert not torch.equal(out, z) and after < before


def test_lpips_weights_are_the_learned_ones_and_weigh_the_loss() -> None:
    pytest.importorskip("torchmetrics")  # the package that ships them (a diffusion-extra dependency)
    heads = load_heads(find_heads(), (64, 128, 256, 512, 512))
    assert [round(float(h.sum()), 1) for h in heads] == [6.9, 8.9, 17.5, 51.5, 47.0]
    assert all(float(h.min()) >= 0 for h in heads)


def test_perceptual_loss_scales_with_its_channel_weights(engine) -> None:
    vgg, heads = engine._perceptual(None)
    ref, x = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    one = MaskedPerceptual(vgg, heads, ref, torch.ones(1, 1, 64, 64))(x)
    three = MaskedPerceptual(vgg, [3 * h for h in heads], ref, torch.ones(1, 1, 64, 64))(x)
    torch.testing.assert_close(three, 3 * one, rtol=1e-4, atol=1e-7)


def test_perceptual_gradient_is_float32_even_for_a_bf16_model() -> None:
    eng = EngineManager().get("freecompose", model="tiny", device="cpu", dtype="bfloat16")
    z = torch.randn(1, 4, 8, 8, requires_grad=True)
    image = eng._decode32(z)
    image.mean().backward()
    assert image.dtype == torch.float32 and z.grad.dtype == torch.float32
    assert next(eng._extras[("vae32", "decoder")].parameters()).dtype == torch.float32
    assert next(eng.sd.vae.parameters()).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- what each task sets up

def test_removal_weight_map_losses_and_masked_attention(engine, monkeypatch) -> None:
    img, mask, _, _ = _inputs()
    seen = {}
    real = dds.optimise

    def spy(sd, z_src, branches, cfg, generator, **kw):
        seen.update(cfg=cfg, **kw)
        return real(sd, z_src, branches, cfg, generator, **kw)

    monkeypatch.setattr(dds, "optimise", spy)
    with UNetSpy(engine.sd.unet) as unet:
        engine.remove(img, mask, iterations=6, attn_start=3, resolution=64, background_weight=0.2,
                      perceptual_weight=0.3, band=0)
    w = seen["cfg"].weight_map[0, 0]
    assert float(w.max()) == pytest.approx(1.0) and float(w.min()) == pytest.approx(0.2)  # M + 0.2 (1 - M)
    assert [weight for weight, _ in seen["losses"]] == [0.3]
    # masked attention installed on the decoder layers from 10, active from iteration 3
    assert all(c.modes == {"mask"} and c.layers == list(range(10, 16)) for c in unet.calls)
    assert [bool(c.active) for c in unet.calls] == [False] * 3 + [True] * 3


@pytest.mark.slow
def test_compose_injection_its_gate_final_timesteps_and_adapter(engine, caplog) -> None:
    import logging

    img, mask, edges, moved = _inputs()
    with UNetSpy(engine.sd.unet) as unet, caplog.at_level(logging.INFO, logger="diffcompose"):
        engine.compose(img, moved, condition=edges, condition_type="canny", iterations=40, final_iters=8,
                       final_t_max=148, inject_t_min=400, resolution=64, band=0)
    calls = unet.calls
    assert len(calls) == 40
    assert all(c.modes == {"inject"} and c.residuals is not None for c in calls)
    assert all(50 <= c.t <= 148 for c in calls[-8:]) and any(c.t > 148 for c in calls[:-8])
    assert all(bool(c.active) == (c.t > 400) for c in calls) and any(c.active for c in calls)
    assert "no --prompt given" in caplog.text  # the default prompt, so guidance has text to follow


def test_compose_injects_at_every_iteration_by_default(engine) -> None:
    img, mask, edges, moved = _inputs()
    with UNetSpy(engine.sd.unet) as unet:
        engine.compose(img, moved, condition=edges, prompt="A toy.", iterations=6, final_iters=2, resolution=64)
    assert all(c.active for c in unet.calls)


def test_adapter_rows_are_orig_edit_orig_edit(engine) -> None:
    adapter = engine._adapter(engine.options("compose"), "canny")
    a = np.zeros((64, 64), np.float32)
    a[10:50, 20] = 1
    b = np.roll(a, 17, axis=1)
    feats = engine._adapter_features(adapter, [a, b], 0.9)
    with torch.no_grad():
        fa = [f * 0.9 for f in adapter(torch.from_numpy(a)[None, None])]
        fb = [f * 0.9 for f in adapter(torch.from_numpy(b)[None, None])]
    for f, x, y in zip(feats, fa, fb):
        assert not torch.allclose(x, y)
        for row, want in ((0, x), (1, y), (2, x), (3, y)):
            torch.testing.assert_close(f[row:row + 1], want)


def test_condition_maps_are_binarised_at_the_working_size(engine, monkeypatch) -> None:
    img, mask, edges, moved = _inputs()
    maps = []
    real = fc.FreeComposeEngine._adapter_features
    monkeypatch.setattr(fc.FreeComposeEngine, "_adapter_features",
                        lambda self, adapter, m, scale: (maps.extend(m), real(self, adapter, m, scale))[1])
    soft = np.clip(edges * 0.3 + moved * 0.9, 0, 1)  # 0.3 is below the public 100/255, 0.9 above
    engine.compose(img, soft, condition=soft, prompt="A toy.", iterations=2, final_iters=0, resolution=64)
    # the working size keeps the photo's aspect (73x55 here), mirrored up to the UNet's stride of 64
    win = engine.window_policy("compose", engine.options("compose", {"resolution": 64})).plan((W, H), Box(0, 0, W, H))
    assert win.content == (73, 55) and win.work_size == (128, 64)
    for m in maps:
        assert set(np.unique(m)) <= {0.0, 1.0} and m.shape == (64, 128)
    assert maps[1].sum() > 0


def _public_mask_list(mask: torch.Tensor, sizes=(64, 32, 16, 8), threshold: float = 0.1) -> dict:
    """What the public editor excludes per square token grid (its mask sampling, rewritten here):
    the pixel mask resized bilinearly (half-pixel centres) to each grid, above the threshold."""
    m = mask.float()[None, None]
    return {i * i: (torch.nn.functional.interpolate(m, size=(i, i), mode="bilinear", align_corners=False)
                    .reshape(-1) > threshold) for i in sizes}


def _stripes_and_shapes() -> list[torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    masks = []
    for x0, width in ((100, 12), (96, 16), (7, 1), (8, 1), (250, 3), (300, 40)):
        m = torch.zeros(512, 512)
        m[:, x0:x0 + width] = 1
        masks.append(m)
    masks.append((((yy - 260) / 90.0) ** 2 + ((xx - 200) / 140.0) ** 2 <= 1).float())  # a disc
    masks.append(((yy - xx).abs() <= 2).float())  # a thin diagonal
    blobs = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    masks.append((torch.nn.functional.interpolate(blobs, size=(512, 512), mode="bilinear")[0, 0] > 0.7).float())
    return masks


def test_mask_sampling_on_token_grids_is_the_public_one() -> None:
    """Every token grid of a 512-px window excludes exactly the tokens the public editor excludes."""
    for mask in _stripes_and_shapes():
        edit = AttentionEdit("mask", (64, 64), mask=mask)
        for tokens, want in _public_mask_list(mask).items():
            if want.any() and not want.all():
                assert torch.equal(edit.excluded(tokens), want), tokens
            else:  # nothing (or everything) excluded: plain attention
                assert not edit.excluded(tokens).any()


def test_thin_stripe_excludes_the_tokens_whose_centre_it_covers() -> None:
    """A 12-px stripe at x = 100..111 of 512 px: the 32-grid's cells are 16 px wide, the 7th is centred
    at x = 103.5 (between pixels 103 and 104), inside the stripe, so its whole column (32 tokens) goes."""
    mask = torch.zeros(512, 512)
    mask[:, 100:112] = 1
    edit = AttentionEdit("mask", (64, 64), mask=mask)
    excluded = edit.excluded(32 * 32).view(32, 32)
    assert int(excluded.sum()) == 32 and bool(excluded[:, 6].all())
    assert int(_public_mask_list(mask)[32 * 32].sum()) == 32
    # (nearest sampling reads pixel 16 i, here 96 and 112, both outside: it excluded none). A stripe at
    # x = 113..117 lies between the centres 103.5 and 119.5: no token
    mask = torch.zeros(512, 512)
    mask[:, 113:118] = 1
    assert not AttentionEdit("mask", (64, 64), mask=mask).excluded(32 * 32).any()


# ----------------------------------------------------------------------------- paste-back

def test_free_band_around_the_object_then_the_original(engine) -> None:
    img, mask, _, _ = _inputs()
    band = engine.paste_band("remove", engine.options("remove", {"band": 0.5}), mask)
    assert band == 20  # half the object's 40-px height
    out = np.asarray(engine.remove(img, mask, iterations=2, resolution=64, band=0.5))
    ring = changed_region(mask, band) & ~mask
    outside = ~changed_region(mask, band + default_margin(img.shape))
    assert np.array_equal(out[outside], img[outside])
    assert (out[ring] != img[ring]).any(axis=-1).mean() > 0.5  # the band takes the engine's pixels
    strict = np.asarray(engine.remove(img, mask, iterations=2, resolution=64, band=0, margin=0))
    assert np.array_equal(strict[~mask], img[~mask])
