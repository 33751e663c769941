"""``convert anydoor``: a synthetic checkpoint in the public layout (tiny sizes) converts, loads,
and gives what the public model computes from its *original* keys.

The synthetic checkpoint is written here in the public names: DINOv2 in the DINOv2
repository's layout (fused ``qkv``, ``ls1.gamma``, ``w12``/``w3`` or ``fc1``/``fc2``, a 37x37
position grid), the projector, and the UNet/ControlNet/VAE in LDM names (this file's own
LDM naming, :func:`ldm_unet_keys` & co., independent of diffusers' converter that the
conversion uses). The references read the original keys directly: an explicit DINOv2 +
projector forward with the repository's position resampling, and the public ControlNet
(hint block, zero convs and middle conv from ``control_model.*`` tensors with plain
``conv2d``; the first input block skipped).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
F = torch.nn.functional

from diffcompose.errors import InputError  # noqa: E402
from diffcompose.methods.anydoor import convert as C  # noqa: E402
from diffcompose.methods.anydoor import model as M  # noqa: E402
from diffcompose.methods.anydoor.tiny import tiny_anydoor_unet_config  # noqa: E402
from diffcompose.models.tiny import tiny_vae_config  # noqa: E402
from diffcompose.outdir import MARKER  # noqa: E402

DINO_WIDTH, DINO_DEPTH, DINO_GRID = 128, 2, 37  # 2 heads of 64, as the repository's sizes


# ----------------------------------------------------------------------------- the public layout, written here

def _resnet(prefix: str, ldm: str) -> dict[str, str]:
    names = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
             "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    return {f"{prefix}.{a}": f"{ldm}.{b}" for a, b in names.items()}


def ldm_unet_keys(unet_like, controlnet: bool = False) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix for an SD UNet (or the ControlNet's encoder half)."""
    cfg = unet_like.config
    per = cfg.layers_per_block
    out = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0"}
    for i, block in enumerate(unet_like.down_blocks):
        for j in range(per):
            n = 1 + (per + 1) * i + j
            out.update(_resnet(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{n}.0"))
            if getattr(block, "attentions", None):
                out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
        if block.downsamplers:
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(per + 1) * (i + 1)}.0.op"
    out.update(_resnet("mid_block.resnets.0", "middle_block.0"))
    out["mid_block.attentions.0"] = "middle_block.1"
    out.update(_resnet("mid_block.resnets.1", "middle_block.2"))
    if controlnet:
        for k in range(len(unet_like.controlnet_down_blocks)):
            out[f"controlnet_down_blocks.{k}"] = f"zero_convs.{k}.0"
        out["controlnet_mid_block"] = "middle_block_out.0"
        out["controlnet_cond_embedding.conv_in"] = "input_hint_block.0"
        for m in range(len(unet_like.controlnet_cond_embedding.blocks)):
            out[f"controlnet_cond_embedding.blocks.{m}"] = f"input_hint_block.{2 * (m + 1)}"
        out["controlnet_cond_embedding.conv_out"] = f"input_hint_block.{2 * (m + 2)}"
        return out
    for i, block in enumerate(unet_like.up_blocks):
        attn = bool(getattr(block, "attentions", None))
        for j in range(per + 1):
            out.update(_resnet(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{(per + 1) * i + j}.0"))
            if attn:
                out[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{(per + 1) * i + j}.1"
        if block.upsamplers:
            out[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{(per + 1) * i + per}.{2 if attn else 1}.conv"
    out.update({"conv_norm_out": "out.0", "conv_out": "out.2"})
    return out


def ldm_vae_keys(vae) -> dict[str, str]:
    out = {}
    n = len(vae.encoder.down_blocks)
    for part in ("encoder", "decoder"):
        out[f"{part}.conv_in"] = f"{part}.conv_in"
        out[f"{part}.conv_out"] = f"{part}.conv_out"
        out[f"{part}.conv_norm_out"] = f"{part}.norm_out"
        for r in (0, 1):
            out[f"{part}.mid_block.resnets.{r}"] = f"{part}.mid.block_{r + 1}"
        for a, b in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            out[f"{part}.mid_block.attentions.0.{a}"] = f"{part}.mid.attn_1.{b}"
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            out[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        if block.downsamplers:
            out[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
    for i, block in enumerate(vae.decoder.up_blocks):
        for j in range(len(block.resnets)):
            out[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{n - 1 - i}.block.{j}"
        if block.upsamplers:
            out[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{n - 1 - i}.upsample.conv"
    out.update({"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"})
    return out


def to_ldm(module, mapping: dict[str, str], prefix: str) -> dict[str, torch.Tensor]:
    """A module's weights under LDM names (longest diffusers prefix wins; VAE attention as 1x1 convs)."""
    out = {}
    for key, value in module.state_dict().items():
        best = max((p for p in mapping if key == p or key.startswith(p + ".")), key=len, default=None)
        assert best is not None, key
        rest = key[len(best):]
        if ".block." in mapping[best]:  # VAE resnets: LDM calls the shortcut nin_shortcut
            rest = rest.replace("conv_shortcut", "nin_shortcut")
        if ".attn_1." in mapping[best] and rest == ".weight" and value.ndim == 2:
            value = value[:, :, None, None]
        out[prefix + mapping[best] + rest] = value.clone()
    return out


def public_dinov2(gen: torch.Generator, swiglu: bool, chunked: bool = False) -> dict[str, torch.Tensor]:
    """Random DINOv2 weights in the repository's key layout."""
    d = DINO_WIDTH

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=gen) * scale

    s = {"cls_token": r(1, 1, d), "pos_embed": r(1, 1 + DINO_GRID ** 2, d, scale=0.5), "mask_token": r(1, d),
         "patch_embed.proj.weight": r(d, 3, 14, 14), "patch_embed.proj.bias": r(d),
         "norm.weight": 1 + r(d), "norm.bias": r(d)}
    hidden = (int(d * 4 * 2 / 3) + 7) // 8 * 8 if swiglu else 4 * d
    for i in range(DINO_DEPTH):
        b = f"blocks.0.{i}." if chunked else f"blocks.{i}."
        s.update({b + "norm1.weight": 1 + r(d), b + "norm1.bias": r(d), b + "attn.qkv.weight": r(3 * d, d),
                  b + "attn.qkv.bias": r(3 * d), b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d),
                  b + "ls1.gamma": 1 + r(d), b + "norm2.weight": 1 + r(d), b + "norm2.bias": r(d),
                  b + "ls2.gamma": 1 + r(d)})
        if swiglu:
            s.update({b + "mlp.w12.weight": r(2 * hidden, d), b + "mlp.w12.bias": r(2 * hidden),
                      b + "mlp.w3.weight": r(d, hidden), b + "mlp.w3.bias": r(d)})
        else:
            s.update({b + "mlp.fc1.weight": r(hidden, d), b + "mlp.fc1.bias": r(hidden),
                      b + "mlp.fc2.weight": r(d, hidden), b + "mlp.fc2.bias": r(d)})
    return s


def _randomised(module, gen):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


def public_checkpoint(seed: int = 0, swiglu: bool = True, chunked: bool = False):
    """``(state_dict, originals)``: a tiny public-layout state dict and the modules it was written from."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet = _randomised(UNet2DConditionModel(**tiny_anydoor_unet_config(cross_attention_dim=32)), gen)
    control = _randomised(ControlNetModel(**M.controlnet_config(dict(unet.config))), gen)  # non-zero conv_in
    vae = AutoencoderKL(**tiny_vae_config())
    state = {}
    state.update(to_ldm(unet, ldm_unet_keys(unet), C.UNET_PREFIX))
    state.update(to_ldm(control, ldm_unet_keys(control, controlnet=True), C.CONTROL_PREFIX))
    state.update(to_ldm(vae, ldm_vae_keys(vae), C.VAE_PREFIX))
    dino = public_dinov2(gen, swiglu, chunked)
    state.update({C.DINO_PREFIX + k: v for k, v in dino.items()})
    state[C.PROJ_PREFIX + "weight"] = torch.randn(32, DINO_WIDTH, generator=gen) * 0.1
    state[C.PROJ_PREFIX + "bias"] = torch.randn(32, generator=gen) * 0.1
    return state, {"unet": unet, "controlnet": control, "vae": vae}


# ----------------------------------------------------------------------------- references from the original keys

def reference_id_tokens(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The public encoder written out on the original keys: ImageNet normalisation, DINOv2 (its own
    position resampling), final norm on CLS and patches, projector."""
    s = {k[len(C.DINO_PREFIX):]: v for k, v in state.items() if k.startswith(C.DINO_PREFIX)}
    s = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in s.items()}  # un-chunk
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (images - mean) / std
    x = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=14).flatten(2).transpose(1, 2)
    n, grid, d = x.shape[0], images.shape[-1] // 14, x.shape[-1]
    x = torch.cat([s["cls_token"].expand(n, -1, -1), x], 1)
    pos = s["pos_embed"]
    side = int(math.sqrt(pos.shape[1] - 1))
    sf = (grid + 0.1) / side
    patches = F.interpolate(pos[:, 1:].reshape(1, side, side, d).permute(0, 3, 1, 2), scale_factor=(sf, sf),
                            mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, d)
    x = x + torch.cat([pos[:, :1], patches], 1)
    heads = d // 64
    for i in range(DINO_DEPTH):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (d,), s[b + "norm1.weight"], s[b + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"]).reshape(n, -1, 3, heads, 64).unbind(2)
        att = torch.softmax(q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2) / 8.0, -1) @ v.transpose(1, 2)
        h = F.linear(att.transpose(1, 2).reshape(n, -1, d), s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
        x = x + s[b + "ls1.gamma"] * h
        h = F.layer_norm(x, (d,), s[b + "norm2.weight"], s[b + "norm2.bias"], eps=1e-6)
        if b + "mlp.w12.weight" in s:
            x1, x2 = F.linear(h, s[b + "mlp.w12.weight"], s[b + "mlp.w12.bias"]).chunk(2, -1)
            h = F.linear(F.silu(x1) * x2, s[b + "mlp.w3.weight"], s[b + "mlp.w3.bias"])
        else:
            h = F.linear(F.gelu(F.linear(h, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"])),
                         s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"])
        x = x + s[b + "ls2.gamma"] * h
    x = F.layer_norm(x, (d,), s["norm.weight"], s["norm.bias"], eps=1e-6)
    return F.linear(x, state[C.PROJ_PREFIX + "weight"], state[C.PROJ_PREFIX + "bias"])


def reference_control(state, control_module, hint, t, context):
    """The public ControlNet on original keys: hint block and zero convs as plain convs, the first
    input block skipped (``control_module`` provides the encoder blocks the keys were written from)."""
    p = C.CONTROL_PREFIX
    h = hint
    for i in range(0, 15, 2):
        h = F.conv2d(h, state[f"{p}input_hint_block.{i}.weight"], state[f"{p}input_hint_block.{i}.bias"],
                     stride=2 if i in (4, 8, 12) else 1, padding=1)
        if i < 14:
            h = F.silu(h)
    cn = control_module
    emb = cn.time_embedding(cn.time_proj(t.expand(hint.shape[0])))
    feats = [h]
    for block in cn.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(h, emb, encoder_hidden_states=context)
        else:
            h, res = block(h, emb)
        feats.extend(res)
    h = cn.mid_block(h, emb, encoder_hidden_states=context)
    outs = [F.conv2d(f, state[f"{p}zero_convs.{k}.0.weight"], state[f"{p}zero_convs.{k}.0.bias"])
            for k, f in enumerate(feats)]
    return outs, F.conv2d(h, state[f"{p}middle_block_out.0.weight"], state[f"{p}middle_block_out.0.bias"])


# ----------------------------------------------------------------------------- tests

#: Tiny models gain nothing from intra-op threads on the shared 2-core machine (conftest's fixture).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def like_dir(tmp_path_factory):
    """A directory with the tiny geometry's configs (``--like``)."""
    from diffcompose.methods.anydoor.tiny import write_tiny_anydoor

    return write_tiny_anydoor(tmp_path_factory.mktemp("like") / "m")


@pytest.mark.parametrize("swiglu,chunked", [(True, False), (False, True)], ids=["vitg-swiglu", "vits-mlp-chunked"])
def test_converted_model_matches_the_original_layout(tmp_path, like_dir, swiglu, chunked):
    state, orig = public_checkpoint(seed=1, swiglu=swiglu, chunked=chunked)
    ckpt = tmp_path / "anydoor.ckpt"
    # Lightning-style file: the weights plus an optimizer state the conversion must skip
    torch.save({"state_dict": state, "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(1000)}}}],
                "epoch": 1}, ckpt)
    out = C.convert_anydoor(ckpt, tmp_path / "out", like=like_dir)
    assert (out / MARKER).is_file()
    model = M.load_anydoor(out)

    g = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model.id_extractor(images), reference_id_tokens(state, images),
                                   atol=2e-4, rtol=1e-4)
        latents = torch.randn(1, 4, 16, 16, generator=g)
        hint = torch.randn(1, 4, 128, 128, generator=g)
        ctx = torch.randn(1, 257, 32, generator=g)
        t = torch.tensor(637)
        down, mid = model.controlnet(latents, t, encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False)
        ref_down, ref_mid = reference_control(state, orig["controlnet"], hint, t, ctx)
        for a, b in zip(down, ref_down):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(mid, ref_mid, atol=1e-4, rtol=1e-4)
        eps = model.unet(latents, t, encoder_hidden_states=ctx, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
        ref_eps = orig["unet"](latents, t, encoder_hidden_states=ctx, down_block_additional_residuals=ref_down,
                               mid_block_additional_residual=ref_mid).sample
        torch.testing.assert_close(eps, ref_eps, atol=1e-4, rtol=1e-4)
        z = torch.randn(1, 4, 8, 8, generator=g)
        torch.testing.assert_close(model.vae.decode(z).sample, orig["vae"].decode(z).sample, atol=1e-4, rtol=1e-4)
    assert float(model.controlnet.conv_in.weight.abs().max()) == 0.0
    assert float(orig["controlnet"].conv_in.weight.detach().abs().max()) > 0.0  # the public input_blocks.0 was not zero


def test_refuses_code_and_other_layouts(tmp_path, like_dir):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": subprocess.Popen}, evil)
    with pytest.raises(InputError, match="could run code"):
        C.convert_anydoor(evil, tmp_path / "o1", like=like_dir)
    pbe_like = tmp_path / "pbe.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, pbe_like)
    with pytest.raises(InputError, match="not an AnyDoor checkpoint"):
        C.convert_anydoor(pbe_like, tmp_path / "o2", like=like_dir)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_safetensors_input_reads_only_model_keys(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"control_model.a": torch.zeros(2), "optimizer.b": torch.ones(3)}, str(path))
    assert set(C.load_anydoor_checkpoint(path)) == {"control_model.a"}


@pytest.mark.slow
def test_cli_convert_anydoor(tmp_path, like_dir):
    state, _ = public_checkpoint(seed=2)
    ckpt = tmp_path / "a.ckpt"
    torch.save({"state_dict": state}, ckpt)
    cmd = [sys.executable, "-m", "diffcompose", "convert", "anydoor", str(ckpt), str(tmp_path / "out"),
           "--like", str(like_dir)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # exists, no --force
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_optimizer_state_is_never_read(tmp_path):
    """The public file is mostly optimizer state: memory-mapped loading leaves it on disk (a plain
    ``torch.load`` would read all 128 MB of it into memory)."""
    ckpt = tmp_path / "big.ckpt"
    torch.save({"state_dict": {"control_model.a": torch.ones(10)},
                "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(32 * 2**20)}}}]}, ckpt)
    # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS; the peak then
    # counts what the load itself brought into memory.
    script = ("import sys, pathlib\n"
              "from diffcompose.methods.anydoor.convert import load_anydoor_checkpoint\n"
              "def kb(key):\n"
              "    line = [x for x in open('/proc/self/status') if x.startswith(key)][0]\n"
              "    return int(line.split()[1])\n"
              "open('/proc/self/clear_refs', 'w').write('5')\n"
              "before = kb('VmRSS')\n"
              "state = load_anydoor_checkpoint(pathlib.Path(sys.argv[1]))\n"
              "assert list(state) == ['control_model.a'] and float(state['control_model.a'].sum()) == 10\n"
              "print((kb('VmHWM') - before) // 1024)\n")
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to measure the peak")
    run = subprocess.run([sys.executable, "-c", script, str(ckpt)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip()) < 32, f"{run.stdout.strip()} MB read"
