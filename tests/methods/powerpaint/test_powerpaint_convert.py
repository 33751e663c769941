"""``convert powerpaint``: the public v1 and v2 checkpoint files, made from tiny models in their
published layout (no weights reach these machines), convert into folders the engine loads with
the same weights and task vectors; anything else is one line.

The public text encoder files are written here from a written-out key list (the wrapped embedding
layer's ``wrapped.weight`` and ``trainable_embeddings.P_*``, with the ``text_model.`` prefix the
published files carry); with the mirror, also from the public ``add_tokens`` itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import powerpaint_public
from powerpaint_public import plain_tokenizer, public_text_encoder

engine, public, tiny_root = powerpaint_public.engine, powerpaint_public.public, powerpaint_public.tiny_root  # the shared fixtures
from diffcompose.errors import InputError
from diffcompose.methods.powerpaint.convert import V1_TEXT, V1_UNET, V2_BASE, V2_BRUSHNET, V2_TEXT, convert_checkpoint
from diffcompose.methods.powerpaint.prompts import TASK_TOKENS, VECTORS_PER_TOKEN, task_prompts


def public_text_state(ours) -> dict[str, torch.Tensor]:
    """Our task text encoder as the public files store it (written-out key families)."""
    weight = ours.get_input_embeddings().weight.detach()
    vocab = weight.shape[0] - len(TASK_TOKENS) * VECTORS_PER_TOKEN
    out = {}
    for key, value in ours.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        if key.endswith("embeddings.token_embedding.weight"):
            out["text_model.embeddings.token_embedding.wrapped.weight"] = value[:vocab].clone()
        else:
            out[key] = value.clone()
    for i, name in enumerate(TASK_TOKENS):
        rows = weight[vocab + i * VECTORS_PER_TOKEN: vocab + (i + 1) * VECTORS_PER_TOKEN].clone()
        out[f"text_model.embeddings.token_embedding.trainable_embeddings.{name}"] = rows
    return out


def _contiguous(state):
    return {k: v.contiguous() for k, v in state.items()}


@pytest.fixture(scope="module")
def like_v1(engine, tmp_path_factory) -> Path:
    """An SD-inpainting folder of the tiny model's geometry and vocabulary, without the task words."""
    src = engine.model_for(1).sd.root
    like = tmp_path_factory.mktemp("like") / "sd-inpainting"
    for part in ("unet", "vae", "text_encoder", "scheduler"):
        shutil.copytree(src / part, like / part)
    plain_tokenizer(src / "tokenizer", like / "tokenizer")
    shutil.copy(src / "model_index.json", like / "model_index.json")
    return like


def public_v1(engine, root: Path, text_state=None) -> Path:
    pp = engine.model_for(1)
    (root / "unet").mkdir(parents=True)
    (root / "text_encoder").mkdir()
    save_file(_contiguous(pp.sd.unet.state_dict()), str(root / V1_UNET))
    save_file(_contiguous(text_state or public_text_state(pp.task_encoder)), str(root / V1_TEXT))
    return root


def public_v2(engine, root: Path, tmp: Path) -> Path:
    pp = engine.model_for(2)
    (root / "PowerPaint_Brushnet").mkdir(parents=True)
    save_file(_contiguous(pp.brushnet.state_dict()), str(root / V2_BRUSHNET))
    torch.save(public_text_state(pp.task_encoder), str(root / V2_TEXT))
    base = root / V2_BASE
    for part in ("unet", "vae", "text_encoder", "scheduler"):
        shutil.copytree(pp.sd.root / part, base / part)
    plain_tokenizer(pp.sd.root / "tokenizer", base / "tokenizer")
    shutil.copy(pp.sd.root / "model_index.json", base / "model_index.json")
    return root


def _same_task_embeddings(engine, out: Path, version: int) -> None:
    from diffcompose.methods.powerpaint.engine import PowerPaintEngine

    converted = PowerPaintEngine(device="cpu", model=str(out)).load()
    mine, theirs = engine.model_for(version), converted.model_for(version)
    for task, t in (("context", 1.0), ("shape", 0.3), ("object", 1.0)):
        prompts = task_prompts(task, "a red chair", "", version)
        assert torch.equal(engine.task_context(mine, prompts, t, True), converted.task_context(theirs, prompts, t, True))
    unet = mine.sd.unet.state_dict()
    assert all(torch.equal(v, unet[k]) for k, v in theirs.sd.unet.state_dict().items())
    if version == 2:
        branch = mine.brushnet.state_dict()
        assert all(torch.equal(v, branch[k]) for k, v in theirs.brushnet.state_dict().items())


