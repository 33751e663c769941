"""SD inpainting works a 520x300 photo at its own pixels and aspect ratio (issue 21 item 14).

Before, the window's working size was rounded down to the UNet's stride of 64: the photo was
stretched to 512x256 (15%). Now the runner mirrors it past its bottom and right edges to 576x320,
the UNet sees that canvas, and the margin is cut off from the result and the previews.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose import EngineManager  # noqa: E402
from diffcompose.methods.sdinpaint.engine import SDInpaintEngine  # noqa: E402
from diffcompose.regions import changed_region, default_margin  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    return EngineManager().get("sd-inpaint", model="tiny", device="cpu").load()


def test_a_520x300_photo_is_worked_at_its_own_aspect_ratio(engine, photo, monkeypatch) -> None:
    image = np.asarray(Image.fromarray(photo).resize((520, 300), Image.BICUBIC))
    mask = np.zeros((300, 520), bool)
    mask[100:220, 200:330] = True
    seen: dict[str, np.ndarray] = {}
    unet_inputs: list[tuple[int, ...]] = []
    real_task, real_forward = SDInpaintEngine._inpaint, engine.sd.unet.forward

    def task(self, *, image, mask, **kw):
        seen.update(image=image, mask=mask)
        return real_task(self, image=image, mask=mask, **kw)

    def forward(sample, *args, **kwargs):
        unet_inputs.append(tuple(sample.shape))
        return real_forward(sample, *args, **kwargs)

    monkeypatch.setattr(SDInpaintEngine, "_inpaint", task)
    monkeypatch.setattr(engine.sd.unet, "forward", forward)
    previews = []
    out = np.asarray(engine.inpaint(image, mask, prompt="a chair", steps=2, resolution=512, seed=5,
                                    on_progress=lambda e: e.step and previews.append(e.preview())))
    # The UNet saw the 576x320 canvas (latents at 1/8): 520x300 rounded up to 64, not down to 512x256.
    assert unet_inputs and all(s[-2:] == (40, 72) for s in unet_inputs), unet_inputs
    assert seen["image"].shape == (320, 576, 3) and np.array_equal(seen["image"][:300, :520], image)
    assert np.array_equal(seen["image"][300:, :520], image[299:279:-1])  # the margin mirrors the photo
    assert np.array_equal(seen["mask"][:300, :520], mask) and not seen["mask"][300:].any()
    assert out.shape == image.shape and previews[0].shape == (300, 520, 3)
    outside = ~changed_region(mask, default_margin(image.shape))
    assert np.array_equal(out[outside], image[outside]) and (out[mask] != image[mask]).any()
