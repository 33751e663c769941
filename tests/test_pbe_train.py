"""Training smoke test: a tiny model overfits a few real photos and resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")

from conftest import testdata_cases as cases_of  # noqa: E402
from diffcompose.errors import InputError  # noqa: E402
from diffcompose.training.config import config_from_dict, load_config  # noqa: E402
from diffcompose.training.trainer import train  # noqa: E402


@pytest.fixture
def manifest(tmp_path, testdata):
    cases = [c for c in cases_of("subjects") if "mask_u2net" in c["files"]][:3]
    lines = [json.dumps({"image": str(c["files"]["image"]), "mask": str(c["files"]["mask_u2net"])}) for c in cases]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "train.jsonl"


@pytest.fixture(scope="module")
def sd_init(tmp_path_factory):
    """A very small SD text-to-image directory (4-channel UNet): training widens it to 9 channels."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from diffcompose.models.tiny import tiny_scheduler_config, tiny_unet_config, tiny_vae_config

    root = tmp_path_factory.mktemp("init")
    torch.manual_seed(0)
    UNet2DConditionModel(**tiny_unet_config(
        block_out_channels=(16, 32), layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8)).save_pretrained(root / "unet")
    AutoencoderKL(**tiny_vae_config()).save_pretrained(root / "vae")
    DDIMScheduler(**tiny_scheduler_config()).save_pretrained(root / "scheduler")
    return root


def config(manifest, out, init, **train):
    return config_from_dict({
        "data": {"manifest": str(manifest), "resolution": 64, "num_workers": 0},
        "model": {"init": str(init), "image_encoder": "tiny"},
        "train": {"output_dir": str(out), "batch_size": 2, "learning_rate": 2e-3, "warmup_steps": 3,
                  "cond_dropout": 0.2, "ema_decay": 0.9, "seed": 3, **train},
    })


def test_overfits_and_resumes_with_the_same_curve(manifest, sd_init, tmp_path):
    first = train(config(manifest, tmp_path / "a", sd_init, max_steps=32, checkpoint_every=24))
    assert len(first) == 32 and all(np.isfinite(first))
    assert np.mean(first[-8:]) < 0.6 * np.mean(first[:8]), first
    assert (tmp_path / "a" / "checkpoint-0000024" / "model.safetensors").is_file()

    again = train(config(manifest, tmp_path / "b", sd_init, max_steps=32,
                         resume=str(tmp_path / "a" / "checkpoint-0000024")))
    np.testing.assert_allclose(again, first, rtol=1e-4, atol=1e-5)

    # the export is a model directory the paint engine loads
    from diffcompose.methods.pbe.components import load_pbe
    import torch

    c = load_pbe(tmp_path / "b" / "final", torch.device("cpu"), torch.float32)
    assert c.unet.config.in_channels == 9


def test_config_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {manifest: x.jsonl}\ntrain: {learning_rate: 2}\n")
    with pytest.raises(InputError, match="learning"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(InputError, match="unknown key"):
        config_from_dict({"data": {"manifest": "x", "resolutoin": 64}})
    with pytest.raises(InputError, match="manifest"):
        config_from_dict({"train": {}})
