"""ObjectStitch's training recipe and MureObjectStitch's few-shot fine-tuning, on tiny models.

The recipe's parts, each against the public code's facts (``ldm/data/open_images.py``,
``ldm/models/diffusion/ddpm.py``, ``configs/v1.yaml``): the object cut out black by its mask
and padded 10 px, the augmentation families and their ranges, the background crop keeping
the box, the box as the hole, the UNet alone trained, whole micro-batches on the unconditional
vector, and the few-shot condition as every photo's tokens concatenated. Then a few steps
end to end on two CPU processes, whose export the engine loads.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffcompose.methods.objectstitch.augment import ObjectAugment  # noqa: E402
from diffcompose.methods.objectstitch.config import config_from_dict  # noqa: E402
from diffcompose.methods.objectstitch.data import ObjectStitchDataset, few_shot_records  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def shots(tmp_path, photo):
    """A few-shot folder: three photos of one 'object' (a bright square) with masks, and a stray file."""
    from PIL import Image

    folder = tmp_path / "shots"
    folder.mkdir()
    for i, (x, y) in enumerate([(40, 30), (90, 60), (20, 80)]):
        img = photo[:160, :200].copy()
        img[y:y + 50, x:x + 60] = (250, 30, 30)
        mask = np.zeros(img.shape[:2], dtype=np.uint8)
        mask[y:y + 50, x:x + 60] = 255
        Image.fromarray(img).save(folder / f"{i}.jpg", quality=95)
        Image.fromarray(mask).save(folder / f"{i}.png")
    Image.fromarray(photo[:50, :50]).save(folder / "9.jpg")  # no mask: not a shot
    return folder


# ----------------------------------------------------------------------------- data

def test_augmentation_recipe_statistics() -> None:
    """Crop p 0.5, flip p 0.5, perspective p 0.5, rotation always within 20 degrees, jitter ranges and orders."""
    aug = ObjectAugment()
    rng = np.random.default_rng(0)
    plans = [aug.draw(rng) for _ in range(2000)]
    for share, expected in ((np.mean([p.crop is not None for p in plans]), 0.5),
                            (np.mean([p.flip for p in plans]), 0.5),
                            (np.mean([p.perspective is not None for p in plans]), 0.5)):
        assert abs(share - expected) < 0.04
    angles = np.array([p.angle for p in plans])
    assert angles.min() >= -20 and angles.max() <= 20 and angles.std() > 10
    jitter = {name: [] for name in ("brightness", "contrast", "saturation", "hue")}
    for p in plans:
        for name, value in p.jitter:
            jitter[name].append(value)
    for name in ("brightness", "contrast", "saturation"):
        assert 0.7 <= min(jitter[name]) < 0.72 and 1.28 < max(jitter[name]) <= 1.3
    assert -0.05 <= min(jitter["hue"]) < -0.048 and 0.048 < max(jitter["hue"]) <= 0.05
    assert len({tuple(n for n, _ in p.jitter) for p in plans}) == 24  # every order of the four
    moves = np.concatenate([p.perspective.ravel() for p in plans if p.perspective is not None])
    assert moves.min() >= 0 and 0.02 < moves.mean() < 0.06  # |N(0, s)|, s in [0.01, 0.1]


def test_background_crop_keeps_the_box() -> None:
    aug = ObjectAugment()
    image = np.zeros((100, 200, 3), np.uint8)
    mask = np.zeros((100, 200), np.uint8)
    box = (80, 30, 120, 60)
    for shares in [(1, 1, 1, 1), (0.5, 0.2, 0.9, 0.0), (0, 0, 0, 0)]:
        img, b, m = aug.crop_background(image, box, mask, shares)
        assert b[2] - b[0] == 40 and b[3] - b[1] == 30
        assert 0 <= b[0] and b[2] <= img.shape[1] and 0 <= b[1] and b[3] <= img.shape[0] and m.shape == img.shape[:2]
    img, b, _ = aug.crop_background(image, box, mask, (1, 1, 1, 1))
    # horizontally up to the free space (capped by 200 - 40/0.8 = 150), vertically half of 100 - 30/0.8
    assert img.shape[1] == 40 and img.shape[0] == 100 - 30 - 31


def test_a_sample_is_the_photo_its_box_and_its_black_cut_out_object(shots) -> None:
    rec = few_shot_records(shots, 5)
    assert [r.image.name for r in rec] == ["0.jpg", "1.jpg", "2.jpg"]  # 9.jpg has no mask
    plain = ObjectAugment(crop_bg_p=0, brightness=0, contrast=0, saturation=0, hue=0, flip_p=0, rotate_limit=0,
                          perspective_p=0)
    ds = ObjectStitchDataset(rec[:1], resolution=64, object_size=32, augment=plain)
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and s["reference"].shape == (1, 3, 32, 32)
    hole = s["mask"][0].numpy()
    ys, xs = np.nonzero(hole)  # the object's box 40..100 x 30..80 padded by 10, on 200x160 -> 64x64
    assert set(np.unique(hole)) == {0.0, 1.0}
    assert abs(xs.min() - 30 * 64 / 200) <= 1 and abs(xs.max() + 1 - 110 * 64 / 200) <= 1
    assert abs(ys.min() - 20 * 64 / 160) <= 1 and abs(ys.max() + 1 - 90 * 64 / 160) <= 1
    ref = s["reference"][0].numpy()
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(ref[:, 0, 0], -mean / std, rtol=1e-5)  # the padding around the object: black
    np.testing.assert_allclose(ref[:, 16, 16] * std + mean, np.array([250, 30, 30]) / 255, atol=0.05)


def test_few_shot_samples_cycle_the_photos_and_carry_every_object(shots) -> None:
    ds = ObjectStitchDataset(few_shot_records(shots, 5), resolution=64, object_size=32, few_shot=True)
    assert ds[0]["reference"].shape == (3, 3, 32, 32)
    assert ds[1]["reference"].shape == (3, 3, 32, 32)
    two = ObjectStitchDataset(few_shot_records(shots, 2), resolution=64, object_size=32, few_shot=True)
    assert two[0]["reference"].shape[0] == 2  # few_shot_images: the first N photos


def test_config_refuses_what_it_cannot_train_on(tmp_path) -> None:
    from diffcompose.errors import InputError
    from diffcompose.methods.objectstitch.config import check_few_shot

    base = {"data": {"manifest": "x.jsonl"}, "model": {"init": "tiny"}}
    assert config_from_dict(base).train_adaptor is False
    with pytest.raises(InputError, match="model.init"):
        config_from_dict({"data": {"manifest": "x.jsonl"}})
    with pytest.raises(InputError, match="few-shot folder not found"):
        check_few_shot(config_from_dict({**base, "data": {"few_shot": str(tmp_path / "none")}}))
    with pytest.raises(InputError, match="no photo N.jpg with its mask"):
        check_few_shot(config_from_dict({**base, "data": {"few_shot": str(tmp_path)}}))


def test_the_few_shot_flag_is_on_the_command_line_and_replaces_the_manifest(tmp_path, shots, capsys) -> None:
    import argparse

    from diffcompose.cli.main import main
    from diffcompose.methods.objectstitch.config import load_config
    from diffcompose.training.run import configured

    (tmp_path / "x.jsonl").write_text("")
    (tmp_path / "cfg.yaml").write_text("data: {manifest: x.jsonl}\nmodel: {init: tiny}\n")
    args = argparse.Namespace(config=tmp_path / "cfg.yaml", few_shot=str(shots), max_steps=None, output_dir=None,
                              resume=None)
    cfg = configured(args, load_config, ("few_shot",))
    assert cfg.few_shot == str(shots) and cfg.manifest == str(shots)
    with pytest.raises(SystemExit):
        main(["train", "objectstitch", "--help"])
    assert "--few-shot" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the model and the loss

@pytest.fixture(scope="module")
def built():
    from diffcompose.methods.objectstitch.train import build_model

    return build_model("tiny", train_adaptor=False)


def test_only_the_unet_trains_unless_the_adaptor_is_asked_for(built) -> None:
    from diffcompose.methods.objectstitch.train import ObjectStitchTrainModel, trainable

    model, _, _ = built
    names = [n for n, _ in trainable(model)]
    assert names and all(n.startswith("unet.") for n in names)
    with_adaptor = ObjectStitchTrainModel(model.unet, model.encoder, train_adaptor=True)
    extra = {n.split(".")[1] for n, _ in trainable(with_adaptor) if not n.startswith("unet.")}
    assert extra == {"mapper", "final_layer_norm"}  # never proj_out, the CLIP tower or the unconditional vector
    model.encoder.requires_grad_(False)


def test_the_condition_is_every_objects_tokens_concatenated_or_the_unconditional_vector(built) -> None:
    model, _, _ = built
    enc = model.encoder
    objects = torch.randn(2, 3, 3, enc.image_size, enc.image_size)
    seen = []
    handle = model.unet.register_forward_pre_hook(lambda _, a, k: seen.append(k["encoder_hidden_states"]),
                                                  with_kwargs=True)
    try:
        with torch.no_grad():
            z = torch.randn(2, 4, 8, 8)
            model(z, z, torch.ones(2, 1, 8, 8), objects, torch.tensor([False, True]), torch.tensor([10, 10]))
    finally:
        handle.remove()
    ctx = seen[0]
    tokens = (enc.image_size // enc.config.patch_size) ** 2 + 1
    assert ctx.shape == (2, 3 * tokens, enc.proj_size)
    with torch.no_grad():
        torch.testing.assert_close(ctx[0, tokens:2 * tokens], enc(objects[0, 1:2])[0])
    torch.testing.assert_close(ctx[1], enc.uncond_vector[0].expand(3 * tokens, -1))


# ----------------------------------------------------------------------------- two processes, end to end

def _worker(config: str, records: str) -> None:
    import hashlib

    from accelerate import PartialState

    from diffcompose.methods.objectstitch import train as trainer
    from diffcompose.methods.objectstitch.config import load_config
    from diffcompose.methods.pbe import train as pbe_train

    torch.set_num_threads(1)
    rec: dict = {"weights": [], "batches": []}
    loss = pbe_train._loss

    def spy(model, vae, noise_sched, batch, *args, **kwargs):
        rec["weights"].append(hashlib.sha256(b"".join(
            p.detach().float().numpy().tobytes() for p in model.parameters() if p.requires_grad)).hexdigest())
        rec["batches"].append(hashlib.sha256(batch["image"].numpy().tobytes()).hexdigest())
        rec["tokens"] = int(batch["reference"].shape[1])
        return loss(model, vae, noise_sched, batch, *args, **kwargs)

    pbe_train._loss = spy
    rec["losses"] = trainer.train(load_config(Path(config)))
    state = PartialState()
    rec.update(rank=state.process_index, world=state.num_processes)
    Path(records, f"rank{rec['rank']}.json").write_text(json.dumps(rec))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_few_shot_fine_tuning_on_two_cpu_processes_and_the_engine_loads_it(tmp_path, shots) -> None:
    pytest.importorskip("accelerate")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch without gloo")
    out, records = tmp_path / "run", tmp_path / "records"
    records.mkdir()
    (tmp_path / "cfg.yaml").write_text(
        "data: {few_shot: shots, resolution: 64, num_workers: 0}\n"
        "model: {init: tiny}\n"
        f"train: {{output_dir: {out}, max_steps: 2, checkpoint_every: 2, batch_size: 1, learning_rate: 1.0e-3,\n"
        "        warmup_steps: 0, gradient_checkpointing: false, seed: 3}\n")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).resolve().parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), __file__, str(tmp_path / "cfg.yaml"), str(records)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((records / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["tokens"] == 3  # every few-shot photo conditions each step
    assert all(a != b for a, b in zip(r0["batches"], r1["batches"]))  # each rank its own photo
    assert r0["weights"] == r1["weights"] and len(set(r0["weights"])) == 2  # in step, and training moves them
    assert r0["losses"] == pytest.approx(r1["losses"]) and len(r0["losses"]) == 2

    from diffcompose.methods.objectstitch.engine import ObjectStitchEngine
    from diffcompose.methods.objectstitch.tiny import ensure_tiny_objectstitch
    from diffcompose.models.loader import load_component

    final = out / "final"
    engine = ObjectStitchEngine(device="cpu", model=str(final)).load()
    from diffcompose.models.hub import declared_classes, engine_class

    assert declared_classes(final) == {engine_class("objectstitch")}  # offered to objectstitch only
    tuned = load_component(final, "unet", torch.device("cpu"), torch.float32)
    base = load_component(ensure_tiny_objectstitch(), "unet", torch.device("cpu"), torch.float32)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), base.state_dict().values()))
    img = np.asarray(engine.insert(np.zeros((64, 64, 3), np.uint8), None, np.full((32, 32, 3), 200, np.uint8),
                                   box=(10, 10, 40, 50), steps=2, resolution=64, seed=0))
    assert img.shape == (64, 64, 3)


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
