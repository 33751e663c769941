"""``convert objectstitch`` on a checkpoint with the public key names, built from a tiny model.

The public ``ObjectStitch.pth`` is ``{"state_dict": ...}`` of ``LatentDiffusion``: the UNet and VAE in
LDM names, ``cond_stage_model.transformer.*`` (HF CLIP vision), ``cond_stage_model.mapper.resblocks.*``,
``cond_stage_model.final_ln.*``, ``proj_out.*``, ``learnable_vector`` and the noise schedule's buffers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pbe"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_objectstitch_parity import public_state  # noqa: E402
from test_pbe_convert import original_checkpoint  # noqa: E402

from diffcompose.errors import InputError, WeightsMissingError  # noqa: E402
from diffcompose.methods.objectstitch.convert import convert_objectstitch  # noqa: E402
from diffcompose.methods.objectstitch.engine import ObjectStitchEngine  # noqa: E402
from diffcompose.methods.objectstitch.tiny import write_tiny_objectstitch  # noqa: E402
from diffcompose.methods.pbe.encoder import ExemplarEncoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def public_checkpoint(tiny: Path) -> dict[str, torch.Tensor]:
    """Every family of the public file, from the tiny model's own weights (so the conversion can be compared)."""
    state = original_checkpoint(tiny, torch.Generator().manual_seed(0))  # UNet, VAE and CLIP in LDM names
    state = {k: v for k, v in state.items() if k.startswith(("model.diffusion_model.", "first_stage_model."))}
    state |= public_state(ExemplarEncoder.from_pretrained(tiny / "image_encoder"))
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    state |= {"betas": betas.float(), "alphas_cumprod": torch.cumprod(1 - betas, 0).float(), "logvar": torch.zeros(1000)}
    return state


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("os_convert")
    tiny = write_tiny_objectstitch(base / "tiny", seed=2)
    ckpt = base / "ObjectStitch.pth"
    torch.save({"state_dict": public_checkpoint(tiny)}, ckpt)
    return tiny, ckpt, convert_objectstitch(ckpt, base / "out", like=tiny)


def test_the_converted_model_is_the_source_model(converted) -> None:
    """Every family mapped: the converted folder inserts exactly what the model it was built from does."""
    tiny, _, out = converted
    args = (np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8), None,
            np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    kw = dict(box=(8, 16, 40, 56), steps=2, resolution=64, seed=3, paste_back=False)
    a = np.asarray(ObjectStitchEngine(device="cpu", model=str(tiny)).load().insert(*args, **kw))
    b = np.asarray(ObjectStitchEngine(device="cpu", model=str(out)).load().insert(*args, **kw))
    np.testing.assert_array_equal(a, b)
    assert ExemplarEncoder.from_pretrained(out / "image_encoder").tokens == "patches"
    from diffcompose.models.hub import declared_classes, engine_class

    assert declared_classes(out) == {engine_class("objectstitch")}  # the model picker offers it to objectstitch only


def test_an_unknown_key_is_one_line(converted, tmp_path) -> None:
    tiny, ckpt, _ = converted
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    state["cond_stage_model.extra_head.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(InputError, match=r"no ObjectStitch part: cond_stage_model\.extra_head\.weight$"):
        convert_objectstitch(bad, tmp_path / "out", like=tiny)
    assert not (tmp_path / "out").exists()


def test_a_missing_family_is_one_line(converted, tmp_path) -> None:
    tiny, ckpt, _ = converted
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("cond_stage_model.mapper.")}
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(InputError, match="not a ObjectStitch checkpoint: no 'cond_stage_model.mapper.resblocks.*'"):
        convert_objectstitch(bad, tmp_path / "out", like=tiny)


def test_a_paint_by_example_model_is_refused_in_one_line(tmp_path) -> None:
    from diffcompose.methods.pbe.tiny import write_tiny_pbe

    pbe = write_tiny_pbe(tmp_path / "pbe")
    with pytest.raises(WeightsMissingError, match="is a Paint-by-Example model"):
        ObjectStitchEngine(device="cpu", model=str(pbe)).load()


def test_the_cli_converts_and_refuses(converted, tmp_path, capsys) -> None:
    from diffcompose.cli.main import main

    tiny, ckpt, _ = converted
    assert main(["convert", "objectstitch", str(ckpt), str(tmp_path / "cli"), "--like", str(tiny)]) in (0, None)
    assert (tmp_path / "cli" / "image_encoder" / "config.json").is_file()
    capsys.readouterr()
    assert main(["convert", "objectstitch", str(tmp_path / "missing.pth"), str(tmp_path / "cli2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint not found" in err
