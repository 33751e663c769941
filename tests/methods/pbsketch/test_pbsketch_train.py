"""Paint-by-Sketch training: the sketch extraction (edge detector, binarisation), the dataset's sketch
channels, and ``train pbsketch`` on Paint-by-Example's trainer, on one and on two CPU processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from diffcompose.errors import InputError  # noqa: E402
from diffcompose.methods.pbe.data import read_records  # noqa: E402
from diffcompose.methods.pbsketch.config import config_from_dict, load_config  # noqa: E402
from diffcompose.methods.pbsketch.extract import binarize, training_sketch  # noqa: E402
from diffcompose.methods.pbsketch.sketch import sketch_pixels  # noqa: E402
from diffcompose.methods.pbsketch.train import SketchDataset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def write_sd_init(root: Path) -> Path:
    """A very small SD text-to-image directory (training widens its 4 input channels to 12)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from diffcompose.models.tiny import tiny_scheduler_config, tiny_unet_config, tiny_vae_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        UNet2DConditionModel(**tiny_unet_config(
            in_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8)).save_pretrained(root / "unet")
        AutoencoderKL(**tiny_vae_config()).save_pretrained(root / "vae")
    DDIMScheduler(**tiny_scheduler_config()).save_pretrained(root / "scheduler")
    return root


@pytest.fixture
def data(tmp_path, photo):
    """Two photos, not square (so a training crop is a part of the image, not all of it)."""
    Image.fromarray(photo[:, :400]).save(tmp_path / "a.png")
    Image.fromarray(photo[:, ::-1][:, :400]).save(tmp_path / "b.png")
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"image": "a.png", "boxes": [[150, 40, 340, 260], [20, 300, 200, 500]]}) + "\n"
        + json.dumps({"image": "b.png", "boxes": [[60, 40, 250, 260]]}) + "\n")
    return tmp_path


# ----------------------------------------------------------------------------- the sketch

def test_binarisation_is_the_public_threshold() -> None:
    """``binarize_sketch.py``: above 153 a stroke, 153 and below nothing."""
    edges = np.array([[0, 152, 153, 154, 255]], np.uint8)
    assert binarize(edges).tolist() == [[0, 0, 0, 1, 1]]


def test_the_training_sketch_is_canny_or_the_given_edge_map_binarised(tmp_path, photo) -> None:
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    strokes = training_sketch(photo, tmp_path / "a.png")
    np.testing.assert_array_equal(strokes, (cv2.Canny(grey, 100, 200) > 0).astype(np.float32))
    assert 0.01 < strokes.mean() < 0.5
    thick = training_sketch(photo, tmp_path / "a.png", dilate=1)
    assert thick.sum() > strokes.sum() and (thick >= strokes).all()

    soft = np.tile(np.arange(256, dtype=np.uint8), (photo.shape[0], 2))[:, :photo.shape[1]]
    Image.fromarray(soft).save(tmp_path / "a.png")  # an edge map made beforehand (e.g. PiDiNet's), grey levels
    given = training_sketch(photo, Path("photos/a.jpg"), sketch_dir=str(tmp_path))
    np.testing.assert_array_equal(given, (soft > 153).astype(np.float32))
    with pytest.raises(InputError, match="no edge map for"):
        training_sketch(photo, Path("photos/c.jpg"), sketch_dir=str(tmp_path))


def test_the_dataset_gives_the_sketch_inside_the_hole_with_the_image(data) -> None:
    cfg = config_from_dict({"data": {"manifest": str(data / "train.jsonl"), "resolution": 64}})
    ds = SketchDataset(read_records(data / "train.jsonl"), cfg, 32)
    item = ds[3]
    image, hole, _, full, crop, path = ds.draw(3)
    assert crop.width < full.shape[1]  # a part of the image
    strokes = training_sketch(full, path)
    expected = cv2.resize(strokes[crop.slices], (64, 64), interpolation=cv2.INTER_LINEAR)
    assert item["extra"].shape == (3, 64, 64)
    np.testing.assert_array_equal(item["extra"].numpy(), sketch_pixels(expected, hole))
    outside = hole == 0
    assert (item["extra"].numpy()[:, outside] == -1).all()
    assert (item["extra"].numpy()[:, hole > 0.5] > 0).any()  # some stroke inside the hole
    torch.testing.assert_close(item["image"], ds.tensors(image, hole, ds.draw(3)[2])["image"])


def test_config_checks_its_sketch_keys(data) -> None:
    with pytest.raises(InputError, match="sketch_threshold"):
        config_from_dict({"data": {"manifest": str(data / "train.jsonl"), "sketch_threshold": 300}})
    (data / "cfg.yaml").write_text("data: {manifest: train.jsonl, sketch_dir: edges}\n")
    with pytest.raises(InputError, match="sketch_dir not found"):
        load_config(data / "cfg.yaml")


# ----------------------------------------------------------------------------- training

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_train_pbsketch_on_two_cpu_processes(data) -> None:
    """``accelerate launch -m diffcompose train pbsketch`` with 2 processes (gloo), from SD text-to-image: one
    rank writes; the export is a 12-channel model whose sketch channels (started at zero) were trained and
    which the engine paints with."""
    from diffcompose.methods.pbsketch.engine import PaintBySketchEngine

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch without gloo")
    write_sd_init(data / "init")
    out = data / "run"
    (data / "cfg.yaml").write_text(
        "data: {manifest: train.jsonl, resolution: 64, num_workers: 0}\n"
        "model: {init: init, image_encoder: tiny}\n"
        f"train: {{output_dir: {out}, max_steps: 2, checkpoint_every: 2, batch_size: 1, learning_rate: 1.0e-3,\n"
        "        warmup_steps: 0, gradient_checkpointing: false, seed: 5, log_every: 1}\n")
    import diffcompose

    src = Path(diffcompose.__file__).resolve().parents[1]  # the package this test imported, in the ranks too
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "diffcompose", "train", "pbsketch",
           "--config", str(data / "cfg.yaml")]
    proc = subprocess.run(cmd, env=env, cwd=data, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["checkpoint-0000002", "final"]
    state = json.loads((out / "checkpoint-0000002" / "state.json").read_text())
    assert state["step"] == 2
    engine = PaintBySketchEngine(device="cpu", model=str(out / "final")).load()
    assert engine.c.unet.config.in_channels == 12
    from diffcompose.models.hub import declared_classes, engine_class

    assert declared_classes(out / "final") == {engine_class("pbsketch")}  # offered to pbsketch only
    assert engine.c.unet.conv_in.weight[:, 9:].abs().max() > 0
    photo = np.asarray(Image.open(data / "a.png"))[:64, :64]
    hole = np.zeros((64, 64), bool)
    hole[16:48, 16:48] = True
    sketch = np.zeros((64, 64), np.uint8)
    sketch[20:44, 28:36] = 255
    assert engine.paint(photo, hole, photo, sketch=sketch, steps=2, resolution=64).size == (64, 64)
