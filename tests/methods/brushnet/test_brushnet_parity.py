"""BrushNet against the public code: the branch, the residual placement, the pipeline's denoising.

Two kinds of reference:

* **the public code itself** (``brushnet_public``: TencentARC's fork files and PowerPaint's
  ``BrushNet_CA.py`` loaded from the fetched mirrors; skipped with the reason when absent):
  tiny random models built from its own module definitions, our weights loaded into them
  strictly, the same inputs and seeds;
* **written-out references** (always run, CI included): the public computation restated here on
  diffusers' own block ``forward`` (hooks add the residuals where the fork's UNet adds them and
  collect the branch's up features where the fork returns them), and the public pipeline's
  preparation and loop restated step by step.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.methods.brushnet import model as M  # noqa: E402
from diffcompose.methods.brushnet.tiny import build_tiny_brushnet  # noqa: E402
from diffcompose.progress import RunContext  # noqa: E402

import brushnet_public  # noqa: E402

# the public fork passes diffusers' since-deprecated ``scale`` argument to its blocks
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def fork(tmp_path_factory):
    try:
        return brushnet_public.load_brushnet_fork(tmp_path_factory.mktemp("brushnet_fork"))
    except LookupError as exc:
        pytest.skip(f"public BrushNet code unavailable: {exc}")


@pytest.fixture(scope="module")
def powerpaint(tmp_path_factory):
    try:
        return brushnet_public.load_powerpaint_ca(tmp_path_factory.mktemp("powerpaint_ca"))
    except LookupError as exc:
        pytest.skip(f"public PowerPaint code unavailable: {exc}")


@pytest.fixture(scope="module")
def engine():
    from diffcompose.methods.brushnet.engine import BrushNetEngine

    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        e = BrushNetEngine(model="tiny", device="cpu", dtype="float32").load()
        e.base(e.options("inpaint", {}))
    return e


def _inputs(seed: int = 0, n: int = 2, side: int = 16, text_dim: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, side, side, generator=g)
    ctx = torch.randn(n, 77, text_dim, generator=g)
    hole = (torch.rand(1, 1, side, side, generator=g) > 0.5).float()
    cond = M.brushnet_conditioning(torch.randn(n, 4, side, side, generator=g), hole)
    return x, ctx, cond


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


# ----------------------------------------------------------------------------- written-out references

def _layer_modules(block):
    """The modules after which the fork adds a residual / returns an up feature, in order."""
    layers = list(block.attentions) if getattr(block, "attentions", None) else list(block.resnets)
    samplers = getattr(block, "downsamplers", None) or getattr(block, "upsamplers", None)
    return layers + ([samplers[-1]] if samplers is not None else [])


def _add_to_output(values):
    def hook(module, args, output):
        value = values.pop(0)
        if isinstance(output, tuple):
            return (output[0] + value,) + tuple(output[1:])
        return output + value
    return hook


def reference_unet(unet, x, t, ctx, down, mid, up):
    """The fork's UNet written out on diffusers' stock ``UNet2DConditionModel.forward``: residual 0
    joins the first down block's *input* (so the conv_in skip kept before it does not carry it),
    the others the output of every down layer / downsampler, the mid block, every up layer /
    upsampler."""
    down, up = list(down), list(up)
    handles = [unet.down_blocks[0].register_forward_pre_hook(
        lambda m, args, kwargs: (args, {**kwargs, "hidden_states": kwargs["hidden_states"] + down.pop(0)}),
        with_kwargs=True)]
    for block in unet.down_blocks:
        handles += [m.register_forward_hook(_add_to_output(down)) for m in _layer_modules(block)]
    handles.append(unet.mid_block.register_forward_hook(_add_to_output([mid])))
    for block in unet.up_blocks:
        handles += [m.register_forward_hook(_add_to_output(up)) for m in _layer_modules(block)]
    try:
        out = unet(x, t, encoder_hidden_states=ctx).sample
    finally:
        for h in handles:
            h.remove()
    assert not down and not up, "not every residual was used"
    return out


def reference_branch(branch, x, t, ctx, cond, scale):
    """The public branch's forward written out on diffusers' stock blocks: [x, cond] through
    conv_in_condition, the down blocks (their skips), the mid block, the up blocks reading the
    branch's own skips; every feature through its zero conv, times ``scale``."""
    emb = branch.time_embedding(branch.time_proj(t.reshape(-1).expand(x.shape[0])).to(x.dtype))
    h = branch.conv_in_condition(torch.cat([x, cond], 1))
    skips = [h]
    for block in branch.down_blocks:
        kw = {"encoder_hidden_states": ctx} if getattr(block, "has_cross_attention", False) else {}
        h, res = block(h, emb, **kw)
        skips.extend(res)
    down = [conv(f) * scale for conv, f in zip(branch.brushnet_down_blocks, skips)]
    kw = {"encoder_hidden_states": ctx} if getattr(branch.mid_block, "has_cross_attention", False) else {}
    h = branch.mid_block(h, emb, **kw)
    mid = branch.brushnet_mid_block(h) * scale
    feats: list = []
    for i, block in enumerate(branch.up_blocks):
        k = len(block.resnets)
        res, skips = tuple(skips[-k:]), skips[:-k]
        handles = [m.register_forward_hook(lambda mod, a, out: feats.append(out[0] if isinstance(out, tuple) else out))
                   for m in _layer_modules(block)]
        kw = {"encoder_hidden_states": ctx} if getattr(block, "has_cross_attention", False) else {}
        size = skips[-1].shape[2:] if i < len(branch.up_blocks) - 1 else None
        h = block(h, res, emb, upsample_size=size, **kw)
        for hd in handles:
            hd.remove()
    up = [conv(f) * scale for conv, f in zip(branch.brushnet_up_blocks, feats)]
    return down, mid, up


