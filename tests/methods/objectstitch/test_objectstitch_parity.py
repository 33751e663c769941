"""ObjectStitch against the public computation (``bcmi/ObjectStitch-Image-Composition``) on tiny random weights.

Written out here, independently of the engine, from the public code (facts only):

* ``scripts/inference.py``'s inputs: the object black where its mask (read as RGB) is not above
  127, stretched to CLIP's square by torchvision's ``Resize`` of a PIL image (Pillow's bilinear),
  CLIP-normalised; the box as a 0/1 mask (``bbox2mask``), the background in [-1, 1] times
  ``1 - mask``, the mask at latent size by ``F.interpolate`` (nearest) thresholded at 0.5;
* the content adaptor (``FrozenCLIPImageEmbedder.forward`` and ``ldm/modules/encoders/xf.py``): every
  token of CLIP's last layer through its post-layernorm, five (here one) pre-norm blocks with a fused
  one-head ``c_qkv`` whose q and k are each scaled by ``ch ** -0.25``, the final LayerNorm, then
  ``LatentDiffusion.proj_out``; the unconditional context ``learnable_vector`` repeated over as
  many tokens;
* its DDIM sampler (``ldm/models/diffusion/ddim.py``): the 9 channels ``[x, bg_latent, 1 - mask]``,
  ``cat([uc, c])`` guidance, uniform timesteps plus one, eta 0, and the output truncated to uint8.

When the mirror is present, its own ``xf.py`` (the adaptor's blocks) and ``ddim.py`` are also run
(loaded at test time, nothing of them is stored here); otherwise those tests skip.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import mirror

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from diffcompose.methods.objectstitch.engine import ObjectStitchEngine  # noqa: E402
from diffcompose.methods.objectstitch.preprocess import LATENT_MASK, box_hole, prepare_object  # noqa: E402
from diffcompose.methods.objectstitch.tiny import write_tiny_objectstitch  # noqa: E402
from diffcompose.methods.pbe.components import masked_condition  # noqa: E402
from diffcompose.methods.pbe.convert import convert_encoder_state  # noqa: E402

SIZE = 64  # pixels; latent 8x8
BOX = (12, 20, 44, 56)  # x0, y0, x1, y1
MIRROR = mirror("bcmi/ObjectStitch-Image-Composition")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = write_tiny_objectstitch(tmp_path_factory.mktemp("objectstitch") / "tiny", seed=3)
    return ObjectStitchEngine(device="cpu", model=str(root)).load()


@pytest.fixture(scope="module")
def case():
    """A 64x64 background, a 48x40 object photo (resized to the tiny CLIP's 32) and its mask."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    obj = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    obj_mask = np.zeros((40, 48), dtype=bool)
    obj_mask[6:36, 10:40] = True
    return background, obj, obj_mask


# ----------------------------------------------------------------------------- the public computation

def public_object(obj: np.ndarray, mask: np.ndarray, size: int) -> torch.Tensor:
    """``generate_image_batch``'s object: black outside the mask, ``Resize`` (PIL bilinear), ``ToTensor``, normalise."""
    mask_rgb = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
    fg = np.where(mask_rgb > 127, obj, np.zeros_like(mask_rgb))
    fg = np.asarray(Image.fromarray(fg).resize((size, size), Image.BILINEAR)).astype(np.float32) / 255.0
    t = torch.from_numpy(fg).permute(2, 0, 1)
    return ((t - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None])[None]


def public_background(background: np.ndarray, box) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inpaint_t, mask_t, rs_mask)``: the background with the box zeroed, the box mask, at latent size."""
    x0, y0, x1, y1 = box
    mask = np.zeros(background.shape[:2], dtype=np.uint8)
    mask[y0:y1, x0:x1] = 255
    mask_t = torch.from_numpy(mask.astype(np.float32) / 255.0)[None, None]
    mask_t = torch.where(mask_t > 0.5, 1, 0).float()
    bg_t = (torch.from_numpy(background.astype(np.float32) / 255.0).permute(2, 0, 1)[None] - 0.5) / 0.5
    rs = F.interpolate(mask_t, (SIZE // 8, SIZE // 8))
    return bg_t * (1 - mask_t), mask_t, torch.where(rs > 0.5, 1.0, 0.0)


def public_state(encoder) -> dict[str, torch.Tensor]:
    """Our encoder's weights under the public checkpoint's key names (``cond_stage_model.*``, ``proj_out``, ...)."""
    out: dict[str, torch.Tensor] = {}
    blocks = len(encoder.mapper.blocks)
    for k, v in encoder.state_dict().items():
        if k.startswith("model."):
            out["cond_stage_model.transformer." + k[len("model."):]] = v
    for i in range(blocks):
        b = f"mapper.blocks.{i}."
        p = f"cond_stage_model.mapper.resblocks.{i}."
        sd = encoder.state_dict()
        for param in ("weight", "bias"):
            out[p + "attn.c_qkv." + param] = torch.cat([sd[f"{b}attn1.to_{n}.{param}"] for n in "qkv"])
            for ours, theirs in (("attn1.to_out.0", "attn.c_proj"), ("norm1", "ln_1"), ("norm3", "ln_2"),
                                 ("ff.net.0.proj", "mlp.c_fc"), ("ff.net.2", "mlp.c_proj")):
                out[p + theirs + "." + param] = sd[b + ours + "." + param]
    out["cond_stage_model.final_ln.weight"] = encoder.final_layer_norm.weight
    out["cond_stage_model.final_ln.bias"] = encoder.final_layer_norm.bias
    out["proj_out.weight"], out["proj_out.bias"] = encoder.proj_out.weight, encoder.proj_out.bias
    out["learnable_vector"] = encoder.uncond_vector.reshape(1, 1, -1)
    return {k: v.detach().clone() for k, v in out.items()}


def public_clip_tokens(encoder, sd: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """``last_hidden_state`` through CLIP's ``post_layernorm``, from a CLIP built from the public keys."""
    from transformers import CLIPVisionModel

    clip = CLIPVisionModel(encoder.config)
    prefix = "cond_stage_model.transformer."
    clip.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=False)
    out = clip(pixel_values=pixels, output_hidden_states=True)
    tower = getattr(clip, "vision_model", clip)
    return tower.post_layernorm(out.last_hidden_state)


