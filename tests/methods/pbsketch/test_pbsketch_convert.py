"""Converting a Paint-by-Sketch checkpoint (the public layout, synthetic and tiny) with ``convert pbsketch``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pbe"))  # Paint-by-Example's checkpoint writer

from test_pbe_convert import original_checkpoint, save_lightning_checkpoint  # noqa: E402

from diffcompose.errors import InputError  # noqa: E402
from diffcompose.methods.pbsketch.convert import convert_pbsketch  # noqa: E402
from diffcompose.methods.pbsketch.tiny import write_tiny_pbsketch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "logvar")


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """A tiny model and its checkpoint in the public layout: Paint-by-Example's keys, a 12-channel first
    convolution, the sampler's schedule buffers beside the weights (as ``LatentDiffusion`` saves them)."""
    base = tmp_path_factory.mktemp("pbsketch-convert")
    tiny = write_tiny_pbsketch(base / "tiny", seed=2)
    state = original_checkpoint(tiny, torch.Generator().manual_seed(1))
    assert state["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 12
    state |= {k: torch.rand(1000) for k in SCHEDULE_BUFFERS}
    return base, tiny, state


def test_converts_every_part_and_the_engine_loads_it(public) -> None:
    from diffusers import UNet2DConditionModel

    from diffcompose.methods.pbsketch.engine import PaintBySketchEngine

    base, tiny, state = public
    ckpt = base / "model.ckpt"
    save_lightning_checkpoint(ckpt, state)
    out = convert_pbsketch(ckpt, base / "out", like=tiny)
    theirs = UNet2DConditionModel.from_pretrained(str(tiny / "unet")).state_dict()
    engine = PaintBySketchEngine(device="cpu", model=str(out)).load()
    mine = engine.c.unet.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    torch.testing.assert_close(engine.c.encoder.uncond_vector.reshape(-1), state["learnable_vector"].reshape(-1))
    assert engine.c.unet.config.in_channels == 12
    from diffcompose.models.hub import declared_classes, engine_class

    assert declared_classes(out) == {engine_class("pbsketch")}  # the model picker offers it to pbsketch only


def test_refuses_unknown_weights_and_a_paint_by_example_checkpoint(public, tmp_path) -> None:
    _, tiny, state = public
    odd = tmp_path / "odd.safetensors"
    from safetensors.torch import save_file

    save_file({**state, "proj_to_edge.0.weight": torch.zeros(2, 2)}, str(odd))
    with pytest.raises(InputError, match=r"weights of no Paint-by-Sketch part: proj_to_edge\.0\.weight"):
        convert_pbsketch(odd, tmp_path / "a", like=tiny)
    nine = dict(state)
    nine["model.diffusion_model.input_blocks.0.0.weight"] = nine["model.diffusion_model.input_blocks.0.0.weight"][:, :9]
    save_file({k: v.contiguous() for k, v in nine.items()}, str(tmp_path / "pbe.safetensors"))
    with pytest.raises(InputError, match="takes 9 input channels, not 12"):
        convert_pbsketch(tmp_path / "pbe.safetensors", tmp_path / "b", like=tiny)