@pytest.mark.slow
def test_v1_checkpoint_converts_and_loads(engine, like_v1, tmp_path) -> None:
    from diffcompose.cli.main import main

    root = public_v1(engine, tmp_path / "ppt-v1")
    out = tmp_path / "out"  # through the generated command: diffcompose convert powerpaint CKPT OUT --like DIR
    assert main(["convert", "powerpaint", str(root / V1_UNET), str(out), "--like", str(like_v1)]) == 0
    _same_task_embeddings(engine, out, 1)
    from diffcompose.models.hub import declared_classes, engine_class

    assert declared_classes(out) == {engine_class("powerpaint")}  # the model picker offers it to powerpaint only


@pytest.mark.slow
def test_v2_checkpoint_converts_and_loads(engine, tmp_path) -> None:
    root = public_v2(engine, tmp_path / "ppt-v2", tmp_path)
    out = convert_checkpoint(root / V2_BRUSHNET, tmp_path / "out")
    _same_task_embeddings(engine, out, 2)


def test_public_v1_folder_loads_directly_with_its_base(engine, like_v1, tmp_path, monkeypatch) -> None:
    """The default model is the public v1 folder: the engine converts it in memory on its base."""
    from diffcompose.methods.powerpaint import weights
    from diffcompose.methods.powerpaint.engine import PowerPaintEngine

    monkeypatch.setattr(weights, "V1_BASE", str(like_v1))
    root = public_v1(engine, tmp_path / "ppt-v1")
    direct = PowerPaintEngine(device="cpu", model=str(root)).load()
    prompts = task_prompts("context", "", "", 1)
    assert torch.equal(direct.task_context(direct.model_for(1), prompts, 1.0, True),
                       engine.task_context(engine.model_for(1), prompts, 1.0, True))


def test_the_public_add_tokens_files_read_the_same(public, engine, tmp_path) -> None:
    """A text encoder wrapped by the public ``add_tokens`` (its state dict is the published file's
    keys, less the prefix transformers 5 dropped) splits into our vectors exactly."""
    from diffcompose.methods.powerpaint.convert import split_text_encoder

    pp = engine.model_for(1)
    _, text = public_text_encoder(public, pp.task_encoder, plain_tokenizer(pp.sd.root / "tokenizer", tmp_path))
    state = {"text_model." + k: v for k, v in text.state_dict().items()}
    plain, vectors = split_text_encoder(state, "public")
    ours_plain, ours_vectors = split_text_encoder(public_text_state(pp.task_encoder), "ours")
    assert plain.keys() == ours_plain.keys() and all(torch.equal(plain[k], ours_plain[k]) for k in plain)
    assert all(torch.equal(vectors[k], ours_vectors[k]) for k in TASK_TOKENS)


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update({"text_model.extra_head.weight": torch.zeros(1)}), "unexpected key 'text_model.extra_head"),
    (lambda s: s.pop("text_model.embeddings.token_embedding.trainable_embeddings.P_shape"), "no learned vectors for P_shape"),
    (lambda s: s.update({"text_model.embeddings.token_embedding.trainable_embeddings.P_foo": torch.zeros(10, 32)}),
     "unknown task token 'P_foo'"),
    (lambda s: s.update({"text_model.embeddings.token_embedding.weight":
                         s.pop("text_model.embeddings.token_embedding.wrapped.weight")}), "plain CLIP text encoder"),
])
def test_text_encoder_key_families_are_checked(engine, change, message) -> None:
    from diffcompose.methods.powerpaint.convert import split_text_encoder

    state = public_text_state(engine.model_for(1).task_encoder)
    change(state)
    with pytest.raises(InputError, match=message) as err:
        split_text_encoder(state, "ckpt")
    assert "\n" not in str(err.value)


def test_unet_keys_must_fit(engine, like_v1, tmp_path) -> None:
    pp = engine.model_for(1)
    state = dict(pp.sd.unet.state_dict())
    state["controlnet_cond_embedding.weight"] = torch.zeros(1)
    root = public_v1(engine, tmp_path / "ppt-v1")
    save_file(_contiguous(state), str(root / V1_UNET))
    with pytest.raises(InputError, match="UNet.*1 unexpected") as err:
        convert_checkpoint(root / V1_UNET, tmp_path / "out", like=like_v1)
    assert "\n" not in str(err.value)


def test_other_files_and_missing_like_are_one_line(engine, tmp_path) -> None:
    root = public_v1(engine, tmp_path / "ppt-v1")
    with pytest.raises(InputError, match="needs --like"):
        convert_checkpoint(root / V1_UNET, tmp_path / "out")
    with pytest.raises(InputError, match="neither PowerPaint v1"):
        convert_checkpoint(root / V1_TEXT, tmp_path / "out2")
