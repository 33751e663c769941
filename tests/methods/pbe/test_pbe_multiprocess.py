"""Data-parallel training on two CPU processes (gloo), launched by ``accelerate launch`` as on GPUs.

The test runs this file as the training script of ``accelerate launch --multi_gpu
--num_processes 2`` with ``ACCELERATE_USE_CPU=1`` (accelerate's multi-CPU mode: torch's
elastic launcher, one process per rank, a gloo process group). Each rank records what it
saw; the test checks that the ranks trained on different samples, held identical weights
after every optimizer step, and that only the main process wrote checkpoints and the export.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _worker(config: str, records: str) -> None:
    """One rank: run ``train`` with spies on the data, the weights and the writers."""
    import faulthandler
    import hashlib

    import torch

    # A rank still running after 120 s prints every thread's stack and exits, so a hang fails the test with
    # where each rank was, not with the parent's bare timeout.
    faulthandler.dump_traceback_later(120, exit=True)
    from accelerate import PartialState

    from diffcompose.methods.pbe import data as dataset
    from diffcompose.methods.pbe import train as trainer
    from diffcompose.methods.pbe.config import load_config
    from diffcompose.training import loop

    torch.set_num_threads(1)
    rec: dict = {"samples": [], "batches": [], "weights": [], "writes": []}

    def digest(tensors) -> str:
        h = hashlib.sha256()
        for t in tensors:
            h.update(t.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    getitem, loss = dataset.SelfReferenceDataset.__getitem__, trainer._loss
    save, export = loop.write_checkpoint, trainer.export_model

    def spy_getitem(self, k):
        rec["samples"].append(int(k))
        return getitem(self, k)

    def spy_loss(model, vae, noise_sched, batch, *args, **kwargs):  # weights here = after the previous step
        rec["weights"].append(digest(p for p in model.parameters() if p.requires_grad))
        rec["batches"].append(digest([batch["image"], batch["mask"]]))
        return loss(model, vae, noise_sched, batch, *args, **kwargs)

    def spy_save(path, *args, **kwargs):
        rec["writes"].append(Path(path).name)
        return save(path, *args, **kwargs)

    def spy_export(out, *args, **kwargs):
        rec["writes"].append(Path(out).name)
        return export(out, *args, **kwargs)

    from accelerate import Accelerator

    end_training = Accelerator.end_training

    def spy_end_training(self):  # the DDP wrapper (its reducer holds the group) must be gone before the teardown
        import gc

        from torch.nn.parallel import DistributedDataParallel

        rec["ddp_at_teardown"] = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
        return end_training(self)

    Accelerator.end_training = spy_end_training
    dataset.SelfReferenceDataset.__getitem__ = spy_getitem
    trainer._loss, trainer.export_model = spy_loss, spy_export
    loop.write_checkpoint = spy_save  # the shared loop writes every trainer's checkpoints
    rec["losses"] = trainer.train(load_config(Path(config)))
    state = PartialState()  # the process-wide state train's Accelerator set up (read after: it must create it)
    rec.update(rank=state.process_index, world=state.num_processes, type=str(state.distributed_type),
               backend=state.backend)
    Path(records, f"rank{rec['rank']}.json").write_text(json.dumps(rec))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_share_weights_split_data_and_one_writes(tmp_path, photo):
    pytest.importorskip("accelerate")
    torch = pytest.importorskip("torch")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch without gloo")
    from PIL import Image

    from test_pbe_train import write_sd_init

    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(photo[:, ::-1]).save(tmp_path / "b.png")
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"image": "a.png", "boxes": [[150, 40, 340, 260], [20, 300, 200, 500]]}) + "\n"
        + json.dumps({"image": "b.png", "boxes": [[172, 40, 362, 260]]}) + "\n")
    write_sd_init(tmp_path / "init")
    out, records = tmp_path / "run", tmp_path / "records"
    records.mkdir()
    (tmp_path / "cfg.yaml").write_text(
        "data: {manifest: train.jsonl, resolution: 64, num_workers: 0}\n"
        "model: {init: init, image_encoder: tiny}\n"
        f"train: {{output_dir: {out}, max_steps: 3, checkpoint_every: 2, batch_size: 2, learning_rate: 1.0e-3,\n"
        "        warmup_steps: 0, gradient_checkpointing: false, seed: 5}\n")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), __file__, str(tmp_path / "cfg.yaml"), str(records)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0, r1 = (json.loads((records / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["backend"] == "gloo" and "MULTI_CPU" in r0["type"]
    # different data per rank: disjoint sample ids, different batches at every step
    assert len(r0["samples"]) == len(r1["samples"]) == 3 * 2
    assert not set(r0["samples"]) & set(r1["samples"])
    assert all(a != b for a, b in zip(r0["batches"], r1["batches"]))
    # identical weights on both ranks before the first step and after every step, and they do change
    assert len(r0["weights"]) == 3 and r0["weights"] == r1["weights"]
    assert len(set(r0["weights"])) == 3
    assert r0["losses"] == pytest.approx(r1["losses"])  # the logged loss is the mean over ranks
    # No rank still holds a DDP wrapper when the process group is destroyed (see training/loop.py: a
    # reducer freeing the group's last reference could deadlock with gloo's worker threads).
    assert r0["ddp_at_teardown"] == r1["ddp_at_teardown"] == 0
    # only the main process writes
    assert r0["writes"] == ["checkpoint-0000002", "checkpoint-0000003", "final"] and r1["writes"] == []
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["checkpoint-0000002", "checkpoint-0000003", "final"]


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
