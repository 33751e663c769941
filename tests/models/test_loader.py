"""The real loading code on a tiny model directory written to disk; its one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.errors import WeightsMissingError  # noqa: E402
from diffcompose.models.loader import load_adapter, load_sd, load_vgg, resolve_sd  # noqa: E402
from diffcompose.models.tiny import write_tiny_sd  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_sd(tmp_path_factory.mktemp("models") / "tiny", tokenizer_source=None)


def test_tiny_directory_loads_through_the_real_loader(tiny_dir: Path) -> None:
    names = {p.relative_to(tiny_dir).as_posix() for p in tiny_dir.rglob("*") if p.is_file()}
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "scheduler/scheduler_config.json", "vgg/model.safetensors"} <= names
    root = resolve_sd(str(tiny_dir))
    sd = load_sd(root, CPU, torch.float32)
    assert type(sd.unet).__name__ == "UNet2DConditionModel" and sd.unet.config.layers_per_block == 2
    assert sd.prediction_type == "epsilon" and sd.latent_scale == pytest.approx(0.18215) and sd.is_tiny
    assert not any(p.requires_grad for p in sd.unet.parameters()) and not sd.unet.training
    ids = sd.tokenizer("a photo", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == sd.tokenizer.bos_token_id
    # Loaded once per engine: the manager hands back the same engine (and modules) for the same key,
    # and unloading frees them.
    from diffcompose import EngineManager

    manager = EngineManager()
    engine = manager.get("freecompose", device="cpu", model=str(tiny_dir))
    unet = engine.sd.unet
    assert manager.get("freecompose", device="cpu", model=str(tiny_dir)).sd.unet is unet
    assert engine.memory_bytes() >= sum(p.numel() * 4 for p in unet.parameters())
    manager.unload(engine)
    assert not engine.loaded and engine.memory_bytes() == 0 and not hasattr(engine, "sd")
    adapter = load_adapter(root / "t2i_adapter_sketch", CPU, torch.float32)
    feats = adapter(torch.zeros(1, 1, 64, 128))
    assert [f.shape[1] for f in feats] == list(sd.unet.config.block_out_channels)
    assert load_vgg(root / "vgg", CPU, torch.float32).widths[0] > 0


def test_shared_clip_tokenizer_is_used_when_present(tmp_path: Path, clip_tokenizer_dir: Path) -> None:
    from diffcompose.models.tiny import write_tiny_tokenizer
    from transformers import CLIPTokenizer

    n = write_tiny_tokenizer(tmp_path, clip_tokenizer_dir)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    ids = tok("a photo of the cat").input_ids
    assert n > 514 and len(ids) < len("a photo of the cat")  # real BPE merges in use


def test_incomplete_directory_is_one_clear_line(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(WeightsMissingError) as err:
        resolve_sd(str(broken))
    msg = str(err.value)
    assert "\n" not in msg and "unet/diffusion_pytorch_model.safetensors" in msg and "scheduler/" in msg
    assert "--model DIR" in msg and "--engine classical" in msg
    with pytest.raises(WeightsMissingError, match="not found"):
        resolve_sd(str(tmp_path / "nowhere"))


def test_unreachable_hub_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as err:
        resolve_sd("nobody-here/no-such-model")
    msg = str(err.value)
    assert "\n" not in msg and "no-such-model" in msg and "--model DIR" in msg and "--engine classical" in msg
    with pytest.raises(WeightsMissingError, match="T2I-Adapter"):
        load_adapter("nobody-here/no-such-adapter", CPU, torch.float32)