def public_mapper(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int = 1) -> torch.Tensor:
    """``xf.Transformer``: pre-norm blocks, fused qkv split per head, q and k each scaled by ``ch ** -0.25``."""
    i = 0
    while f"cond_stage_model.mapper.resblocks.{i}.ln_1.weight" in sd:
        p = f"cond_stage_model.mapper.resblocks.{i}."
        w = lambda n: (sd[p + n + ".weight"], sd[p + n + ".bias"])  # noqa: E731
        h = F.layer_norm(x, x.shape[-1:], *w("ln_1"))
        qkv = F.linear(h, *w("attn.c_qkv"))
        bs, n_ctx, width3 = qkv.shape
        ch = width3 // heads // 3
        scale = 1 / (ch ** 0.5) ** 0.5
        q, k, v = torch.split(qkv.view(bs, n_ctx, heads, -1), ch, dim=-1)
        weight = torch.softmax(torch.einsum("bthc,bshc->bhts", q * scale, k * scale).float(), dim=-1)
        x = x + F.linear(torch.einsum("bhts,bshc->bthc", weight, v).reshape(bs, n_ctx, -1), *w("attn.c_proj"))
        h = F.layer_norm(x, x.shape[-1:], *w("ln_2"))
        x = x + F.linear(F.gelu(F.linear(h, *w("mlp.c_fc"))), *w("mlp.c_proj"))
        i += 1
    return x


