"""Converting the original Paint-by-Example checkpoint layout (synthetic, tiny) into our modules."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.errors import InputError, OutputExistsError  # noqa: E402
from diffcompose.methods.pbe.convert import convert_pbe, load_checkpoint  # noqa: E402
from diffcompose.methods.pbe.tiny import write_tiny_pbe  # noqa: E402

F = torch.nn.functional
RES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
       "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def unet_to_ldm(key: str, layers: int, attn_up: set[int]) -> str:
    """diffusers UNet key -> LDM ``model.diffusion_model`` key (written independently of the converter)."""
    fixed = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for a, b in fixed.items():
        if key.startswith(a + "."):
            return b + key[len(a):]
    res = lambda rest: ".".join([RES.get(rest.split(".")[0], rest.split(".")[0])] + rest.split(".")[1:])  # noqa: E731
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{i * (layers + 1) + j + 1}.0.{res(rest)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        return f"input_blocks.{int(m[1]) * (layers + 1) + int(m[2]) + 1}.1.{m[3]}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{res(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"output_blocks.{int(m[1]) * (layers + 1) + int(m[2])}.0.{res(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        return f"output_blocks.{int(m[1]) * (layers + 1) + int(m[2])}.1.{m[3]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        i = int(m[1])
        return f"output_blocks.{i * (layers + 1) + layers}.{2 if i in attn_up else 1}.conv.{m[2]}"
    raise AssertionError(key)


def vae_to_ldm(key: str, levels: int) -> str:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", key)
    if "mid_block.attentions.0." in key:
        key = key.replace("mid_block.attentions.0.", "mid.attn_1.").replace("group_norm", "norm")
        key = re.sub(r"to_([qkv])\.", r"\1.", key).replace("to_out.0", "proj_out")
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.", key)
    return re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                  lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.", key)


def original_checkpoint(root, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A checkpoint in the original key layout built from the tiny model (random mapper/head weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from diffcompose.methods.pbe.encoder import ExemplarEncoder

    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    vae = AutoencoderKL.from_pretrained(str(root / "vae"))
    L = unet.config.layers_per_block
    attn_up = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    state = {"model.diffusion_model." + unet_to_ldm(k, L, attn_up): v for k, v in unet.state_dict().items()}
    levels = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        if "mid.attn_1" in vae_to_ldm(k, levels) and v.ndim == 2:
            v = v[:, :, None, None]  # the original stores the VAE attention projections as 1x1 convolutions
        state["first_stage_model." + vae_to_ldm(k, levels)] = v
    clip = ExemplarEncoder.from_pretrained(root / "image_encoder").model  # only the vision tower is read
    for k, v in clip.state_dict().items():
        state["cond_stage_model.transformer." + k] = v
    width = clip.config.hidden_size
    rnd = lambda *s: torch.randn(*s, generator=gen) * 0.2  # noqa: E731
    for i in range(2):
        p = f"cond_stage_model.mapper.resblocks.{i}."
        state |= {p + "attn.c_qkv.weight": rnd(3 * width, width), p + "attn.c_qkv.bias": rnd(3 * width),
                  p + "attn.c_proj.weight": rnd(width, width), p + "attn.c_proj.bias": rnd(width),
                  p + "ln_1.weight": 1 + rnd(width), p + "ln_1.bias": rnd(width),
                  p + "ln_2.weight": 1 + rnd(width), p + "ln_2.bias": rnd(width),
                  p + "mlp.c_fc.weight": rnd(4 * width, width), p + "mlp.c_fc.bias": rnd(4 * width),
                  p + "mlp.c_proj.weight": rnd(width, 4 * width), p + "mlp.c_proj.bias": rnd(width)}
    proj = unet.config.cross_attention_dim
    state |= {"cond_stage_model.final_ln.weight": 1 + rnd(width), "cond_stage_model.final_ln.bias": rnd(width),
              "proj_out.weight": rnd(proj, width), "proj_out.bias": rnd(proj), "learnable_vector": rnd(1, 1, proj)}
    return state


def reference_encoder(state: dict[str, torch.Tensor], clip, pixels: torch.Tensor, tokens: torch.Tensor | None = None):
    """The original formulas: GLIDE ResidualAttentionBlock (fused qkv, one head), final_ln, proj_out."""
    x = clip(pixel_values=pixels).pooler_output[:, None] if tokens is None else tokens
    ln = lambda t, p: F.layer_norm(t, t.shape[-1:], state[p + ".weight"], state[p + ".bias"])  # noqa: E731
    lin = lambda t, p: t @ state[p + ".weight"].T + state[p + ".bias"]  # noqa: E731
    for i in range(2):
        p = f"cond_stage_model.mapper.resblocks.{i}."
        qkv = lin(ln(x, p + "ln_1"), p + "attn.c_qkv")
        bs, n_ctx, w3 = qkv.shape
        qkv = qkv.view(bs, n_ctx, 1, w3)  # heads = 1
        q, k, v = torch.split(qkv, w3 // 3, dim=-1)
        scale = 1 / math.sqrt(math.sqrt(w3 // 3))
        weight = torch.einsum("bthc,bshc->bhts", q * scale, k * scale).softmax(dim=-1)
        a = torch.einsum("bhts,bshc->bthc", weight, v).reshape(bs, n_ctx, -1)
        x = x + lin(a, p + "attn.c_proj")
        x = x + lin(F.gelu(lin(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    if tokens is not None:
        return x
    return lin(ln(x, "cond_stage_model.final_ln"), "proj_out")


def fake_class(mp: pytest.MonkeyPatch, qualified: str, base: type = object) -> type:
    """A class importable (for pickling only) under ``qualified``, e.g. a Lightning callback's."""
    import sys
    import types

    module, _, name = qualified.rpartition(".")
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        path = ".".join(parts[:i])
        if path not in sys.modules:
            mp.setitem(sys.modules, path, types.ModuleType(path))
        if i > 1:
            setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[path])
    cls = type(name, (base,), {"__module__": module})
    setattr(sys.modules[module], name, cls)
    return cls


