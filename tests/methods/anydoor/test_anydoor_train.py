"""AnyDoor training data and training (tiny model, CPU).

The data tests pin the published recipe's numbers (timestep ranges and shares, the mask
filters, the frame gap, the shape-mask share) on many seeded draws; the training tests pin
what is trained (only the published parts change and are saved), that it learns (a fixed
evaluation loss falls on real photos) and that a resumed run is the uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import testdata_cases as cases_of
from diffcompose.errors import InputError
from diffcompose.methods.anydoor import data as D

# ----------------------------------------------------------------------------- helpers


def _binomial_ok(hits: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(hits - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


def _disk(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _write_pair(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> dict:
    Image.fromarray(image).save(folder / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}_mask.png")
    return {"image": f"{name}.png", "mask": f"{name}_mask.png"}


def _astronaut_sources(folder: Path) -> Path:
    """A manifest of one real photo (scikit-image's, always present) with an ellipse object mask."""
    from skimage import data

    photo = cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[:128, :128]
    mask = ((xx - 70) / 16.0) ** 2 + ((yy - 58) / 24.0) ** 2 <= 1.0
    entry = _write_pair(folder, "astronaut", photo, mask)
    (folder / "m.jsonl").write_text(json.dumps(entry) + "\n")
    return folder / "m.jsonl"


def _subject_sources(folder: Path, n: int = 3) -> Path | None:
    """A manifest of ``n`` real subject photos with their saliency masks, shrunk and set in a reflected
    border so the object passes the published size filter (these close-ups fill their frame)."""
    cases = [c for c in cases_of("subjects") if "mask_u2net" in c["files"]][:n]
    if not cases:
        return None
    lines = []
    for i, case in enumerate(cases):
        from diffcompose.inputs import load_image, load_mask

        image = load_image(case["files"]["image"])
        mask = load_mask(case["files"]["mask_u2net"], (image.shape[1], image.shape[0]))
        s = 96 / max(image.shape[:2])
        size = (max(8, round(image.shape[1] * s)), max(8, round(image.shape[0] * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        h, w = mask.shape
        image = cv2.copyMakeBorder(image, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_REFLECT)
        mask = cv2.copyMakeBorder(mask, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_CONSTANT, value=0)
        lines.append(json.dumps(_write_pair(folder, f"subject{i}", image, mask.astype(bool))))
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "m.jsonl"


def _youtube_vos(root: Path, frames: int = 20) -> Path:
    """A YouTube-VOS-style folder: one video, two objects (palette ids 1 and 2) moving right."""
    vid = "vid0"
    (root / "JPEGImages" / vid).mkdir(parents=True)
    (root / "Annotations" / vid).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{5 * i:05d}" for i in range(frames)]
    for i, name in enumerate(names):
        img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        ids = np.zeros((60, 80), np.uint8)
        ids[10:30, 5 + i:25 + i] = 1
        ids[35:55, 40:60] = 2
        Image.fromarray(img).save(root / "JPEGImages" / vid / f"{name}.jpg")
        pal = Image.fromarray(ids, mode="P")
        pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
        pal.save(root / "Annotations" / vid / f"{name}.png")
    meta = {"videos": {vid: {"objects": {"1": {"frames": names}, "2": {"frames": names[:10]}}}}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


# ----------------------------------------------------------------------------- data: the recipe's numbers


def test_adaptive_timesteps_have_the_published_proportions() -> None:
    """p 0.3 uniform over [0, 1000); else videos [500, 1000), still images [0, 500), multi-view [0, 1000)."""
    n = 20000
    for kind, low_share in (("video", 0.3 * 0.5), ("image", 0.3 * 0.5 + 0.7), ("multiview", 0.5)):
        rng = np.random.default_rng(1)
        t = np.array([D.sample_timestep(rng, kind) for _ in range(n)])
        assert t.min() >= 0 and t.max() < 1000
        assert _binomial_ok(int((t < 500).sum()), n, low_share), (kind, (t < 500).mean())
    rng = np.random.default_rng(2)  # without the uniform share the ranges are strict
    assert min(D.sample_timestep(rng, "video", 0.0) for _ in range(2000)) >= 500
    assert max(D.sample_timestep(rng, "image", 0.0) for _ in range(2000)) < 500
    video = np.array([D.sample_timestep(rng, "video") for _ in range(n)])
    assert _binomial_ok(int((video < 250).sum()), n, 0.3 * 0.25)  # the uniform share reaches all of [0, 1000)


def test_mask_filters_accept_and_reject_the_right_masks() -> None:
    shape = (100, 100)
    assert D.mask_ok(_disk(shape, (50, 50), 20))  # 12.6%, one part
    assert not D.mask_ok(_disk(shape, (50, 50), 5))  # 0.8%: too small
    assert not D.mask_ok(_disk(shape, (50, 50), 48))  # 72%: too large
    two = _disk(shape, (30, 30), 12) | _disk(shape, (70, 70), 12)
    assert D.mask_area_ok(two) and not D.mask_ok(two)  # two equal parts: not one solid object
    speck = _disk(shape, (40, 40), 20) | _disk(shape, (90, 90), 2)
    assert D.mask_ok(speck)  # a stray speck (< 10% of the area) is tolerated, as published
    ring = _disk(shape, (50, 50), 25) & ~_disk(shape, (50, 50), 8)
    assert D.mask_ok(ring)  # holes do not break solidity (outer contours only)
    bar = np.zeros(shape, bool)
    bar[40:45, :] = True  # 5%, solid, but 5 px high: a still image refuses it (a side under 1/10) ...
    image = np.zeros((100, 100, 3), np.uint8)
    assert D.mask_ok(bar)
    with pytest.raises(D.Rejected):
        D.process_pair(image, bar, image, bar, np.random.default_rng(0), kind="image", resolution=64)
    D.process_pair(image, bar, image, bar, np.random.default_rng(0), kind="video", resolution=64)  # ... a video not
    with pytest.raises(D.Rejected):
        D.process_pair(image, two, image, two, np.random.default_rng(0), resolution=64)


def test_video_pairs_are_at_least_a_tenth_of_the_clip_apart() -> None:
    rng = np.random.default_rng(0)
    for kind, div in (("video", 10), ("multiview", 8)):
        for n in (2, 7, 10, 33, 100):
            pairs = np.array([D.pick_pair(n, kind, rng) for _ in range(400)])
            gaps = pairs[:, 1] - pairs[:, 0]
            assert (pairs >= 0).all() and (pairs < n).all()
            assert gaps.min() >= n // div
            if n >= 10:
                assert gaps.max() > 2 * (n // div) and len(set(pairs[:, 0])) > n // 3  # not one fixed pair
    assert D.pick_pair(5, "image", rng) == (0, 0)


@pytest.mark.slow
def test_shape_masks_are_used_with_p_07_and_cover_the_object(tmp_path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    mask = _disk((96, 96), (48, 44), 14)
    n, shaped, differs = 300, 0, 0
    for seed in range(n):
        ref, target, hint, used = D.process_pair(image, mask, image, mask, np.random.default_rng(seed), resolution=64)
        channel = hint[..., 3]
        region = channel > 0.5
        ys, xs = np.nonzero(region)
        is_box = region[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
        assert set(np.unique(channel)) <= {-1.0, 0.0, 1.0}
        if used:
            shaped += 1
            differs += not is_box
        else:
            assert is_box  # the box case: exactly a filled rectangle
    assert _binomial_ok(shaped, n, 0.7), shaped / n
    assert differs > 0.9 * shaped  # a shape mask is not the box
    for seed in range(20):  # the shape mask always covers the object and is one part
        coarse = D.shape_mask(mask, np.random.default_rng(seed))
        assert coarse[mask].all()
        assert cv2.connectedComponents(coarse.astype(np.uint8))[0] == 2


def test_reference_augmentation_is_the_published_one() -> None:
    """Flip (p 0.5, image and mask together) and brightness/contrast within +-0.2 (p 0.5, image only)."""
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :3] = 128
    mask = np.zeros((4, 6), np.uint8)
    mask[:, :2] = 255
    n, flips, tones = 2000, 0, 0
    rng = np.random.default_rng(0)
    for _ in range(n):
        out, m = D.augment_reference(image, mask, rng)
        flipped = bool(m[0, -1])
        assert np.array_equal(m, mask[:, ::-1] if flipped else mask)
        grey = out[0, -1] if flipped else out[0, 0]
        assert 128 * 0.8 - 51 - 1 <= int(grey[0]) <= 128 * 1.2 + 51 + 1
        flips += flipped
        tones += int(grey[0]) != 128
    assert _binomial_ok(flips, n, 0.5) and _binomial_ok(tones, n, 0.5)


def test_dataset_items_are_deterministic_per_seed_and_read_youtube_vos(tmp_path) -> None:
    """Same (seed, k) -> same item in a fresh dataset; another seed or k -> another item. A YouTube-VOS
    folder expands to one video source per object, with that object's palette id as its mask."""
    _youtube_vos(tmp_path / "ytvos")
    (tmp_path / "m.jsonl").write_text(json.dumps({"kind": "youtube-vos", "root": "ytvos", "repeat": 2}) + "\n")
    sources = D.read_sources(tmp_path / "m.jsonl")
    assert [(s.kind, s.instance, len(s.frames)) for s in sources] == [("video", 1, 20), ("video", 2, 10)] * 2
    mask = D.read_instance_mask(sources[0].frames[3].mask, 1, (80, 60))
    assert mask.sum() == 400 and mask[10:30, 8:28].all()

    def items(seed, ks):
        ds = D.AnyDoorDataset(sources, resolution=64, seed=seed)
        return [ds.sample(k) for k in ks]

    a, b, c = items(0, range(4)), items(0, range(4)), items(1, range(4))
    for x, y in zip(a, b):
        assert np.array_equal(x.hint, y.hint) and np.array_equal(x.reference, y.reference)
        assert (x.timestep, x.pair) == (y.timestep, y.pair)
    assert any(not np.array_equal(x.hint, z.hint) for x, z in zip(a, c))
    assert not np.array_equal(a[0].hint, a[2].hint)
    assert all(s.kind == "video" and s.pair[1] - s.pair[0] >= 1 for s in a)
    batch = D.AnyDoorDataset(sources, resolution=64)[0]
    assert batch["hint"].shape == (4, 64, 64) and batch["reference"].shape == (3, 224, 224)
    assert 0 <= float(batch["reference"].min()) and float(batch["reference"].max()) <= 1


def test_manifest_errors_are_one_line(tmp_path) -> None:
    bad = tmp_path / "m.jsonl"
    for line, words in (('{"kind": "video", "frames": []}', "at least 2"), ('{"kind": "nope"}', "unknown kind"),
                        ('[1, 2]', "JSON object"), ('{"kind": "youtube-vos", "root": "x"}', "meta.json"),
                        ('{"image": "a.png", "mask": "a.png", "instance": -1}', "instance"),
                        ('{"image": "a.png", "mask": "a.png", "repeat": 0}', "repeat")):
        bad.write_text(line + "\n")
        with pytest.raises(InputError, match=words):
            D.read_sources(bad)
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(InputError, match="jsonl"):
        D.read_sources(tmp_path / "c.json")
    (tmp_path / "yt").mkdir()
    bad.write_text(json.dumps({"kind": "youtube-vos", "root": "yt"}) + "\n")
    for meta in ("not json", '{"videos": {"v1": {}}}', '{"videos": [1]}'):  # a meta.json of another layout
        (tmp_path / "yt" / "meta.json").write_text(meta)
        with pytest.raises(InputError, match="not a YouTube-VOS meta.json"):
            D.read_sources(bad)


def test_config_example_and_cli_errors(tmp_path, capsys) -> None:
    import yaml

    from diffcompose.cli.main import main
    from diffcompose.methods.anydoor.config import config_from_dict

    repo = Path(__file__).resolve().parents[3]
    cfg = config_from_dict(yaml.safe_load((repo / "src" / "diffcompose" / "methods" / "anydoor" / "train.example.yaml").read_text()))
    assert (cfg.learning_rate, cfg.mixed_precision, cfg.shape_p, cfg.uniform_t_p) == (1e-5, "fp16", 0.7, 0.3)
    with pytest.raises(InputError, match="shape_p"):
        config_from_dict({"data": {"manifest": "m.jsonl", "shape_p": 1.5}, "model": {"init": "tiny"}})
    (tmp_path / "m.jsonl").write_text("")
    (tmp_path / "c.yaml").write_text("data: {manifest: m.jsonl, colour: red}\nmodel: {init: tiny}\n")
    assert main(["train", "anydoor", "--config", str(tmp_path / "c.yaml")]) == 2
    assert "colour" in capsys.readouterr().err


@pytest.mark.slow
def test_train_command_runs_end_to_end(tmp_path, capsys, one_thread) -> None:
    """``diffcompose train anydoor --config C`` (paths relative to the config, flags over keys) writes
    a checkpoint and a final model directory the engine's loader reads."""
    from diffcompose.cli.main import main
    from diffcompose.methods.anydoor.model import load_anydoor

    (tmp_path / "data").mkdir()
    _astronaut_sources(tmp_path / "data")
    (tmp_path / "c.yaml").write_text("data: {manifest: data/m.jsonl, resolution: 64, num_workers: 0}\n"
                                     "model: {init: tiny}\n"
                                     "train: {batch_size: 1, max_steps: 50, gradient_checkpointing: false}\n")
    assert main(["train", "anydoor", "--config", str(tmp_path / "c.yaml"), "--max-steps", "1",
                 "--output-dir", str(tmp_path / "run")]) == 0
    assert "last loss" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint-0000001" / "state.json").is_file()
    assert load_anydoor(tmp_path / "run" / "final").controlnet.config.conditioning_channels == 4


# ----------------------------------------------------------------------------- training


def _train_cfg(manifest: Path, out: Path, **train):
    from diffcompose.methods.anydoor.config import config_from_dict

    base = {"output_dir": str(out), "batch_size": 1, "learning_rate": 1e-3, "checkpoint_every": 2,
            "log_every": 1, "gradient_checkpointing": False, "seed": 3}
    return config_from_dict({"data": {"manifest": str(manifest), "resolution": 64, "num_workers": 0},
                             "model": {"init": "tiny"}, "train": {**base, **train}})


def _eval_loss(model, manifest: Path, n: int = 4) -> float:
    """The loss on ``n`` fixed items with fixed noise (the same numbers for any model)."""
    import torch
    from diffusers import DDPMScheduler

    from diffcompose.methods.anydoor.train import AnyDoorTrainModel, loss_fn

    ds = D.AnyDoorDataset(D.read_sources(manifest), resolution=64, seed=123)
    sched = DDPMScheduler.from_config(model.scheduler_config)
    step = AnyDoorTrainModel(model).eval()
    with torch.no_grad():
        total = 0.0
        for k in range(n):
            batch = {key: v[None] for key, v in ds[k].items()}
            total += float(loss_fn(step, model.vae, sched, batch, torch.Generator().manual_seed(k), torch.float32))
    return total / n


@pytest.mark.slow
def test_training_learns_real_photos_and_changes_only_the_published_parts(tmp_path, one_thread) -> None:
    """Real subject photos (or, without ../shared/testdata, scikit-image's astronaut): 10 steps at a
    high learning rate lower a fixed evaluation loss; the checkpoints hold exactly the published
    trained parts, and the exported model differs from the initial one only there."""
    from safetensors.torch import load_file

    from diffcompose.methods.anydoor.model import load_anydoor
    from diffcompose.methods.anydoor.tiny import ensure_tiny_anydoor
    from diffcompose.methods.anydoor.train import train

    (tmp_path / "data").mkdir()
    manifest = _subject_sources(tmp_path / "data") or _astronaut_sources(tmp_path / "data")
    losses = train(_train_cfg(manifest, tmp_path / "run", max_steps=10, checkpoint_every=10))
    assert len(losses) == 10 and all(np.isfinite(losses))
    before, after = load_anydoor(ensure_tiny_anydoor()), load_anydoor(tmp_path / "run" / "final")
    assert _eval_loss(after, manifest) < 0.9 * _eval_loss(before, manifest)

    saved = load_file(str(tmp_path / "run" / "checkpoint-0000010" / "model.safetensors"))
    trained = ("controlnet.", "unet.up_blocks.", "unet.conv_norm_out.", "unet.conv_out.", "id_extractor.projector.")
    assert all(k.startswith(trained) for k in saved) and not any(k.startswith("controlnet.conv_in") for k in saved)
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    changed = {k for k in b if not np.array_equal(b[k].detach().numpy(), a[k].detach().numpy())}
    assert changed and changed <= set(saved)
    assert any(k.startswith("unet.up_blocks.") for k in changed) and any(k.startswith("controlnet.") for k in changed)
    assert "id_extractor.projector.weight" in changed
    frozen = [k for k in b if k.startswith(("unet.down_blocks.", "unet.mid_block.", "id_extractor.dinov2.", "vae.",
                                            "controlnet.conv_in"))]
    assert frozen and not (set(frozen) & changed)


@pytest.mark.slow
def test_resume_is_exact(tmp_path, one_thread) -> None:
    """4 steps straight == 2 steps, then ``resume: latest`` for 2 more (weights, AdamW moments, losses);
    with gradient checkpointing on, as the published training runs."""
    from safetensors.torch import load_file

    from diffcompose.methods.anydoor.train import train

    manifest = _astronaut_sources(tmp_path)
    straight = train(_train_cfg(manifest, tmp_path / "a", max_steps=4, gradient_checkpointing=True))
    train(_train_cfg(manifest, tmp_path / "b", max_steps=2, gradient_checkpointing=True))
    resumed = train(_train_cfg(manifest, tmp_path / "b", max_steps=4, gradient_checkpointing=True, resume="latest"))
    assert resumed == straight
    for name in ("model.safetensors", "optimizer.safetensors"):
        x = load_file(str(tmp_path / "a" / "checkpoint-0000004" / name))
        y = load_file(str(tmp_path / "b" / "checkpoint-0000004" / name))
        assert x.keys() == y.keys() and all(np.array_equal(x[k].numpy(), y[k].numpy()) for k in x)


@pytest.mark.slow
def test_a_new_anydoor_starts_from_sd_and_dinov2(tmp_path, one_thread) -> None:
    """``init_kind: sd``: the ControlNet copies the SD UNet's encoder with a zero ``conv_in`` and zero output
    convolutions, so the new model predicts exactly what the text-to-image UNet does on the ID tokens."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from diffcompose.methods.anydoor.tiny import tiny_anydoor_unet_config
    from diffcompose.methods.anydoor.train import build_model
    from diffcompose.models.tiny import tiny_scheduler_config, tiny_vae_config

    sd = tmp_path / "sd"
    torch.manual_seed(0)
    UNet2DConditionModel(**tiny_anydoor_unet_config()).save_pretrained(sd / "unet")
    AutoencoderKL(**tiny_vae_config()).save_pretrained(sd / "vae")
    DDIMScheduler(**tiny_scheduler_config()).save_pretrained(sd / "scheduler")
    (sd / "model_index.json").write_text("{}")
    model = build_model(str(sd), "auto", "tiny", seed=1)
    unet = UNet2DConditionModel.from_pretrained(str(sd / "unet"))
    assert torch.equal(model.controlnet.down_blocks[0].resnets[0].conv1.weight, unet.down_blocks[0].resnets[0].conv1.weight)
    assert not model.controlnet.conv_in.weight.any()
    x, tokens = torch.randn(1, 4, 8, 8), torch.randn(1, 257, unet.config.cross_attention_dim)
    hint = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x, torch.tensor([10]), hint, tokens), unet(x, 10, tokens).sample, atol=1e-5)
    again = build_model(str(sd), "sd", "tiny", seed=1)
    assert torch.equal(again.id_extractor.projector.weight, model.id_extractor.projector.weight)  # seeded
    UNet2DConditionModel(**tiny_anydoor_unet_config(in_channels=9)).save_pretrained(sd / "unet")
    with pytest.raises(InputError, match="4 input channels"):  # an inpainting UNet is not a starting point
        build_model(str(sd), "sd", "tiny")


@pytest.mark.slow
def test_progress_and_cancel_stop_within_a_step_and_resume_latest_continues(tmp_path, one_thread) -> None:
    """The shared loop (``training/loop.py``) reports each optimizer step once, counting from the resumed
    step; a cancel stops right after the step in progress, leaving its checkpoints and no export."""
    from diffcompose.errors import Cancelled
    from diffcompose.methods.anydoor.train import train
    from diffcompose.progress import CancelToken

    manifest = _astronaut_sources(tmp_path)
    token, events = CancelToken(), []

    def listen(event) -> None:
        events.append((event.task, event.step, event.total))
        if event.step == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        train(_train_cfg(manifest, tmp_path / "run", max_steps=3, checkpoint_every=1), on_progress=listen,
              cancel=token)
    assert events == [("train anydoor", 1, 3), ("train anydoor", 2, 3)]
    kept = sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith("."))
    assert kept == ["checkpoint-0000001", "checkpoint-0000002"]  # no step 3, no final export

    events.clear()
    losses = train(_train_cfg(manifest, tmp_path / "run", max_steps=3, checkpoint_every=1, resume="latest"),
                   on_progress=lambda e: events.append((e.task, e.step, e.total)))
    assert events == [("train anydoor", 3, 3)] and len(losses) == 3 and all(np.isfinite(losses))
    assert (tmp_path / "run" / "final").is_dir()
