"""Training and the sampler feed the UNet the same input for the same sample.

A tiny model trains a few steps and is exported; then one sample goes once through the
training loss and once through the paint engine (on the exported model), and the UNet
inputs both built are compared: the masked-image latent, the keep mask (polarity, latent
resampling) and their channel positions, and the reference's context token.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

from diffcompose.models import codec  # noqa: E402
from test_pbe_train import config, write_sd_init  # noqa: E402

RES = 64
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add contention (conftest)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, photo_module, one_thread):
    """A tiny model trained 3 steps from a text-to-image init (so its mask channels are no longer zero)."""
    from diffcompose.methods.pbe.train import train

    base = tmp_path_factory.mktemp("agree")
    Image.fromarray(photo_module).save(base / "photo.png")
    (base / "train.jsonl").write_text(json.dumps({"image": "photo.png", "boxes": [[150, 40, 340, 260]]}) + "\n")
    train(config(base / "train.jsonl", base / "run", write_sd_init(base / "init"), max_steps=3, batch_size=1,
                 learning_rate=1e-3, warmup_steps=0, ema_decay=None))
    return base


@pytest.fixture(scope="module")
def photo_module():
    from skimage import data

    return data.astronaut()


@pytest.fixture
def posterior_mean(monkeypatch):
    """Both sides draw a VAE posterior sample from their own generator: compare the means instead."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)


def capture(module: torch.nn.Module, into: list):
    def hook(_, args, kwargs):
        into.append((args[0].detach().clone(), kwargs["encoder_hidden_states"].detach().clone()))

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def one_sample(trained, image_size: int):
    """Sample 0 of the training data, with its hole binarised (a user's mask is binary)."""
    from diffcompose.methods.pbe.data import SelfReferenceDataset, read_records

    ds = SelfReferenceDataset(read_records(trained / "train.jsonl"), resolution=RES, reference_size=image_size, seed=3)
    image, hole, reference = ds.sample(0)
    hole = hole >= 0.5
    assert 0.05 < hole.mean() < 0.95
    return image, hole, reference


def test_sampler_feeds_the_unet_what_training_fed_it(trained, posterior_mean):
    from diffusers import DDPMScheduler

    from diffcompose.methods.pbe.engine import PaintByExampleEngine
    from diffcompose.methods.pbe.reference import normalize
    from diffcompose.methods.pbe.train import _loss
    from diffcompose.methods.pbe.train_model import build_model

    final = trained / "run" / "final"
    model, vae, sched_config, _ = build_model(str(final), "pbe", "tiny", seed=0)
    model.eval()
    assert model.unet.conv_in.weight[:, 4:].abs().max() > 0  # trained: the condition channels are in use
    image, hole, reference = one_sample(trained, model.encoder.image_size)

    seen_train: list = []
    handle = capture(model.unet, seen_train)
    batch = {"image": codec.images_to_tensor(image), "mask": codec.mask_to_tensor(hole),
             "reference": torch.from_numpy(normalize(reference))[None]}
    with torch.no_grad():
        _loss(model, vae, DDPMScheduler.from_config(sched_config), batch, torch.Generator().manual_seed(0),
              codec.latent_scale(vae), 0.0, torch.float32)
    handle.remove()

    engine = PaintByExampleEngine(device="cpu", model=str(final)).load()
    seen_paint: list = []
    handle = capture(engine.c.unet, seen_paint)
    engine.paint(image, hole, reference, steps=1, guidance_scale=1.0, crop=False, resolution=RES, paste_back=False,
                 seed=0)
    handle.remove()

    (x_train, ctx_train), (x_paint, ctx_paint) = seen_train[0], seen_paint[0]
    assert x_train.shape == x_paint.shape == (1, 9, RES // 8, RES // 8)
    # [z_t | z_masked | keep]: everything but the noisy latent is the same
    torch.testing.assert_close(x_paint[:, 4:], x_train[:, 4:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ctx_paint, ctx_train, rtol=1e-5, atol=1e-5)
    # and the trained weights came through the export: the same input gives the same prediction
    t = torch.tensor([500])
    with torch.no_grad():
        torch.testing.assert_close(engine.c.unet(x_paint, t, encoder_hidden_states=ctx_paint).sample,
                                   model.unet(x_paint, t, encoder_hidden_states=ctx_paint).sample)

    # absolute meaning, not only agreement: channel 8 is the keep mask (1 = keep), bilinearly
    # resampled as the original; channels 4-7 the latent of the image with the hole at zero
    keep = 1.0 - torch.nn.functional.interpolate(codec.mask_to_tensor(hole), size=(RES // 8, RES // 8),
                                                 mode="bilinear", align_corners=False)
    torch.testing.assert_close(x_train[:, 8:], keep)
    masked = codec.images_to_tensor(image) * codec.mask_to_tensor(~hole)
    torch.testing.assert_close(x_train[:, 4:8], codec.encode(engine.c.vae, masked), rtol=1e-5, atol=1e-5)


def test_training_drops_the_condition_per_batch(trained):
    """``_loss`` itself (not only the helper) trains whole micro-batches on the unconditional vector."""
    from diffusers import DDPMScheduler

    from diffcompose.methods.pbe.train import _loss
    from diffcompose.methods.pbe.train_model import build_model

    model, vae, sched_config, _ = build_model(str(trained / "run" / "final"), "pbe", "tiny", seed=0)
    drops = []

    def spy(noisy, z_masked, keep, reference, drop, t):
        drops.append(drop.clone())
        return torch.zeros_like(noisy)

    n, size = 4, model.encoder.image_size
    batch = {"image": torch.zeros(n, 3, RES, RES), "mask": torch.zeros(n, 1, RES, RES),
             "reference": torch.zeros(n, 3, size, size)}
    sched = DDPMScheduler.from_config(sched_config)
    for s in range(40):
        _loss(spy, vae, sched, batch, torch.Generator().manual_seed(s), 0.18215, 0.5, torch.float32)
    assert all(d.all() or not d.any() for d in drops)
    assert 5 < sum(bool(d[0]) for d in drops) < 35


def test_latent_mask_option_default_is_the_original(trained):
    """At inference the keep mask reaches latent size bilinearly by default (as the published weights were
    trained); ``nearest`` (diffusers) stays available and gives another input."""
    from diffcompose.methods.pbe.engine import PaintByExampleEngine
    from diffcompose.methods.pbe.options import PaintOptions

    assert PaintOptions().latent_mask == "bilinear"
    engine = PaintByExampleEngine(device="cpu", model=str(trained / "run" / "final")).load()
    image = np.asarray(Image.open(trained / "photo.png").convert("RGB").resize((RES, RES)))
    hole = np.zeros((RES, RES), bool)
    hole[12:44, 20:52] = True  # edges half-way into 8-px cells: bilinear makes them 0.5, nearest does not
    keeps = {}
    for mode in ("bilinear", "nearest", None):
        seen: list = []
        handle = capture(engine.c.unet, seen)
        kw = {} if mode is None else {"latent_mask": mode}
        engine.paint(image, hole, image, steps=1, guidance_scale=1.0, crop=False, resolution=RES, seed=0, **kw)
        handle.remove()
        keeps[mode] = seen[0][0][:, 8]
    assert torch.equal(keeps[None], keeps["bilinear"])
    assert not torch.equal(keeps["bilinear"], keeps["nearest"])
    assert set(keeps["nearest"].unique().tolist()) <= {0.0, 1.0}
    assert ((keeps["bilinear"] > 0) & (keeps["bilinear"] < 1)).any()