def public_condition(sd, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c, uc)`` of ``prepare_input``: mapper, ``final_ln``, ``proj_out``; ``learnable_vector`` repeated."""
    z = F.layer_norm(tokens, tokens.shape[-1:], sd["cond_stage_model.final_ln.weight"],
                     sd["cond_stage_model.final_ln.bias"])
    c = F.linear(z, sd["proj_out.weight"], sd["proj_out.bias"])
    return c, sd["learnable_vector"].repeat(c.shape[0], c.shape[1], 1)


def ddim_schedule(steps: int):
    """``make_ddim_timesteps('uniform') + 1`` and ``ddim_alphas`` / ``ddim_alphas_prev`` on SD1's betas."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    cum = torch.cumprod(1 - betas, 0).numpy()
    ts = np.asarray(list(range(0, 1000, 1000 // steps))) + 1
    return ts, torch.tensor(cum[ts], dtype=torch.float32), torch.tensor(
        np.asarray([cum[0]] + cum[ts[:-1]].tolist()), dtype=torch.float32)


def public_ddim(unet, c, uc, x, bg_latent, m, steps: int, scale: float):
    """``DDIMSampler.ddim_sampling`` + ``p_sample_ddim``, eta 0."""
    ts, a, a_prev = ddim_schedule(steps)
    total = len(ts)  # more than ``steps`` where ``steps`` does not divide 1000
    for i, step in enumerate(np.flip(ts)):
        index = total - i - 1
        x_input = torch.cat([x, bg_latent, 1 - m], dim=1)
        t = torch.full((2,), int(step), dtype=torch.long)
        e_u, e_t = unet(torch.cat([x_input] * 2), t, encoder_hidden_states=torch.cat([uc, c])).sample.chunk(2)
        e_t = e_u + scale * (e_t - e_u)
        pred_x0 = (x - (1 - a[index]).sqrt() * e_t) / a[index].sqrt()
        x = a_prev[index].sqrt() * pred_x0 + (1 - a_prev[index]).sqrt() * e_t
    return x


def public_run(c, case, *, steps: int, scale: float, seed: int, sampler=public_ddim) -> np.ndarray:
    """The public inference on our tiny modules; random draws in the engine's order (start code, then the
    background's posterior sample)."""
    background, obj, obj_mask = case
    sd = public_state(c.encoder)
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=gen)
    inpaint, _, rs_mask = public_background(background, BOX)
    scale_factor = c.vae.config.scaling_factor
    with torch.no_grad():
        bg_latent = c.vae.encode(inpaint).latent_dist.sample(generator=gen) * scale_factor
        tokens = public_clip_tokens(c.encoder, sd, public_object(obj, obj_mask, c.encoder.image_size))
        cond, uncond = public_condition(sd, public_mapper(sd, tokens))
        x = sampler(c.unet, cond, uncond, x_t, bg_latent, rs_mask, steps, scale)
        out = c.vae.decode(x / scale_factor).sample
    image = torch.clamp((out + 1.0) / 2.0, 0.0, 1.0)[0].permute(1, 2, 0).numpy()
    return (image * 255).astype(np.uint8).astype(np.float64)  # ``tensor2numpy``: truncated


def ours(engine, case, **options) -> np.ndarray:
    background, obj, obj_mask = case
    out = engine.insert(background, None, obj, box=BOX, reference_mask=obj_mask, paste_back=False, crop=False,
                        resolution=SIZE, **options)
    return np.asarray(out).astype(np.float64)


# ----------------------------------------------------------------------------- the deterministic steps

def test_object_preprocessing_is_the_public_one(case) -> None:
    """Black outside the mask, Pillow bilinear to the square, CLIP's normalisation: bit-exact."""
    _, obj, obj_mask = case
    np.testing.assert_array_equal(prepare_object(obj, obj_mask, size=32), public_object(obj, obj_mask, 32)[0].numpy())
    black = prepare_object(obj, obj_mask, size=48)[:, 2, 2]  # a corner, outside the mask
    np.testing.assert_allclose(black, -np.asarray(CLIP_MEAN) / np.asarray(CLIP_STD), rtol=1e-6)


def test_object_preprocessing_on_a_real_object(testdata) -> None:
    """The same on one of the public repository's own examples (foreground + foreground_mask)."""
    from diffcompose.inputs import load_image, load_mask

    base = testdata / "composition" / "ObjectStitch-Image-Composition" / "examples"
    name = "000000049931.png"
    if not (base / "foreground" / name).is_file():
        pytest.skip("the ObjectStitch example photos are not in the test data")
    obj = load_image(base / "foreground" / name, "object")
    mask = load_mask(base / "foreground_mask" / name, (obj.shape[1], obj.shape[0]), name="object mask")
    np.testing.assert_array_equal(prepare_object(obj, mask), public_object(obj, mask, 224)[0].numpy())


def test_box_and_its_latent_mask_are_the_public_ones(case) -> None:
    """The hole is the box; the masked background and the latent keep mask (1 = keep) are the public tensors."""
    background, _, _ = case
    inpaint, mask_t, rs_mask = public_background(background, BOX)
    hole = box_hole(background.shape[:2], BOX)
    np.testing.assert_array_equal(hole, mask_t[0, 0].numpy() > 0.5)
    pixels = (torch.from_numpy(background.astype(np.float32) / 255.0).permute(2, 0, 1)[None] - 0.5) / 0.5
    masked, keep = masked_condition(pixels, torch.from_numpy(hole.astype(np.float32))[None, None], (8, 8),
                                    LATENT_MASK)
    torch.testing.assert_close(masked, inpaint, rtol=0, atol=0)
    torch.testing.assert_close(keep, 1 - rs_mask, rtol=0, atol=0)


def test_the_adaptor_and_the_condition_are_the_public_ones(engine, case) -> None:
    """Every CLIP token through the adaptor, from the public key names (so also what ``convert`` maps)."""
    _, obj, obj_mask = case
    enc = engine.c.encoder
    sd = public_state(enc)
    pixels = public_object(obj, obj_mask, enc.image_size)
    with torch.no_grad():
        c, uc = public_condition(sd, public_mapper(sd, public_clip_tokens(enc, sd, pixels)))
        got = enc(pixels)
    assert got.shape == (1, (enc.image_size // enc.config.patch_size) ** 2 + 1, enc.proj_size)  # 17 tokens
    torch.testing.assert_close(got, c, rtol=0, atol=1e-5)
    torch.testing.assert_close(enc.uncond(1, got.shape[1]), uc, rtol=0, atol=0)
    # the converter's mapping of the same public keys gives the same weights back
    converted = convert_encoder_state(sd)
    for k, v in converted.items():
        torch.testing.assert_close(v, enc.state_dict()[k], rtol=0, atol=0)


def test_the_unet_sees_the_public_channels_and_contexts(engine, case) -> None:
    """Channel 9 is ``1 - box`` at latent size; the guided batch's contexts are ``[uc, c]``."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_, args, kwargs):
        seen.append((args[0].detach().clone(), kwargs["encoder_hidden_states"].detach().clone()))

    handle = engine.c.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        ours(engine, case, steps=2, guidance_scale=5.0, seed=0)
    finally:
        handle.remove()
    background, obj, obj_mask = case
    _, _, rs_mask = public_background(background, BOX)
    x, context = seen[0]
    assert x.shape[1] == 9
    torch.testing.assert_close(x[:, 8:9], torch.cat([1 - rs_mask] * 2), rtol=0, atol=0)
    sd = public_state(engine.c.encoder)
    with torch.no_grad():
        tokens = public_clip_tokens(engine.c.encoder, sd, public_object(obj, obj_mask, engine.c.encoder.image_size))
        c, uc = public_condition(sd, public_mapper(sd, tokens))
    torch.testing.assert_close(context, torch.cat([uc, c]), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- a short denoising run

@pytest.mark.parametrize("steps,scale", [(4, 5.0), (6, 2.5)])  # 6: the public schedule has 7 steps
def test_a_denoising_run_matches_the_written_out_public_sampler(engine, case, steps, scale) -> None:
    expected = public_run(engine.c, case, steps=steps, scale=scale, seed=7)
    got = ours(engine, case, steps=steps, guidance_scale=scale, seed=7)
    assert np.abs(got - expected).max() <= 1.0


def test_the_object_changes_the_result(engine, case) -> None:
    """Guards against a run that matches only because the condition does nothing on these weights."""
    background, obj, obj_mask = case
    a = ours(engine, case, steps=4, seed=7)
    b = ours(engine, (background, obj[::-1].copy(), obj_mask[::-1].copy()), steps=4, seed=7)
    assert np.abs(a - b).max() > 2


# ----------------------------------------------------------------------------- the public code itself

def _show(path: str) -> str:
    return subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{path}"], capture_output=True, text=True,
                          check=True).stdout


def _need_mirror() -> None:
    if not (MIRROR / "HEAD").exists() and not (MIRROR / ".git").exists():
        pytest.skip(f"the public ObjectStitch mirror is not here ({MIRROR})")


def load_public(path: str, patches: dict[str, str] | None = None) -> types.ModuleType:
    """One module of the mirror (``ldm/...``), its ``ldm`` imports served by the mirror's util, in memory."""
    _need_mirror()
    util = types.ModuleType("ldm.modules.diffusionmodules.util")
    util_src = _show("ldm/modules/diffusionmodules/util.py").replace("from einops import repeat", "repeat = None")
    util_src = util_src.replace("from ldm.util import instantiate_from_config", "instantiate_from_config = None")
    exec(compile(util_src, "util.py", "exec"), util.__dict__)
    names = ("ldm", "ldm.modules", "ldm.modules.diffusionmodules", "ldm.modules.diffusionmodules.util")
    saved = {k: sys.modules.get(k) for k in names}
    try:
        for k in names:
            sys.modules[k] = util if k.endswith("util") else types.ModuleType(k)
        module = types.ModuleType(Path(path).stem)
        src = _show(path)
        for old, new in (patches or {}).items():
            src = src.replace(old, new)
        exec(compile(src, Path(path).name, "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


def test_the_adaptor_matches_the_public_transformer(engine, case) -> None:
    xf = load_public("ldm/modules/encoders/xf.py")
    enc = engine.c.encoder
    sd = public_state(enc)
    width, layers = enc.config.hidden_size, len(enc.mapper.blocks)
    mapper = xf.Transformer(1, width, layers, 1)  # the public FrozenCLIPImageEmbedder: (1, 1024, 5, 1)
    prefix = "cond_stage_model.mapper."
    mapper.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    final_ln = xf.LayerNorm(width)
    final_ln.load_state_dict({"weight": sd["cond_stage_model.final_ln.weight"],
                              "bias": sd["cond_stage_model.final_ln.bias"]})
    _, obj, obj_mask = case
    pixels = public_object(obj, obj_mask, enc.image_size)
    with torch.no_grad():
        z = final_ln(mapper(public_clip_tokens(enc, sd, pixels)))
        expected = F.linear(z, sd["proj_out.weight"], sd["proj_out.bias"])
        torch.testing.assert_close(enc(pixels), expected, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_denoising_run_matches_the_public_ddim_sampler(engine, case) -> None:
    ddim = load_public("ldm/models/diffusion/ddim.py",
                       {'attr = attr.to(torch.device("cuda"))': "pass"})

    class Model:  # what DDIMSampler reads of LatentDiffusion
        num_timesteps = 1000
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        device = torch.device("cpu")

        def __init__(self, unet):
            self.unet = unet

        def apply_model(self, x, bbox, t, c):
            return self.unet(x, t, encoder_hidden_states=c).sample

    def sample(unet, cond, uncond, x, bg_latent, m, steps, scale):
        sampler = ddim.DDIMSampler(Model(unet))
        kwargs = {"bg_latent": bg_latent, "bg_mask": m, "bbox": torch.zeros(1, 4)}
        out, _ = sampler.sample(S=steps, conditioning=cond, batch_size=1, shape=[4, 8, 8], verbose=False,
                                unconditional_guidance_scale=scale, unconditional_conditioning=uncond, eta=0.0,
                                x_T=x, test_model_kwargs=kwargs)
        return out

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its prints, tqdm
        expected = public_run(engine.c, case, steps=4, scale=5.0, seed=7, sampler=sample)
    got = ours(engine, case, steps=4, guidance_scale=5.0, seed=7)
    assert np.abs(got - expected).max() <= 1.0
