"""Training: a tiny model overfits a few real photos, resumes exactly (fp32 and fp16's loss scale),
and the optimisation, dropout and initialisation follow the original recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from conftest import testdata_cases as cases_of  # noqa: E402
from diffcompose.errors import InputError  # noqa: E402
from diffcompose.methods.pbe.config import TrainConfig, config_from_dict, load_config  # noqa: E402
from diffcompose.methods.pbe.train import condition_dropout, train  # noqa: E402
from diffcompose.training.loop import warmup_factor  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add contention (conftest)


@pytest.fixture
def manifest(tmp_path, testdata):
    cases = [c for c in cases_of("subjects") if "mask_u2net" in c["files"]][:3]
    lines = [json.dumps({"image": str(c["files"]["image"]), "mask": str(c["files"]["mask_u2net"])}) for c in cases]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "train.jsonl"


def write_sd_init(root: Path, in_channels: int = 4) -> Path:
    """A very small SD directory: text-to-image (4 channels; training widens it to 9) or inpainting (9)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from diffcompose.models.tiny import tiny_scheduler_config, tiny_unet_config, tiny_vae_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        UNet2DConditionModel(**tiny_unet_config(
            in_channels=in_channels, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8)).save_pretrained(root / "unet")
        AutoencoderKL(**tiny_vae_config()).save_pretrained(root / "vae")
    DDIMScheduler(**tiny_scheduler_config()).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def sd_init(tmp_path_factory):
    return write_sd_init(tmp_path_factory.mktemp("init"))


def config(manifest, out, init, **train):
    return config_from_dict({
        "data": {"manifest": str(manifest), "resolution": 64, "num_workers": 0},
        "model": {"init": str(init), "image_encoder": "tiny"},
        "train": {"output_dir": str(out), "batch_size": 2, "learning_rate": 2e-3, "warmup_steps": 3,
                  "cond_dropout": 0.2, "ema_decay": 0.9, "seed": 3, "gradient_checkpointing": False, **train},
    })


@pytest.mark.slow
def test_overfits_and_resumes_with_the_same_curve(manifest, sd_init, tmp_path):
    first = train(config(manifest, tmp_path / "a", sd_init, max_steps=32, checkpoint_every=8))
    assert len(first) == 32 and all(np.isfinite(first))
    assert np.mean(first[-8:]) < 0.6 * np.mean(first[:8]), first
    ckpt = tmp_path / "a" / "checkpoint-0000008"
    assert (ckpt / "model.safetensors").is_file()

    again = train(config(manifest, tmp_path / "b", sd_init, max_steps=32, resume=str(ckpt)))
    assert again[:8] == first[:8]  # the first 8 come from the checkpoint: compare the 24 recomputed after it
    np.testing.assert_allclose(again[8:], first[8:], rtol=1e-4, atol=1e-5)

    # the export is a model directory the paint engine loads
    from diffcompose.methods.pbe.components import load_pbe

    c = load_pbe(tmp_path / "b" / "final", torch.device("cpu"), torch.float32)
    assert c.unet.config.in_channels == 9