@pytest.mark.parametrize("cross_attention", [False, True])
def test_branch_and_residual_placement_match_the_written_out_reference(engine, cross_attention):
    """Ours == the public computation restated on diffusers' stock forwards (runs in CI): every zero conv,
    the first residual's place before the conv_in skip, the up path fed too."""
    unet = engine.sd.unet
    branch = build_tiny_brushnet(dict(unet.config), cross_attention=cross_attention, seed=3)
    x, ctx, cond = _inputs(1)
    t = torch.tensor(637)
    with torch.no_grad():
        res = branch(x, t, ctx, cond, conditioning_scale=0.7)
        down, mid, up = reference_branch(branch, x, t, ctx, cond, 0.7)
        assert (len(res.down), len(res.up)) == (len(down), len(up)) == (12, 15)
        for a, b in zip(res.down + [res.mid] + res.up, down + [mid] + up):
            assert b.abs().max() > 1e-4
            _close(a, b)
        ours = M.unet_with_residuals(unet, x, t, ctx, res)
        ref = reference_unet(unet, x, t, ctx, down, mid, up)
        plain = unet(x, t, encoder_hidden_states=ctx).sample
    _close(ours, ref)
    assert (ours - plain).abs().max() > 1e-3  # the residuals matter
    assert branch.has_cross_attention is cross_attention


def test_a_fresh_branch_adds_nothing(engine):
    """``from_unet`` with the base's weights: zero convs are zero, so the prediction is the base's, bit for bit."""
    unet = engine.sd.unet
    branch = M.BrushNetModel.from_unet(unet.config, unet=unet)
    x, ctx, cond = _inputs(2)
    with torch.no_grad():
        assert torch.equal(M.unet_with_residuals(unet, x, 10, ctx, branch(x, 10, ctx, cond)),
                           unet(x, 10, encoder_hidden_states=ctx).sample)
    assert all(float(p.detach().abs().max()) == 0 for c in M.zero_convs(branch) for p in c.parameters())
    lat = unet.conv_in.weight.shape[1]
    assert torch.equal(branch.conv_in_condition.weight[:, lat:2 * lat], unet.conv_in.weight)
    mask_channel = branch.conv_in_condition.weight[:, 2 * lat:].detach()
    assert float(mask_channel.abs().max()) == 0  # the mask channel starts at zero


def test_conditioning_is_masked_latent_then_keep_mask():
    """BrushNet's 5 channels: the masked-image latent first, then the mask as 1 = keep (the public
    pipeline's ``sum < 0`` of its normalised mask image: black = keep)."""
    z = torch.randn(1, 4, 3, 3)
    hole = torch.tensor([[[[1.0, 0, 0], [0, 1, 0], [0, 0, 0]]]])
    cond = M.brushnet_conditioning(z, hole)
    assert torch.equal(cond[:, :4], z)
    assert torch.equal(cond[:, 4:], 1 - hole)


# ----------------------------------------------------------------------------- the public code itself

def _public_unet(fork, unet):
    pub = fork.UNet2DConditionModel.from_config(dict(unet.config))
    pub.load_state_dict(unet.state_dict(), strict=True)
    return pub.eval()


def _public_branch(cls, ours, **extra):
    pub = cls.from_config({**dict(ours.config), **extra})
    pub.load_state_dict(ours.state_dict(), strict=True)  # our keys are the public ones, one for one
    return pub.eval()


