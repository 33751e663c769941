"""Uni-paint against the public computation (``ysy31415/unipaint``) on tiny random weights.

Each public step is written out here from the public code (``gradio_demo/demo.py``, the two
notebooks, ``ldm/models/diffusion/ddim.py``, ``ldm/modules/attention.py``,
``ldm/util.py:ExemplarAugmentor``), so the pin holds in CI; where the mirror of the public
repository is present, its own DDIM sampler and attention run too (skipped otherwise):

* the masked fine-tuning loss (known region only, mask nearest + 3x3 dilation, empty prompt) and
  one Adam step of the tuning through the shared loop;
* the exemplar's placement and its placeholder token;
* the masked attention (self: outside queries lose the region's keys; cross: only the region reads
  the text tokens after BOS), on every transformer attention layer, only when guided;
* the stroke start (which step blends the stroke in, which steps read the prompt);
* a short DDIM run with background and stroke blending, guidance and masked attention.
"""

from __future__ import annotations

import contextlib
import copy
import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import mirror
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import torch.nn.functional as F  # noqa: E402

from diffcompose.methods.unipaint import exemplar as ex  # noqa: E402
from diffcompose.methods.unipaint.attention import (  # noqa: E402
    MaskedAttention, RegionMasks, masked_attention, transformer_attention_layers,
)
from diffcompose.methods.unipaint.engine import UnipaintEngine  # noqa: E402
from diffcompose.methods.unipaint.options import UnipaintInpaintOptions, UnipaintPaintOptions  # noqa: E402
from diffcompose.methods.unipaint.sampling import reads_prompt, stroke_blend  # noqa: E402
from diffcompose.methods.unipaint.tuning import (  # noqa: E402
    Denoiser, Exemplar, TuneInputs, latent_hole, place_exemplar, region_box, tune_terms, tune_unet,
)
from diffcompose.models import codec  # noqa: E402
from diffcompose.models.device import make_generator  # noqa: E402
from diffcompose.models.loader import encode_prompts  # noqa: E402
from diffcompose.models.sampling import initial_noise  # noqa: E402
from diffcompose.progress import RunContext  # noqa: E402
from diffcompose.training.loop import _generator  # noqa: E402

MIRROR = mirror("ysy31415/unipaint")
WORD = "x"  # one token in the tiny tokenizer (and the real one)
SIZE = 64  # pixels: an 8x8 latent on the tiny model (token grids 8x8, 4x4, 2x2)


@pytest.fixture(scope="module")
def engine():
    e = UnipaintEngine(device="cpu", model="tiny")
    e.load()
    return e