@pytest.fixture
def cpu_grad_scaler(monkeypatch):
    """fp16 on CPU, emulated: accelerate gives CPU runs no gradient scaler, so give it torch's CPU one.

    The loss scale starts near float32's limit and grows every 2 steps: steps overflow and are
    skipped (and the scale backs off) now and then, so the scaler's state shapes the loss curve.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # the process-wide state remembers an earlier run's precision
    init = Accelerator.__init__

    def with_scaler(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if self.mixed_precision == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=2)
            self.native_amp = True  # and autocast to float16, as on a GPU

    monkeypatch.setattr(Accelerator, "__init__", with_scaler)
    yield
    AcceleratorState._reset_state()


@pytest.mark.slow
def test_fp16_resume_restores_the_loss_scale(manifest, sd_init, tmp_path, cpu_grad_scaler):
    kw = dict(max_steps=16, checkpoint_every=5, mixed_precision="fp16", ema_decay=None)
    first = train(config(manifest, tmp_path / "a", sd_init, **kw))
    ckpt = tmp_path / "a" / "checkpoint-0000005"
    state = json.loads((ckpt / "state.json").read_text())
    final = json.loads((tmp_path / "a" / "checkpoint-0000016" / "state.json").read_text())
    assert final["grad_scaler"]["scale"] < 2.0 ** (16 + 16 // 2)  # it backed off: some steps overflowed

    again = train(config(manifest, tmp_path / "b", sd_init, resume=str(ckpt), **kw))
    np.testing.assert_allclose(again[5:], first[5:], rtol=1e-4, atol=1e-5)

    # the scale does matter: restarted at its initial value, the resumed run skips other steps
    del state["grad_scaler"]
    (ckpt / "state.json").write_text(json.dumps(state))
    fresh = train(config(manifest, tmp_path / "c", sd_init, resume=str(ckpt), **kw))
    assert not np.allclose(fresh[5:], first[5:], rtol=1e-4, atol=1e-5)


def test_sd_inpainting_init_reorders_and_inverts_the_mask_channel(tmp_path):
    """SD inpainting: [z_t, mask (1 = hole), z_masked]; ours: [z_t, z_masked, keep = 1 - mask]."""
    from diffusers import UNet2DConditionModel

    from diffcompose.methods.pbe.train_model import build_model

    root = write_sd_init(tmp_path / "inpaint", in_channels=9)  # no image_encoder/: auto means sd-inpainting
    original = UNet2DConditionModel.from_pretrained(str(root / "unet")).conv_in
    model, *_ = build_model(str(root), "auto", "tiny", seed=0)
    g = torch.Generator().manual_seed(0)
    z, z_masked = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    hole = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    with torch.no_grad():
        theirs = original(torch.cat([z, hole, z_masked], 1))
        ours = model.unet.conv_in(torch.cat([z, z_masked, 1 - hole], 1))
    # identical away from the 1-pixel border, where the 3x3 convolution's zero padding breaks w*h = w - w*keep
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], theirs[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert model.unet.config.in_channels == 9


def test_optimisation_defaults_are_the_original():
    cfg = TrainConfig(manifest="x.jsonl")
    assert (cfg.warmup_steps, cfg.max_grad_norm, cfg.ema_decay, cfg.learning_rate, cfg.weight_decay) == \
        (10000, 0.0, None, 1e-5, 0.01)
    assert (cfg.cond_dropout, cfg.cond_dropout_per, cfg.bezier_p, cfg.max_extend) == (0.2, "batch", 0.5, 0.4)
    # the original's LambdaLinearScheduler: 1e-6 of the rate at step 0, linear to 1 at 10,000 steps
    assert warmup_factor(0, 10000) == pytest.approx(1e-6)
    assert warmup_factor(5000, 10000) == pytest.approx(0.5, abs=1e-6)
    assert warmup_factor(10000, 10000) == warmup_factor(10**6, 10000) == 1.0
    assert warmup_factor(0, 0) == 1.0
    import yaml

    example = config_from_dict(yaml.safe_load((REPO / "src" / "diffcompose" / "methods" / "pbe" / "train.example.yaml").read_text()))
    assert (example.warmup_steps, example.max_grad_norm, example.cond_dropout_per) == (10000, 0.0, "batch")


def test_condition_dropout_is_per_batch():
    draws = [condition_dropout(4, 0.3, "batch", torch.Generator().manual_seed(s)) for s in range(400)]
    assert all(d.all() or not d.any() for d in draws)  # the whole micro-batch at once, as the original
    assert 0.24 < np.mean([bool(d[0]) for d in draws]) < 0.36
    mixed = [condition_dropout(4, 0.3, "sample", torch.Generator().manual_seed(s)) for s in range(50)]
    assert any(d.any() and not d.all() for d in mixed)


def test_config_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {manifest: x.jsonl}\ntrain: {learning_rate: 2}\n")
    with pytest.raises(InputError, match="learning"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(InputError, match="unknown key"):
        config_from_dict({"data": {"manifest": "x", "resolutoin": 64}})
    with pytest.raises(InputError, match="manifest"):
        config_from_dict({"train": {}})
    with pytest.raises(InputError, match="cond.dropout.per"):
        config_from_dict({"data": {"manifest": "x"}, "train": {"cond_dropout_per": "epoch"}})


def test_checkpoints_are_replaced_whole_and_unfinished_ones_are_never_resumed(tmp_path):
    import torch

    from diffcompose.training.loop import latest_checkpoint, write_checkpoint

    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p])
    write_checkpoint(tmp_path / "checkpoint-0000002", {"w": torch.ones(3)}, opt, None, {"step": 2})
    # A newer step whose writing stopped after state.json but before the swap (the .tmp beside it) and
    # a leftover of another name are not checkpoints to resume from.
    write_checkpoint(tmp_path / "checkpoint-0000004", {"w": torch.ones(3)}, opt, None, {"step": 4})
    (tmp_path / "checkpoint-0000004").rename(tmp_path / "checkpoint-0000009.tmp")
    (tmp_path / "checkpoint-0000007-copy").mkdir()
    (tmp_path / "checkpoint-0000007-copy" / "state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-0000002"
    # Writing the same step again replaces its folder, and leaves the other names alone.
    write_checkpoint(tmp_path / "checkpoint-0000002", {"w": torch.full((3,), 2.0)}, opt, None, {"step": 2})
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "checkpoint-0000002" / "model.safetensors"))["w"].tolist() == [2.0] * 3
    assert sorted(q.name for q in tmp_path.iterdir()) == ["checkpoint-0000002", "checkpoint-0000007-copy",
                                                           "checkpoint-0000009.tmp"]
