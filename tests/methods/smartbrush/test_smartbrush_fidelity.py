"""SmartBrush: what each method part *carries* at inference, pinned on the tiny model.

The tiny model starts as training does (zero level embeddings, zero mask head), so the
precision level and the predicted-mask blend leave no trace in its output; and the final
paste-back hides the per-step blend. These tests give the tiny model non-zero level
embeddings or a known mask head, and look at what reaches the UNet and at the latents
themselves (no paste-back is involved: ``_inpaint`` returns the decoded latents).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.methods.smartbrush import precision as prec  # noqa: E402
from diffcompose.methods.smartbrush.model import MASK_CHANNEL  # noqa: E402
from diffcompose.models import codec  # noqa: E402
from diffcompose.progress import RunContext  # noqa: E402

S = prec.PRECISION_LEVELS
SIZE = 64
BOX = (8, 8, 56, 56)  # pixels; latent cells 1..7
INNER = (3, 5)  # latent cells [3, 5) x [3, 5): the object the forced mask head reports

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add contention (conftest)


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    """The tiny SmartBrush model is written to a test-local cache (once per module)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFCOMPOSE_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def engine():
    """A fresh engine per test: tests change its weights."""
    from diffcompose.methods.smartbrush.engine import SmartBrushEngine

    return SmartBrushEngine(device="cpu", model="tiny").load()


@pytest.fixture
def image(photo) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((SIZE, SIZE), Image.BICUBIC))


def _box() -> np.ndarray:
    box = np.zeros((SIZE, SIZE), bool)
    box[BOX[1]:BOX[3], BOX[0]:BOX[2]] = True
    return box


def _run(engine, image, mask, **options) -> tuple[list[np.ndarray], list[np.ndarray]]:
    opts = engine.options("inpaint", {"steps": 3, **options})
    return engine._inpaint(image=image, mask=mask, prompt="a red apple", negative_prompt="", options=opts,
                           ctx=RunContext(4))


def _spy_unet(engine) -> list[dict]:
    """Every UNet call's input and class labels, in order."""
    calls: list[dict] = []

    def hook(_, args, kwargs):
        calls.append({"x": args[0].detach().clone(), "labels": kwargs.get("class_labels")})

    engine.sd.unet.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


# --------------------------------------------------------------------------- item 2a: the precision level

def test_the_requested_precision_level_reaches_the_unet_and_changes_the_output(engine, image) -> None:
    with torch.no_grad():  # trained-like level embeddings: one distinct vector per level
        emb = engine.sd.unet.class_embedding.weight
        emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(0)) * 2.0)
    calls = _spy_unet(engine)
    outputs = {}
    for level in range(S + 1):
        calls.clear()
        images, _ = _run(engine, image, _box(), precision=level)
        labels = [c["labels"] for c in calls]
        assert labels and all(lab is not None and lab.tolist() == [level] * lab.shape[0] for lab in labels), level
        outputs[level] = images[0].astype(np.int16)
    for a in range(S + 1):
        for b in range(a + 1, S + 1):  # each level is its own condition
            assert np.abs(outputs[a] - outputs[b]).max() > 0, (a, b)
    # by default a box is taken at level S, any other shape at level 0
    calls.clear()
    assert np.array_equal(_run(engine, image, _box())[0][0], outputs[S].astype(np.uint8))
    assert {int(lab[0]) for lab in (c["labels"] for c in calls)} == {S}


# --------------------------------------------------------------------------- item 2b: the predicted-mask blend

def _force_inner_mask(engine) -> None:
    """The mask head says 'object' (logit +10) on the INNER latent square, 'background' (-10) elsewhere."""
    unet = engine.sd.unet

    def hook(_, args, kwargs, out):
        sample = out.sample.clone()
        logit = torch.full_like(sample[:, MASK_CHANNEL], -10.0)
        logit[:, INNER[0]:INNER[1], INNER[0]:INNER[1]] = 10.0
        sample[:, MASK_CHANNEL] = logit
        out.sample = sample
        return out

    unet.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("scheduler", ["ddim", "dpm"])
