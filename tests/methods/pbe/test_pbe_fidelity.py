"""Paint-by-Example: what the condition dropout and the reference resize *carry*, on the real modules.

The dropout flag must reach the model and, inside it, replace the exemplar's token by the
learned unconditional vector, or that vector is never trained and guidance at inference
pushes away from a random vector. These tests use the real :class:`PbETrainModel` (tiny
sizes, built the way training builds it) and the real training loss, not a stub.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from test_pbe_train import write_sd_init  # noqa: E402

RES = 32
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add contention (conftest)


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    return write_sd_init(tmp_path_factory.mktemp("pbe-init") / "sd")


@pytest.fixture
def built(init_dir):
    """(trainable model, VAE, scheduler config), as ``train`` builds them (SD text-to-image init, tiny CLIP)."""
    from diffcompose.methods.pbe.train_model import build_model

    model, vae, sched_config, _ = build_model(str(init_dir), "sd", "tiny", seed=0)
    return model.train(), vae, sched_config


def _inputs(model, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lat = RES // 8
    size = model.encoder.image_size
    return dict(noisy=torch.randn(n, 4, lat, lat, generator=g), z_masked=torch.randn(n, 4, lat, lat, generator=g),
                keep=torch.rand(n, 1, lat, lat, generator=g), reference=torch.randn(n, 3, size, size, generator=g),
                t=torch.tensor([500] * n))


def _grads(model) -> dict[str, float]:
    """The largest gradient magnitude of the unconditional vector and of the exemplar path's trainable parts."""
    enc = model.encoder

    def size(params) -> float:
        return max((float(p.grad.abs().max()) if p.grad is not None else 0.0) for p in params)

    return {"uncond": size([enc.uncond_vector]),
            "exemplar": size(list(enc.mapper.parameters()) + list(enc.proj_out.parameters())
                             + list(enc.final_layer_norm.parameters()))}


def test_a_dropped_sample_is_conditioned_on_the_unconditional_vector(built) -> None:
    """Inside the real model: the context of a dropped sample is the learned vector, of a kept one the exemplar's token."""
    model, _, _ = built
    seen: list[torch.Tensor] = []
    model.unet.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["encoder_hidden_states"].detach().clone()), with_kwargs=True)
    x = _inputs(model, 3)
    drop = torch.tensor([True, False, True])
    model(x["noisy"], x["z_masked"], x["keep"], x["reference"], drop, x["t"])
    ctx = seen[0]
    with torch.no_grad():
        token = model.encoder(x["reference"])
    assert ctx.shape == (3, 1, model.encoder.proj_size)
    torch.testing.assert_close(ctx[0], model.encoder.uncond_vector[0].detach())
    torch.testing.assert_close(ctx[2], model.encoder.uncond_vector[0].detach())
    torch.testing.assert_close(ctx[1], token[1])
    assert not torch.allclose(token[1], model.encoder.uncond_vector[0])


@pytest.mark.parametrize("drop", [True, False])
def test_the_dropout_flag_decides_which_condition_is_trained(built, drop) -> None:
    """A dropped batch trains the unconditional vector and nothing of the exemplar path; a kept one the reverse."""
    model, _, _ = built
    x = _inputs(model, 2)
    flags = torch.full((2,), drop)
    model(x["noisy"], x["z_masked"], x["keep"], x["reference"], flags, x["t"]).pow(2).mean().backward()
    grads = _grads(model)
    if drop:
        assert grads["uncond"] > 0 and grads["exemplar"] == 0, grads
    else:
        assert grads["uncond"] == 0 and grads["exemplar"] > 0, grads


