"""Our Paint-by-Example engine against diffusers' (deprecated) PaintByExamplePipeline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.methods.pbe.engine import PaintByExampleEngine  # noqa: E402
from diffcompose.methods.pbe.tiny import write_tiny_pbe  # noqa: E402
from diffcompose.models.sampling import make_scheduler  # noqa: E402

SIZE = 128  # the tiny model's native resolution


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_pbe(tmp_path_factory.mktemp("pbe") / "tiny", seed=3)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return PaintByExampleEngine(device="cpu", model=str(tiny_dir)).load()


def pbe_paint(engine, image, mask, reference, seed, **options) -> list[np.ndarray]:
    """Our engine on the whole image (no window, no paste-back, diffusers' nearest latent mask), as arrays."""
    out = engine.paint(image, mask, reference, seed=seed, paste_back=False, crop=False, latent_mask="nearest",
                       **options)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def diffusers_pipeline(root, scheduler: str):
    from diffusers import AutoencoderKL, PaintByExamplePipeline, UNet2DConditionModel
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
    from transformers import CLIPImageProcessorPil

    from diffcompose.methods.pbe.components import scheduler_config

    encoder = PaintByExampleImageEncoder.from_pretrained(str(root / "image_encoder"))
    side = encoder.config.image_size
    pipe = PaintByExamplePipeline(
        vae=AutoencoderKL.from_pretrained(str(root / "vae")), image_encoder=encoder,
        unet=UNet2DConditionModel.from_pretrained(str(root / "unet")),
        scheduler=make_scheduler(scheduler, scheduler_config(root)), safety_checker=None,
        feature_extractor=CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(photo: np.ndarray):
    image = np.asarray(Image.fromarray(photo).resize((SIZE, SIZE), Image.BICUBIC))
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[30:90, 40:100] = True
    reference = photo[100:400, 120:300]  # not square: exercises the centre crop
    return image, mask, reference


@pytest.mark.slow
@pytest.mark.parametrize("scheduler,steps,num_images", [("plms", 6, 1), ("ddim", 4, 2), ("euler", 4, 1)])
def test_same_image_as_diffusers(tiny_dir, engine, photo, scheduler, steps, num_images):
    image, mask, reference = inputs(photo)
    pipe = diffusers_pipeline(tiny_dir, scheduler)
    expected = pipe(example_image=Image.fromarray(reference), image=Image.fromarray(image),
                    mask_image=Image.fromarray(mask.astype(np.uint8) * 255), num_inference_steps=steps,
                    guidance_scale=5.0, num_images_per_prompt=num_images,
                    generator=torch.Generator().manual_seed(11), output_type="np").images
    expected = np.round(expected * 255).astype(np.uint8)

    ours = pbe_paint(engine, image, mask, reference, 11, steps=steps, scheduler=scheduler,
                     reference_preprocess="crop", num_images=num_images)
    assert len(ours) == num_images
    for a, b in zip(ours, expected):
        assert a.shape == b.shape == (SIZE, SIZE, 3)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.slow
def test_seed_and_guidance_matter(engine, photo):
    image, mask, reference = inputs(photo)
    run = lambda seed, **kw: pbe_paint(engine, image, mask, reference, seed, steps=3, **kw)[0]  # noqa: E731
    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, run(1, guidance_scale=1.0))