@pytest.mark.parametrize("cross_attention", [False, True])
def test_branch_and_unet_match_the_public_fork(fork, engine, cross_attention):
    """TencentARC's ``BrushNetModel`` and forked UNet, our weights loaded strictly: same residuals, same noise."""
    unet = engine.sd.unet
    ours = build_tiny_brushnet(dict(unet.config), cross_attention=cross_attention, seed=5)
    pub_branch, pub_unet = _public_branch(fork.BrushNetModel, ours), _public_unet(fork, unet)
    x, ctx, cond = _inputs(4)
    t = torch.tensor(321)
    with torch.no_grad():
        res = ours(x, t, ctx, cond, conditioning_scale=0.8)
        down, mid, up = pub_branch(x, t, encoder_hidden_states=ctx, brushnet_cond=cond, conditioning_scale=0.8,
                                   return_dict=False)
        for a, b in zip(res.down + [res.mid] + res.up, list(down) + [mid] + list(up)):
            _close(a, b)
        eps = pub_unet(x, t, encoder_hidden_states=ctx, down_block_add_samples=list(down),
                       mid_block_add_sample=mid, up_block_add_samples=list(up)).sample
        _close(M.unet_with_residuals(unet, x, t, ctx, res), eps)


def test_powerpaint_brushnet_ca_is_the_cross_attention_variant(powerpaint, engine):
    """PowerPaint v2's ``BrushNet_CA.from_unet`` and ``BrushNetModel.from_unet(cross_attention=True)``:
    the same parameters (names and shapes) and the same residuals."""
    unet = engine.sd.unet
    pub_unet = powerpaint.UNet2DConditionModel.from_config(dict(unet.config))
    pub_unet.load_state_dict(unet.state_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        pub = powerpaint.BrushNetModel.from_unet(pub_unet).eval()
    M.randomize_zero_convs(pub, 8)
    ours = M.BrushNetModel.from_unet(unet.config, cross_attention=True).eval()
    ours.load_state_dict(pub.state_dict(), strict=True)
    assert ours.has_cross_attention
    x, ctx, cond = _inputs(6)
    t = torch.tensor(55)
    with torch.no_grad():
        res = ours(x, t, ctx, cond, conditioning_scale=1.3)
        down, mid, up = pub(x, t, encoder_hidden_states=ctx, brushnet_cond=cond, conditioning_scale=1.3,
                            return_dict=False)
    for a, b in zip(res.down + [res.mid] + res.up, list(down) + [mid] + list(up)):
        _close(a, b)


def _photo(side: int = 64):
    from skimage import data

    img = data.astronaut()[100:100 + 4 * side:4, 150:150 + 4 * side:4].copy()
    mask = np.zeros((side, side), bool)
    mask[side // 4: side // 4 + side // 2, side // 3: side // 3 + side // 3] = True
    return img, mask


def _ours(engine, img, mask, seed, **opts):
    options = engine.options("inpaint", {"steps": 3, "scheduler": "ddim", "resolution": 64, **opts})
    return engine._inpaint(image=img, mask=mask, prompt="a red ball", negative_prompt="", options=options,
                           ctx=RunContext(seed))


@pytest.mark.parametrize("cross_attention,guidance", [(False, 5.0), (False, 1.0), (True, 5.0)])
def test_public_pipeline_denoising_matches(fork, engine, monkeypatch, cross_attention, guidance):
    """``StableDiffusionBrushNetPipeline`` (the fork's, on the same tiny weights) and ours on the same seed:
    the same image within 1/255. The public pipeline draws the masked image's VAE posterior sample from the
    global RNG; both take the posterior mean here (ours always does: see the engine's docstring)."""
    from diffusers import DDIMScheduler
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from PIL import Image

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    sd = engine.sd
    saved = engine.branch
    engine.branch = build_tiny_brushnet(dict(sd.unet.config), cross_attention=cross_attention, seed=9)
    try:
        img, mask = _photo()
        ours = _ours(engine, img, mask, seed=11, guidance_scale=guidance, conditioning_scale=0.9, blend=False)[0]
        pipe = fork.StableDiffusionBrushNetPipeline(
            vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=_public_unet(fork, sd.unet),
            brushnet=_public_branch(fork.BrushNetModel, engine.branch),
            scheduler=DDIMScheduler.from_config(sd.scheduler.config), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        # the example script's inputs: the hole painted black, the mask white on the hole
        masked = Image.fromarray(img * (~mask)[:, :, None])
        mask_rgb = Image.fromarray(np.repeat(mask[:, :, None].astype(np.uint8) * 255, 3, axis=2))
        out = pipe("a red ball", masked, mask_rgb, num_inference_steps=3, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(11), brushnet_conditioning_scale=0.9,
                   output_type="np").images[0]
    finally:
        engine.branch = saved
    public = (out * 255).round().astype(np.uint8)
    diff = np.abs(public.astype(int) - ours.astype(int))
    assert diff.max() <= 1, diff.max()
    assert np.abs(public.astype(int) - img.astype(int))[mask].mean() > 5  # the hole was really painted