@pytest.mark.parametrize("p,trains_uncond", [(1.0, True), (0.0, False)])
def test_the_training_loss_trains_the_unconditional_vector_when_it_drops(built, p, trains_uncond) -> None:
    """Through ``train._loss`` (the dropout draw, the flag, the model): with dropout 1 the unconditional
    vector receives gradient, with dropout 0 it does not; and the optimiser holds it."""
    from diffusers import DDPMScheduler

    from diffcompose.methods.pbe.train import _loss
    from diffcompose.methods.pbe.train_model import trainable_parameters
    from diffcompose.models import codec

    model, vae, sched_config = built
    assert "encoder.uncond_vector" in [name for name, _ in trainable_parameters(model)]
    g = torch.Generator().manual_seed(1)
    size = model.encoder.image_size
    batch = {"image": torch.rand(2, 3, RES, RES, generator=g) * 2 - 1, "mask": torch.zeros(2, 1, RES, RES),
             "reference": torch.randn(2, 3, size, size, generator=g)}
    batch["mask"][..., 8:24, 8:24] = 1.0
    for per in ("batch", "sample"):
        model.zero_grad()
        loss = _loss(model, vae, DDPMScheduler.from_config(sched_config), batch, torch.Generator().manual_seed(0),
                     codec.latent_scale(vae), p, torch.float32, per)
        loss.backward()
        grads = _grads(model)
        assert (grads["uncond"] > 0) == trains_uncond and (grads["exemplar"] > 0) != trains_uncond, (per, grads)


def test_inference_guides_against_the_learned_unconditional_vector(tmp_path, monkeypatch) -> None:
    """The engine's unguided half gets the encoder's ``uncond_vector``, the guided half the reference's token."""
    from diffcompose.methods.pbe.engine import PaintByExampleEngine
    from diffcompose.methods.pbe.reference import prepare_reference

    monkeypatch.setenv("DIFFCOMPOSE_CACHE", str(tmp_path / "cache"))
    engine = PaintByExampleEngine(device="cpu", model="tiny").load()
    enc = engine.c.encoder
    seen: list[torch.Tensor] = []
    engine.c.unet.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["encoder_hidden_states"].detach().clone()), with_kwargs=True)
    rng = np.random.default_rng(0)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    reference = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    engine.paint(image, mask, reference, steps=1, guidance_scale=5.0, crop=False, resolution=64, seed=0)
    with torch.no_grad():
        token = enc(torch.from_numpy(prepare_reference(reference, size=enc.image_size))[None])
    assert seen[0].shape[0] == 2
    torch.testing.assert_close(seen[0][0], enc.uncond_vector[0].detach())
    torch.testing.assert_close(seen[0][1], token[0])


# --------------------------------------------------------------------------- item 10: the reference resize

def test_inference_stretches_the_reference_as_the_original_script(photo) -> None:
    """``stretch`` is what the original's ``scripts/inference.py`` does to a reference: Pillow's ``resize((224,
    224))`` with its default filter (bicubic), on a real photo."""
    from diffcompose.methods.pbe.reference import normalize, prepare_reference, to_square

    reference = photo[40:300, 120:330]  # a non-square crop of a real photo (260 x 210)
    original = np.asarray(Image.fromarray(reference).convert("RGB").resize((224, 224)))
    assert np.array_equal(to_square(reference, 224, "stretch"), original)
    np.testing.assert_array_equal(prepare_reference(reference), normalize(original))
    small = photo[100:150, 200:260]  # growing a small reference too
    assert np.array_equal(to_square(small, 224, "stretch"), np.asarray(Image.fromarray(small).resize((224, 224))))


def test_training_resizes_the_reference_bilinearly_as_the_original(photo) -> None:
    """The original's training resizes the reference crop with albumentations' ``Resize`` (OpenCV bilinear,
    ``INTER_LINEAR``), shrinking or growing alike."""
    import cv2

    from diffcompose.methods.pbe.augment import Plan, ReferenceAugment

    plain = ReferenceAugment(size=224, flip_p=0, rotate_p=0, blur_p=0, elastic_p=0)
    for crop in (photo[40:300, 120:330], photo[100:150, 200:260]):  # larger and smaller than 224
        expected = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(plain.apply(crop, Plan(False, None, None, None, 0)), expected)