@pytest.fixture(scope="module")
def case():
    rng = np.random.RandomState(5)
    image = (rng.rand(SIZE, SIZE, 3) * 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[18:50, 14:44] = True
    stroke = np.zeros((SIZE, SIZE, 3), np.uint8)
    stroke[24:40, 20:36] = (30, 60, 220)
    return {"image": image, "mask": mask, "stroke": stroke}


def public_dilation(m: torch.Tensor) -> torch.Tensor:
    """kornia.morphology.dilation with a 3x3 kernel of ones (geodesic border): the max over each 3x3 square."""
    padded = F.pad(m, (1, 1, 1, 1), value=float("-inf"))
    h, w = m.shape[-2:]
    return torch.stack([padded[..., dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]).amax(0)


def public_q_sample(z0, t, noise, acp):
    return acp[t].sqrt().view(-1, 1, 1, 1) * z0 + (1 - acp[t]).sqrt().view(-1, 1, 1, 1) * noise


def inputs_for(engine, case, exemplar=None) -> TuneInputs:
    sd = engine.sd
    m = codec.mask_to_tensor(case["mask"])
    z_known = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    return TuneInputs(z_known, 1 - latent_hole(m, (8, 8)), encode_prompts(sd, [""]).float(),
                      sd.scheduler.alphas_cumprod.float(), lambda p, g: codec.encode(sd.vae, p, g), exemplar)


# ----------------------------------------------------------------------------- masked fine-tuning

def test_the_tuning_loss_counts_only_the_known_region_as_the_public_loss(engine, case) -> None:
    inputs = inputs_for(engine, case)
    model = Denoiser(engine.sd.unet)
    got = tune_terms(model, inputs, torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(11)
    acp = engine.sd.scheduler.alphas_cumprod.float()
    t = torch.randint(1000, (1,), generator=gen)
    noise = torch.randn(1, 4, 8, 8, generator=gen)
    z_m = public_dilation(F.interpolate(codec.mask_to_tensor(case["mask"]), size=(8, 8)))
    pred = engine.sd.unet(public_q_sample(inputs.z_known, t, noise, acp), t, encoder_hidden_states=inputs.null_context
                          ).sample
    expected = F.mse_loss(pred * (1 - z_m), noise * (1 - z_m))
    assert 0 < z_m.mean() < 1
    assert torch.allclose(got[0], expected, rtol=1e-6, atol=1e-7) and float(got[2]) == 0.0
    # the region carries no loss: a prediction changed only there leaves it as it is
    inside = F.mse_loss((pred + 5 * z_m) * (1 - z_m), noise * (1 - z_m))
    assert torch.allclose(inside, expected)


def test_one_tuning_step_is_adam_on_every_unet_weight_through_the_shared_loop(engine, case) -> None:
    inputs = inputs_for(engine, case)
    before = {k: v.clone() for k, v in engine.sd.unet.state_dict().items()}
    events = []
    ctx = RunContext(seed=3, on_progress=events.append)
    tuned = tune_unet(engine.sd.unet, inputs, steps=1, learning_rate=1e-3, ctx=ctx, device=torch.device("cpu"),
                      dtype=torch.float32, task="tune")
    ref = Denoiser(copy.deepcopy(engine.sd.unet).float())
    ref.requires_grad_(True)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    tune_terms(ref, inputs, _generator(3, 0, 0, salt=24))[0].backward()
    opt.step()
    got, want = tuned.state_dict(), ref.unet.state_dict()
    assert all(torch.allclose(got[k], want[k], atol=1e-7) for k in want)
    assert sum(not torch.equal(got[k], before[k]) for k in want) > len(want) // 2  # the whole UNet is tuned
    assert all(torch.equal(v, before[k]) for k, v in engine.sd.unet.state_dict().items())  # the loaded one is not
    assert [(e.task, e.step, e.total) for e in events] == [("tune", 1, 1)]


# ----------------------------------------------------------------------------- exemplar

def test_the_exemplar_box_and_placement_are_the_public_augmentor(case) -> None:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[18:50, 14:44] = True
    mask[2:6, 2:6] = True  # a smaller blob: the box is the largest contour's
    assert region_box(mask) == (14, 18, 44, 50)
    pixels = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    canvas, square = place_exemplar(pixels, (14, 18, 44, 50), torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)  # the public draws, in the same order (x along columns, y along rows)
    short = min(44 - 14, 50 - 18)
    side = int(torch.randint(int(short * 0.4), int(short * 0.9), (1,), generator=gen))
    left = int(torch.randint(14, 44 - side, (1,), generator=gen))
    top = int(torch.randint(18, 50 - side, (1,), generator=gen))
    src = torch.flip(pixels, dims=[3]) if float(torch.rand(1, generator=gen)) < 0.5 else pixels
    want = torch.zeros_like(pixels)
    want[:, :, top:top + side, left:left + side] = F.interpolate(src, size=(side, side), mode="bilinear")
    assert torch.equal(canvas, want)
    assert square.sum() == side * side and square[0, 0, top, left] == 1


def test_the_placeholder_token_takes_the_word_embedding(engine) -> None:
    sd = engine.sd
    token = ex.placeholder_token(sd.tokenizer)
    got = ex.placeholder_context(sd, ex.PLACEHOLDER, token, ex.word_embedding(sd, WORD))
    # the public replacement of '#''s input embedding by the word's is the prompt of the word itself
    assert torch.equal(got, encode_prompts(sd, [WORD]))
    assert not torch.equal(got, encode_prompts(sd, [ex.PLACEHOLDER]))
    with pytest.raises(Exception, match="single token"):
        ex.word_embedding(sd, "x y")


def test_the_exemplar_term_is_the_public_one_drawn_first(engine, case) -> None:
    sd = engine.sd
    pixels = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    context = ex.placeholder_context(sd, ex.PLACEHOLDER, ex.placeholder_token(sd.tokenizer),
                                     ex.word_embedding(sd, WORD)).float()
    inputs = inputs_for(engine, case, Exemplar(pixels, (14, 18, 44, 50), context))
    got = tune_terms(Denoiser(sd.unet), inputs, torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    acp = sd.scheduler.alphas_cumprod.float()
    canvas, square = place_exemplar(pixels, (14, 18, 44, 50), gen)
    z_ref = codec.encode(sd.vae, canvas, gen)
    sq = F.interpolate(square, size=(8, 8), mode="bilinear")
    t1 = torch.randint(1000, (1,), generator=gen)
    noise1 = torch.randn(1, 4, 8, 8, generator=gen)
    pred = sd.unet(public_q_sample(z_ref, t1, noise1, acp), t1, encoder_hidden_states=context).sample
    want = F.mse_loss(pred * sq, noise1 * sq)
    assert torch.allclose(got[2], want, rtol=1e-6, atol=1e-7)
    assert torch.allclose(got[0], got[1] + got[2])


# ----------------------------------------------------------------------------- masked attention

def public_attention(attn, x, context, grid_mask):
    """``ldm/modules/attention.py: CrossAttention.forward`` with ``attn_mask`` (written out, explicit heads)."""
    h = attn.heads
    cross = context is not None
    ctx = context if cross else x
    q, k, v = attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], h, -1).permute(0, 2, 1, 3).reshape(  # noqa: E731
        t.shape[0] * h, t.shape[1], -1)
    q, k, v = split(q), split(k), split(v)
    attn_p = (torch.einsum("bid,bjd->bij", q, k) * attn.scale).softmax(dim=-1)
    m = grid_mask.reshape(-1)
    if cross:
        attn_p = torch.cat([attn_p[:, :, :1], attn_p[:, :, 1:] * m[None, :, None]], dim=2)
    else:
        fg_bg = (1 - m)[:, None] @ m[None, :]
        attn_p = attn_p * (1 - fg_bg)[None]
    out = torch.einsum("bij,bjd->bid", attn_p, v)
    b = x.shape[0]
    out = out.reshape(b, h, out.shape[1], -1).permute(0, 2, 1, 3).reshape(b, out.shape[1], -1)
    return attn.to_out[0](out)


def public_grids(mask: np.ndarray, sizes=(8, 4, 2, 1)) -> dict[int, torch.Tensor]:
    m = codec.mask_to_tensor(mask)
    return {s * s: F.interpolate(m, (s, s), mode="bilinear")[0, 0] for s in sizes}


@pytest.mark.parametrize("which", ["attn1", "attn2"])
def test_masked_attention_is_the_public_control(engine, case, which) -> None:
    unet = engine.sd.unet
    attn = getattr(unet.down_blocks[0].attentions[0].transformer_blocks[0], which)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 64, attn.to_q.in_features, generator=gen)
    context = torch.randn(2, 77, attn.to_k.in_features, generator=gen) if which == "attn2" else None
    masks = RegionMasks(codec.mask_to_tensor(case["mask"])[0, 0], (8, 8))
    with torch.no_grad():
        got = MaskedAttention(attn.processor, masks)(attn, x, context)
        want = public_attention(attn, x, context, public_grids(case["mask"])[64])
        plain = attn.processor(attn, x, context)
    assert torch.allclose(got, want, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # the control changes something


def test_every_transformer_attention_layer_is_controlled(engine) -> None:
    unet = engine.sd.unet
    names = transformer_attention_layers(unet)
    every = [n for n in unet.attn_processors if "transformer_blocks" in n]
    assert sorted(names) == sorted(every) and {n.rsplit(".", 2)[-2] for n in names} == {"attn1", "attn2"}
    masks = RegionMasks(torch.ones(SIZE, SIZE), (8, 8))
    with masked_attention(unet, masks):
        assert all(isinstance(unet.attn_processors[n], MaskedAttention) for n in names)
    assert not any(isinstance(p, MaskedAttention) for p in unet.attn_processors.values())
    for tokens, grid in public_grids(np.pad(np.ones((30, 20), bool), ((10, 24), (30, 14)))).items():
        region = torch.from_numpy(np.pad(np.ones((30, 20), np.float32), ((10, 24), (30, 14))))
        assert torch.equal(RegionMasks(region, (8, 8)).at(tokens, torch.device("cpu"), torch.float32),
                           grid.flatten())


# ----------------------------------------------------------------------------- stroke start

def test_the_stroke_comes_in_at_the_public_blending_step() -> None:
    z = torch.zeros(1, 4, 8, 8)
    # 50 steps, tau 0.55: index/total in [0.55, 0.57] holds only index 28 (step i = 21, timestep 561)
    assert [index for index in range(50) if stroke_blend(z, z, 0.55).due(index, 50)] == [28]
    assert [index for index in range(50) if stroke_blend(z, z, 0.5).due(index, 50)] == [25, 26]
    # the prompt is read below tau only: indices 0..27 (the last 28 steps), the empty text before
    assert [index for index in range(50) if reads_prompt(index, 50, 0.55)] == list(range(28))
    assert all(reads_prompt(index, 50, None) for index in range(50))


# ----------------------------------------------------------------------------- a short DDIM run

class PublicAttention:
    """A processor running :func:`public_attention` on a layer with the public grid of its token count."""

    def __init__(self, grids):
        self.grids = grids

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        return public_attention(attn, hidden_states, encoder_hidden_states, self.grids[hidden_states.shape[1]])


@contextlib.contextmanager
def public_attention_on(unet, grids):
    original = dict(unet.attn_processors)
    unet.set_attn_processor({n: PublicAttention(grids) if "transformer_blocks" in n else p
                             for n, p in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)


def public_inputs(engine, case, seed):
    """What the public code holds before sampling, with our draws: z_xm, z_m, z_stroke, its mask, x_T."""
    sd = engine.sd
    gen = make_generator(seed)
    m = codec.mask_to_tensor(case["mask"])
    x = codec.images_to_tensor(case["image"])
    z_xm = codec.encode(sd.vae, x * (1 - m), gen)
    colours = case["stroke"] * case["mask"][..., None]  # x_stroke: the stroke inside the region, black elsewhere
    z_stroke = codec.encode(sd.vae, codec.images_to_tensor(colours), gen)
    stroke_mask = (codec.images_to_tensor(colours).mean(dim=1, keepdim=True) > -1).float()
    z_m = public_dilation(F.interpolate(m, size=(8, 8)))
    x_T = initial_noise(sd.vae, 1, 8, 8, gen)
    return gen, z_xm, z_m, z_stroke, F.interpolate(stroke_mask, size=(8, 8)), x_T


def written_out_ddim(engine, case, *, prompt, steps, scale, tau, seed):
    """``DDIMSampler.ddim_sampling`` + ``p_sample_ddim`` (eta 0) as the public stroke call uses them."""
    sd = engine.sd
    gen, z_xm, z_m, z_stroke, s_m, img = public_inputs(engine, case, seed)
    acp = sd.scheduler.alphas_cumprod.double()
    ts = np.arange(0, 1000, 1000 // steps) + 1
    alphas = acp[ts].float()
    alphas_prev = torch.cat([acp[:1], acp[ts[:-1]]]).float()
    c, uc = encode_prompts(sd, [prompt]), encode_prompts(sd, [""])
    blends = [([0, 1], z_xm, z_m), ([tau, tau + 0.02], z_stroke, 1 - s_m)]
    with torch.no_grad(), public_attention_on(sd.unet, public_grids(case["mask"])):
        for i, step in enumerate(np.flip(ts)):
            index = steps - i - 1
            t = torch.full((1,), int(step), dtype=torch.long)
            for (lo, hi), x0, mask in blends:
                if lo <= index / steps <= hi:
                    orig = public_q_sample(x0, t, torch.randn(x0.shape, generator=gen), acp.float())
                    img = orig * (1 - mask) + img * mask
            cond = c if index / steps < tau else uc
            e_u, e_c = sd.unet(torch.cat([img, img]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uc, cond])
                               ).sample.chunk(2)
            e = e_u + scale * (e_c - e_u)
            pred_x0 = (img - (1 - alphas[index]).sqrt() * e) / alphas[index].sqrt()
            img = alphas_prev[index].sqrt() * pred_x0 + (1 - alphas_prev[index]).sqrt() * e
        return codec.tensor_to_images(codec.decode(sd.vae, img).clamp(-1, 1))[0]


def ours(engine, case, *, prompt, steps, scale, tau, seed):
    opts = UnipaintInpaintOptions(steps=steps, guidance_scale=scale, stroke_start=tau, tune_steps=0)
    with torch.no_grad():
        return engine._inpaint(image=case["image"], mask=case["mask"], prompt=prompt, negative_prompt="",
                               options=opts, ctx=RunContext(seed=seed), stroke=case["stroke"])[0]


def test_a_stroke_run_matches_the_written_out_public_ddim(engine, case) -> None:
    kw = dict(prompt="a blue cat", steps=5, scale=5.0, tau=0.4, seed=7)
    got = ours(engine, case, **kw)
    want = written_out_ddim(engine, case, **kw)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def load_public_ddim():
    """The mirror's ``ddim.py`` and ``CrossAttention``, patched in memory for a CPU run (einops' few patterns)."""
    if not (MIRROR / "HEAD").exists() and not (MIRROR / ".git").exists():
        pytest.skip(f"the public Uni-paint mirror is not here ({MIRROR})")

    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{path}"], capture_output=True, text=True,
                              check=True).stdout

    einops = types.ModuleType("einops")

    def rearrange(t, pattern, h=None):
        if pattern == "b n (h d) -> (b h) n d":
            return t.reshape(t.shape[0], t.shape[1], h, -1).permute(0, 2, 1, 3).reshape(t.shape[0] * h, t.shape[1], -1)
        if pattern == "(b h) n d -> b n (h d)":
            return t.reshape(-1, h, t.shape[1], t.shape[2]).permute(0, 2, 1, 3).reshape(-1, t.shape[1], h * t.shape[2])
        if pattern == "h w -> () (h w) ()":
            return t.reshape(1, -1, 1)
        if pattern == "h w -> (h w) ()":
            return t.reshape(-1, 1)
        raise NotImplementedError(pattern)

    einops.rearrange, einops.repeat = rearrange, None
    util = types.ModuleType("ldm.modules.diffusionmodules.util")
    src = show("ldm/modules/diffusionmodules/util.py").replace("from ldm.util import instantiate_from_config",
                                                               "instantiate_from_config = None")
    names = ("einops", "ldm", "ldm.modules", "ldm.modules.diffusionmodules", "ldm.modules.diffusionmodules.util")
    saved = {k: sys.modules.get(k) for k in names}
    try:
        sys.modules["einops"] = einops
        for k in names[1:]:
            sys.modules[k] = util if k.endswith("util") else types.ModuleType(k)
        exec(compile(src, "util.py", "exec"), util.__dict__)
        ddim = types.ModuleType("ddim")
        exec(compile(show("ldm/models/diffusion/ddim.py").replace(
            'attr = attr.to(torch.device("cuda"))  #debug', "pass"), "ddim.py", "exec"), ddim.__dict__)
        attention = types.ModuleType("attention")
        exec(compile(show("ldm/modules/attention.py"), "attention.py", "exec"), attention.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return ddim.DDIMSampler, attention.CrossAttention


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_stroke_run_matches_the_public_ddim_sampler_and_attention(engine, case) -> None:
    sampler_cls, cross_attention = load_public_ddim()
    sd = engine.sd
    kw = dict(prompt="a blue cat", steps=5, scale=5.0, tau=0.4, seed=7)
    gen, z_xm, z_m, z_stroke, s_m, x_T = public_inputs(engine, case, kw["seed"])

    class Public:  # the mirror's CrossAttention with the layer's weights, fed the public grid of its token count
        def __init__(self, attn):
            self.module = cross_attention(attn.to_q.in_features, attn.to_k.in_features, attn.heads,
                                          attn.to_q.out_features // attn.heads)
            self.module.load_state_dict(attn.state_dict())

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
            given = Model.attn_mask is not None  # the sampler passes attn_mask only on its guided call
            mask = public_grids(case["mask"])[hidden_states.shape[1]] if given else torch.tensor(0.)
            return self.module(hidden_states, context=encoder_hidden_states, attn_mask=mask)

    class Model:  # what DDIMSampler reads of LatentDiffusion
        num_timesteps = 1000
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        device = torch.device("cpu")
        attn_mask = None

        def q_sample(self, x0, t, noise=None):  # its blends draw from our generator, in its order
            noise = torch.randn(x0.shape, generator=gen) if noise is None else noise
            return public_q_sample(x0, t, noise, self.alphas_cumprod.float())

        def apply_model(self, x, t, c, attn_mask=None):
            Model.attn_mask = attn_mask
            return sd.unet(x, t, encoder_hidden_states=c).sample

    original = dict(sd.unet.attn_processors)
    modules = dict(sd.unet.named_modules())
    sd.unet.set_attn_processor({n: Public(modules[n.rsplit(".", 1)[0]]) if "transformer_blocks" in n else p
                                for n, p in original.items()})
    try:
        sampler = sampler_cls(Model())
        c, uc = encode_prompts(sd, [kw["prompt"]]), encode_prompts(sd, [""])
        tau = kw["tau"]
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            out, _ = sampler.sample(S=kw["steps"], conditioning={"t": [[0, tau], [tau, 1]], "c": [c, uc]}, batch_size=1,
                                    shape=[4, 8, 8], verbose=False, unconditional_guidance_scale=kw["scale"],
                                    unconditional_conditioning=uc, eta=0.0, x_T=x_T,
                                    blend_interval=[[0, 1], [tau, tau + 0.02]], x0=[z_xm, z_stroke],
                                    mask=[z_m, 1 - s_m], attn_mask={"on": True})
            want = codec.tensor_to_images(codec.decode(sd.vae, out).clamp(-1, 1))[0]
    finally:
        sd.unet.set_attn_processor(original)
    got = ours(engine, case, **kw)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


# ----------------------------------------------------------------------------- the public "auto select"

def tiny_clip(root: Path, tokenizer) -> Path:
    """A tiny CLIPModel over the tiny SD's vocabulary (the token ids must be the text encoder's)."""
    import json

    from transformers import CLIPConfig, CLIPModel

    vocab = len(tokenizer)
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(root)
    prep = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "do_resize": True,
            "do_center_crop": True, "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3}
    (root / "preprocessor_config.json").write_text(json.dumps(prep))
    return root


def test_the_auto_selected_word_is_the_public_clip_match(engine, tmp_path) -> None:
    from transformers import CLIPImageProcessor, CLIPModel

    sd = engine.sd
    root = tiny_clip(tmp_path / "clip", sd.tokenizer)
    reference = (np.random.RandomState(3).rand(48, 40, 3) * 255).astype(np.uint8)
    opts = UnipaintPaintOptions(exemplar_clip=str(root))
    got = engine._start_embedding(reference, opts)
    # the public computation (FrozenCLIPImageEmbedder.precompute_and_save_clip_text_embeds, match_token_for_image)
    clip, proc = CLIPModel.from_pretrained(str(root)).eval(), CLIPImageProcessor.from_pretrained(str(root))
    n = len(sd.tokenizer) - 1
    with torch.no_grad():
        ids = torch.cat([sd.tokenizer.bos_token_id * torch.ones(n, 1), torch.arange(n).reshape(n, 1),
                         sd.tokenizer.eos_token_id * torch.ones(n, 75)], dim=1).to(torch.int64)
        text = clip.text_projection(clip.text_model(ids).pooler_output)
        text = text / text.norm(dim=-1, keepdim=True)
        image = clip.visual_projection(clip.vision_model(
            pixel_values=proc(Image.fromarray(reference), return_tensors="pt")["pixel_values"]).pooler_output)
        image = image / image.norm(dim=-1, keepdim=True)
        logits = (text @ image.T * clip.logit_scale.exp()).T
        _, idx = torch.topk(logits, 1)
        want = sd.text_encoder.get_input_embeddings()(idx[0])[0]
    assert torch.equal(got, want)
    assert not torch.equal(got, ex.word_embedding(sd, ex.PLACEHOLDER))  # a real choice, not '#' itself