def test_each_step_keeps_the_new_latents_only_inside_the_predicted_mask(engine, image, monkeypatch,
                                                                        scheduler) -> None:
    """After every step the latents are the photo's own ``z_0`` outside the *predicted* object mask
    (also inside the user's box), and new inside it: seen in what the UNet gets at the next
    step and in the final latents, with no paste-back."""
    _force_inner_mask(engine)
    calls = _spy_unet(engine)
    finals: list[torch.Tensor] = []
    decode = codec.decode
    monkeypatch.setattr(codec, "decode", lambda vae, z: finals.append(z.detach().clone()) or decode(vae, z))
    _run(engine, image, _box(), scheduler=scheduler, mask_smoothing=0.0, mask_margin=0, guidance_scale=7.5)
    with torch.no_grad():
        z0 = codec.encode(engine.sd.vae, codec.images_to_tensor(image))[0]
    inner = torch.zeros(SIZE // 8, SIZE // 8, dtype=torch.bool)
    inner[INNER[0]:INNER[1], INNER[0]:INNER[1]] = True
    box = torch.from_numpy(_box()[::8, ::8].copy())
    ring = box & ~inner  # inside the user's box, outside the predicted object
    assert ring.sum() > 20
    trajectory = [c["x"][0, :4] for c in calls[1:]] + [finals[-1][0]]  # the latents after steps 0, 1, 2
    assert len(trajectory) == 3
    for z in trajectory:
        assert torch.equal(z[:, ~inner], z0[:, ~inner])  # the background, box included, is z_0 bit for bit
        assert (z[:, inner] - z0[:, inner]).abs().amin(0).min() > 0  # the object's cells are new


def test_the_blend_follows_the_predicted_mask_not_the_users(engine, image, monkeypatch) -> None:
    """Without the forced head (an untrained head says 0.5: the user's region), the ring inside the
    box is repainted: what the forced test keeps is the predicted mask's doing."""
    calls = _spy_unet(engine)
    _run(engine, image, _box(), mask_smoothing=0.0, mask_margin=0)
    with torch.no_grad():
        z0 = codec.encode(engine.sd.vae, codec.images_to_tensor(image))[0]
    box = torch.from_numpy(_box()[::8, ::8].copy())
    z = calls[-1]["x"][0, :4]
    assert torch.equal(z[:, ~box], z0[:, ~box])
    assert (z[:, box] - z0[:, box]).abs().amin(0).min() > 0


# --------------------------------------------------------------------------- item 9: the explicit choices

@pytest.mark.parametrize("start", ["noise", "noised-image"])
def test_sampling_starts_from_pure_noise_unless_told_otherwise(engine, image, start) -> None:
    from diffcompose.models.device import make_generator
    from diffcompose.models.sampling import initial_noise

    assert engine.options("inpaint", {}).start == "noise"  # the default
    calls = _spy_unet(engine)
    seed, lat = 4, SIZE // 8
    _run(engine, image, _box(), start=start)
    x_t = calls[0]["x"][0, :4]
    noise = initial_noise(engine.sd.vae, 1, lat, lat, make_generator(seed))[0]  # the generator's first draw
    with torch.no_grad():
        z0 = codec.encode(engine.sd.vae, codec.images_to_tensor(image))[0]
    box = torch.from_numpy(_box()[::8, ::8].copy())
    assert torch.equal(x_t[:, ~box], z0[:, ~box])  # outside the region: the photo's clean latent
    if start == "noise":
        assert torch.equal(x_t[:, box], noise[:, box])  # inside: pure Gaussian noise, nothing of the photo
    else:
        from diffcompose.models.sampling import make_scheduler

        sched = make_scheduler("ddim", dict(engine.sd.scheduler.config))
        sched.set_timesteps(3)
        noised = sched.add_noise(z0[None], noise[None], sched.timesteps[:1])[0]
        torch.testing.assert_close(x_t[:, box], noised[:, box])
        assert not torch.allclose(noised[:, box], noise[:, box])


def _caption_data(tmp_path):
    """One instance (an egg on a noisy photo) and one image-caption pair (a plain blue photo)."""
    import json

    from diffcompose.methods.smartbrush.data import encode_rle

    photo = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(np.full((40, 60, 3), (20, 40, 200), np.uint8)).save(tmp_path / "sky.png")
    yy, xx = np.mgrid[:48, :80]
    exact = ((xx - 50) / 14.0) ** 2 + ((yy - 24) / 12.0) ** 2 <= 1
    lines = [{"image": "a.png", "rle": encode_rle(exact), "label": "egg"},
             {"image": "sky.png", "caption": "a clear blue sky"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path / "m.jsonl"


def test_text_to_image_samples_use_image_caption_pairs(tmp_path) -> None:
    """The paper's 20% text-to-image share comes from image-caption pairs (a line with only an image and a
    caption, or a COCO captions file), not from segmentation photos labelled with one object."""
    from diffcompose.methods.smartbrush.data import SmartBrushDataset, read_training_data, text_to_image_pairs

    instances, pairs = read_training_data(_caption_data(tmp_path))
    assert [i.label for i in instances] == ["egg"] and [p.caption for p in pairs] == ["a clear blue sky"]
    ds = SmartBrushDataset(instances, resolution=32, seed=5, pairs=text_to_image_pairs("auto", pairs))
    samples = [ds.sample(k) for k in range(300)]
    t2i = [s for s in samples if s[1].all()]
    assert 0.12 < len(t2i) / len(samples) < 0.28
    for image, coarse, target, level, text in t2i:
        assert target.all() and level == S and text in ("a clear blue sky", "")
        assert np.array_equal(image, np.full((32, 32, 3), (20, 40, 200), np.uint8))  # the pair's photo
    assert all(s[4] in ("egg", "") and not s[1].all() for s in samples if not s[1].all())
    # the instances' own photos instead, when told so (or when there are no pairs)
    ds = SmartBrushDataset(instances, resolution=32, seed=5, pairs=text_to_image_pairs("instances", pairs))
    t2i = [s for s in (ds.sample(k) for k in range(100)) if s[1].all()]
    assert t2i and all(s[4] in ("egg", "") and not (s[0] == (20, 40, 200)).all() for s in t2i)
    from diffcompose.errors import InputError

    with pytest.raises(InputError, match="image-caption pairs"):
        text_to_image_pairs("captions", [])


def test_coco_captions_file_and_config(tmp_path) -> None:
    """COCO's captions file (annotations with a caption and no segmentation) is a source of pairs, named in
    the config as ``data.captions`` next to the instances manifest."""
    import json

    from diffcompose.methods.smartbrush.config import load_config
    from diffcompose.methods.smartbrush.data import read_training_data

    manifest = _caption_data(tmp_path)
    coco = {"images": [{"id": 7, "file_name": "sky.png", "width": 60, "height": 40}],
            "annotations": [{"id": 1, "image_id": 7, "caption": "blue sky"},
                            {"id": 2, "image_id": 7, "caption": "nothing but sky"}]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    (tmp_path / "train.yaml").write_text("data:\n  manifest: m.jsonl\n  captions: captions.json\n"
                                         "  text_to_image: captions\n")
    cfg = load_config(tmp_path / "train.yaml")
    assert cfg.captions == str(tmp_path / "captions.json") and cfg.text_to_image == "captions"
    instances, pairs = read_training_data(manifest, None, cfg.min_area, cfg.max_area, tmp_path / "captions.json")
    assert sorted(p.caption for p in pairs) == ["a clear blue sky", "blue sky", "nothing but sky"]
    assert all(p.image == tmp_path / "sky.png" for p in pairs) and len(instances) == 1


def test_the_base_model_default_is_stated() -> None:
    """The default base model is the one the config, the example config and the docs name; the paper's
    (SD v1.2, text-to-image) is named beside it."""
    from pathlib import Path

    import yaml

    from diffcompose.methods.smartbrush.config import DEFAULT_INIT, PAPER_INIT, SmartBrushTrainConfig

    root = Path(__file__).resolve().parents[3]
    assert SmartBrushTrainConfig(manifest="x").init == DEFAULT_INIT
    example = yaml.safe_load((root / "src" / "diffcompose" / "methods" / "smartbrush" / "train.example.yaml").read_text())
    assert example["model"]["init"] == DEFAULT_INIT and example["data"]["text_to_image"] == "auto"
    docs = (root / "docs" / "engines" / "smartbrush.md").read_text()
    assert f"default `{DEFAULT_INIT}`" in docs and PAPER_INIT in docs and "--start" in docs
