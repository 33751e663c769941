"""The SD-inpainting engine against diffusers' StableDiffusionInpaintPipeline, and end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import conftest  # noqa: E402
from diffcompose.cli.main import main  # noqa: E402
from diffcompose.errors import InputError  # noqa: E402
from diffcompose.inputs import load_image, load_mask  # noqa: E402
from diffcompose.methods.sdinpaint.engine import SDInpaintEngine  # noqa: E402
from diffcompose.models.sampling import make_scheduler  # noqa: E402
from diffcompose.models.tiny import write_tiny_sd  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402

SIZE = 128  # the tiny model's native resolution


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.set_num_threads(1)
    root = write_tiny_sd(tmp_path_factory.mktemp("sdi") / "tiny", seed=3, unet_overrides={"in_channels": 9})
    return SDInpaintEngine(device="cpu", model=str(root)).load()


def _inputs(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.fromarray(photo).resize((SIZE, SIZE), Image.BICUBIC))
    mask = np.zeros((SIZE, SIZE), bool)
    mask[30:90, 40:100] = True
    return image, mask


@pytest.mark.parametrize("scheduler,steps,num_images,negative", [("plms", 5, 1, ""), ("ddim", 4, 2, "blurry"),
                                                                  ("euler", 3, 1, "")])
def test_same_image_as_diffusers(engine, photo, scheduler, steps, num_images, negative) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    image, mask = _inputs(photo)
    sd = engine.sd
    pipe = StableDiffusionInpaintPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                                          scheduler=make_scheduler(scheduler, dict(sd.scheduler.config)),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt="a red armchair", negative_prompt=negative or None, image=Image.fromarray(image),
                    mask_image=Image.fromarray(mask), height=SIZE, width=SIZE, num_inference_steps=steps,
                    guidance_scale=7.5, num_images_per_prompt=num_images, generator=torch.Generator().manual_seed(11),
                    output_type="np").images
    expected = np.round(expected * 255).astype(np.uint8)
    ours = engine.inpaint(image, mask, prompt="a red armchair", negative_prompt=negative, seed=11, paste_back=False,
                          steps=steps, scheduler=scheduler, num_images=num_images)
    ours = [np.asarray(o) for o in (ours if isinstance(ours, list) else [ours])]
    assert len(ours) == num_images
    for a, b in zip(ours, expected):
        assert a.shape == b.shape == (SIZE, SIZE, 3)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_prompt_seed_and_region(engine, photo) -> None:
    image, mask = _inputs(photo)
    run = lambda **kw: np.asarray(engine.inpaint(image, mask, **{"prompt": "a cat", "steps": 2, **kw}))  # noqa: E731
    a, b = run(seed=1), run(seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, run(seed=2))
    assert not np.array_equal(a, run(seed=1, prompt="a dog"))  # the text reaches the UNet
    outside = ~changed_region(mask, default_margin(image.shape))
    assert np.array_equal(a[outside], image[outside])
    boxed = np.asarray(engine.inpaint(image, box=(40, 30, 100, 90), prompt="a cat", steps=2, seed=1))
    assert np.array_equal(boxed, a)  # the same rectangle given as a box
    with pytest.raises(InputError, match="needs --prompt"):
        engine.inpaint(image, mask, prompt="  ")
    with pytest.raises(InputError, match="exactly one of --mask"):
        engine.inpaint(image, mask, box=(0, 0, 5, 5), prompt="a cat")


def test_a_non_inpainting_model_is_refused_in_one_line(tmp_path) -> None:
    from diffcompose.errors import WeightsMissingError

    plain = write_tiny_sd(tmp_path / "plain")
    with pytest.raises(WeightsMissingError, match="not an inpainting model"):
        SDInpaintEngine(device="cpu", model=str(plain)).load()


def test_cli_on_a_real_photo_with_the_tiny_model(testdata: Path, tmp_path: Path, capsys) -> None:
    case = next(iter(conftest.testdata_cases("text_inpaint")), None)
    if case is None:
        pytest.skip("no text_inpaint case")
    files = case["files"]
    out = tmp_path / "out.png"
    argv = ["inpaint", str(files["image"]), "--mask", str(files["mask"]), "--prompt", case["prompt"], "-o", str(out),
            "--engine", "sd-inpaint", "--model", "tiny", "--steps", "2", "--resolution", "128", "--device", "cpu"]
    assert main(argv) == 0
    img, got = load_image(files["image"]), load_image(out)
    m = load_mask(files["mask"], (img.shape[1], img.shape[0]))
    outside = ~changed_region(m, default_margin(img.shape))
    assert got.shape == img.shape and np.array_equal(got[outside], img[outside])


def test_missing_weights_offline_name_the_ways_out_for_text_inpainting(tmp_path, capsys, photo) -> None:
    """One line, exit 3, and no advice to use an engine that cannot inpaint from text."""
    img, msk = tmp_path / "i.png", tmp_path / "m.png"
    image, mask = _inputs(photo)
    Image.fromarray(image).save(img)
    Image.fromarray(mask).save(msk)
    base = ["inpaint", str(img), "--mask", str(msk), "--prompt", "a cat", "-o", str(tmp_path / "o.png")]
    for engine, model, way in (("sd-inpaint", "no-such/inpainting-model", "SD inpainting directory"),
                               ("smartbrush", "no-such/smartbrush-model", "--engine sd-inpaint")):
        assert main(base + ["--engine", engine, "--model", model]) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and way in err and "classical" not in err, err