def save_lightning_checkpoint(path, state: dict, extra_callback: str | None = None) -> None:
    """What ``pytorch_lightning==1.4`` writes (the original trained with 1.4.2): the weights plus its bookkeeping.

    Callback states are keyed by the callback's class, hyper-parameters are an ``AttributeDict``,
    a monitored score may be a numpy scalar; the optimizer and LR scheduler states are plain.
    """
    from collections import OrderedDict

    with pytest.MonkeyPatch.context() as mp:
        checkpoint_cb = fake_class(mp, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")
        attribute_dict = fake_class(mp, "pytorch_lightning.utilities.parsing.AttributeDict", dict)
        hparams = attribute_dict(base_learning_rate=1e-5, u_cond_percent=0.2, scale_factor=0.18215)
        callbacks = {checkpoint_cb: {"monitor": "val/loss_simple_ema", "best_model_score": np.float64(0.0912),
                                     "best_model_path": "logs/checkpoints/epoch=000039.ckpt",
                                     "current_score": torch.tensor(0.0931), "dirpath": "logs/checkpoints"}}
        if extra_callback:
            callbacks[fake_class(mp, extra_callback)] = {"x": 1}
        torch.save({
            "epoch": 39, "global_step": 1_530_000, "pytorch-lightning_version": "1.4.2",
            "state_dict": OrderedDict(state), "callbacks": callbacks,
            "optimizer_states": [{"state": {0: {"step": 3, "exp_avg": torch.zeros(2), "exp_avg_sq": torch.zeros(2)}},
                                  "param_groups": [{"lr": 3.2e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                                                    "weight_decay": 0.01, "amsgrad": False, "params": [0]}]}],
            "lr_schedulers": [{"base_lrs": [3.2e-4], "last_epoch": 1_530_000, "_step_count": 1_530_001,
                               "verbose": False, "_last_lr": [3.2e-4], "lr_lambdas": [{}]}],
            "hparams_name": "kwargs", "hyper_parameters": hparams,
        }, path)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("convert")
    tiny = write_tiny_pbe(base / "tiny", seed=5)
    state = original_checkpoint(tiny, torch.Generator().manual_seed(0))
    ckpt = base / "model.ckpt"
    save_lightning_checkpoint(ckpt, state)
    out = convert_pbe(ckpt, base / "out", like=tiny)
    return tiny, state, out


def test_reads_a_lightning_1_4_checkpoint_safely(converted):
    _, state, out = converted
    loaded = load_checkpoint(out.parent / "model.ckpt")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_refuses_other_objects_naming_them(tmp_path, converted, capsys):
    import os

    from diffcompose.cli.main import main

    _, state, _ = converted
    small = dict(list(state.items())[:3])
    odd = tmp_path / "odd.ckpt"
    save_lightning_checkpoint(odd, small, extra_callback="mypkg.hooks.Telemetry")
    with pytest.raises(InputError, match=r"mypkg\.hooks\.Telemetry.*\(refused\)"):
        load_checkpoint(odd)

    class Payload:  # a file that would run a command if unpickled without restrictions
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": small, "callbacks": {"x": Payload()}}, evil)
    assert main(["convert", "pbe", str(evil), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused" in err and f"{os.system.__module__}.system" in err
    assert "weights_only=False" not in err and "trust" not in err
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()


def test_encoder_matches_original_formulas(converted):
    from diffcompose.methods.pbe.encoder import ExemplarEncoder

    tiny, state, out = converted
    enc = ExemplarEncoder.from_pretrained(out / "image_encoder").eval()
    assert len(enc.mapper.blocks) == 2
    clip = ExemplarEncoder.from_pretrained(tiny / "image_encoder").model.eval()
    pixels = torch.randn(3, 3, enc.image_size, enc.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, ref = enc(pixels), reference_encoder(state, clip, pixels)
        assert ours.shape == (3, 1, enc.proj_size)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        # With one token attention is the identity on v: check q/k too on a 5-token sequence.
        tokens = torch.randn(2, 5, enc.config.hidden_size, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(enc.mapper(tokens), reference_encoder(state, clip, pixels, tokens),
                                   rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.uncond_vector, state["learnable_vector"])


def test_unet_and_vae_round_trip(converted):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tiny, _, out = converted
    for part, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        a, b = cls.from_pretrained(str(tiny / part)).state_dict(), cls.from_pretrained(str(out / part)).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_converted_unet_and_vae_compute_what_the_source_did(converted):
    """Outputs, not only weights: the UNet on a 9-channel input and context, the VAE both ways."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tiny, _, out = converted
    g = torch.Generator().manual_seed(3)
    src_unet, new_unet = (UNet2DConditionModel.from_pretrained(str(d / "unet")).eval() for d in (tiny, out))
    x = torch.randn(2, 9, 16, 16, generator=g)
    ctx = torch.randn(2, 1, src_unet.config.cross_attention_dim, generator=g)
    src_vae, new_vae = (AutoencoderKL.from_pretrained(str(d / "vae")).eval() for d in (tiny, out))
    image = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        expected = src_unet(x, torch.tensor([10, 700]), encoder_hidden_states=ctx).sample
        got = new_unet(x, torch.tensor([10, 700]), encoder_hidden_states=ctx).sample
        assert expected.abs().mean() > 1e-3
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(new_vae.encode(image).latent_dist.mean, src_vae.encode(image).latent_dist.mean)
        z = src_vae.encode(image).latent_dist.mean
        torch.testing.assert_close(new_vae.decode(z).sample, src_vae.decode(z).sample)


def test_converted_model_paints(converted):
    from diffcompose.methods.pbe.engine import PaintByExampleEngine

    _, _, out = converted
    image = np.full((96, 80, 3), 120, np.uint8)
    mask = np.zeros((96, 80), bool)
    mask[20:60, 20:50] = True
    res = PaintByExampleEngine(device="cpu", model=str(out)).paint(image, mask, np.zeros((50, 40, 3), np.uint8), steps=2)
    assert np.asarray(res).shape == image.shape


def test_refuses_unsafe_and_foreign_checkpoints(tmp_path, converted):
    import pickle

    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"state_dict": {}, "x": slice(1, 2, print)}))
    with pytest.raises(InputError, match="weights-only"):
        load_checkpoint(bad)
    other = tmp_path / "sd.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, other)
    with pytest.raises(InputError, match="not a Paint-by-Example checkpoint"):
        convert_pbe(other, tmp_path / "o")
    _, _, out = converted
    with pytest.raises(OutputExistsError):
        convert_pbe(other, out)


def test_force_never_deletes_what_the_tool_did_not_write(tmp_path, converted, monkeypatch):
    """OUT_DIR holding the checkpoint, the working directory, or a folder of user files is refused."""
    from diffcompose.cli.main import main

    tiny, _, out = converted
    ckpt = out.parent / "model.ckpt"
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("mine")
    inside = models / "model.ckpt"
    inside.write_bytes(ckpt.read_bytes())
    users = tmp_path / "work"
    users.mkdir()
    (users / "photo.jpg").write_bytes(b"precious")
    monkeypatch.chdir(users)
    cases = {
        "contains the input": ([str(inside), str(models), "--force"], "contains the input"),
        "working directory": ([str(ckpt), ".", "--force"], "working directory"),
        "parent of cwd": ([str(ckpt), str(tmp_path), "--force"], "working directory or one of its parents"),
        "not ours": ([str(ckpt), str(models), "--force"], "not a model folder written by diffcompose"),
        "a file": ([str(ckpt), str(users / "photo.jpg"), "--force"], "is a file"),
    }
    before = {p: p.read_bytes() for p in (models / "notes.txt", inside, users / "photo.jpg")}
    for name, (argv, fragment) in cases.items():
        if name == "not ours":
            inside.rename(tmp_path / "moved.ckpt")  # no input inside: only the marker rule protects the folder
        assert main(["convert", "pbe", *argv]) == 2, name
        if name == "not ours":
            (tmp_path / "moved.ckpt").rename(inside)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in models.iterdir()) == ["model.ckpt", "notes.txt"]
    assert sorted(p.name for p in users.iterdir()) == ["photo.jpg"]
    # a folder this tool wrote is replaced in place with --force, and nothing is left beside it
    again = convert_pbe(ckpt, out, like=tiny, force=True)
    assert (again / ".diffcompose-model").is_file() and (again / "unet").is_dir()
    from diffcompose.outdir import current_umask

    assert again.stat().st_mode & 0o777 == 0o777 & ~current_umask()
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_weights_that_do_not_fit_are_one_line_naming_the_weight() -> None:
    """The converters' loading check (PbE and AnyDoor share it): misshapen, missing or unexpected weights."""
    import torch

    from diffcompose.methods.pbe.convert import strict_load

    module = torch.nn.Linear(3, 2)
    with pytest.raises(InputError, match=r"^unet weights do not fit its configuration: .*weight") as exc:
        strict_load(module, {"weight": torch.zeros(5, 3), "bias": torch.zeros(2)}, "unet")
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match=r"1 missing .*'bias'.*1 unexpected .*'extra'"):
        strict_load(module, {"weight": torch.zeros(2, 3), "extra": torch.zeros(1)}, "unet")
    strict_load(module, {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, "unet")
    assert module.weight.sum().item() == 6.0


def test_a_folder_built_beside_its_target_goes_in_whole_or_not_at_all(tmp_path) -> None:
    """outdir.building, which every converter, exporter, batch and evaluate write through."""
    from diffcompose.outdir import MARKER, building

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with building(target, "test") as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("stopped mid-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "old.txt").read_text() == "old"
    with building(target, "test") as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "new.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
