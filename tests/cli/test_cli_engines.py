"""Several engines for one task: per-engine options in --help and validation, auto by priority,
and the one-line error of a base install asked for a diffusion engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
from PIL import Image

from diffcompose.cli.main import build_parser, main
from diffcompose.methods.engine import Engine
from diffcompose.methods.options import check_range, option
from diffcompose.methods.registry import EngineInfo, engines_for, register, resolve_engine, unregister


@dataclass(frozen=True)
class FakePaintOptions:
    steps: int = option(7, "fake steps")
    scheduler: Literal["unipc", "ddim"] = option("unipc", "fake sampler")
    strength: float = option(0.5, "fake strength")

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 9)


class FakePaint(Engine):
    """Paints the window's mask in a colour that encodes its options (so the test can read them back)."""

    name = "fake"

    def _paint(self, *, image, mask, reference, reference_mask, options, ctx):
        out = image.copy()
        out[mask] = (options.steps * 10, 200 if options.scheduler == "unipc" else 100, int(options.strength * 100))
        return [out]


def _register(priority: int = 20, wants_accelerator: bool = False) -> None:
    register(EngineInfo("fake", f"{__name__}:FakePaint", tasks={"paint": FakePaintOptions}, priority=priority,
                        wants_accelerator=wants_accelerator, summary="a test double"))


@pytest.fixture
def fake():
    _register()
    try:
        yield
    finally:
        unregister("fake")
        from diffcompose.methods.manager import default_manager

        for e in default_manager().loaded():
            if e.name == "fake":
                default_manager().unload(e)


@pytest.fixture
def files(tmp_path, photo):
    img = photo[::4, ::4]
    mask = np.zeros(img.shape[:2], bool)
    mask[40:80, 50:90] = True
    paths = {"image": tmp_path / "img.png", "mask": tmp_path / "mask.png", "ref": tmp_path / "ref.png"}
    Image.fromarray(img).save(paths["image"])
    Image.fromarray(mask).save(paths["mask"])
    Image.fromarray(photo[:64, :64]).save(paths["ref"])
    return paths


def _paint_argv(files, out, *extra):
    return ["paint", str(files["image"]), "--mask", str(files["mask"]), "--reference", str(files["ref"]),
            "-o", str(out), *extra]


def test_help_shows_each_engine_with_its_own_defaults_and_choices(fake) -> None:
    text = build_parser()._subparsers._group_actions[0].choices["paint"].format_help()
    pbe = text[text.index("pbe engine options"):text.index("fake engine options")]
    fk = text[text.index("fake engine options"):]
    assert "{plms,ddim,euler,dpm}" in pbe and "(default: 50)" in pbe and "--model" in pbe
    assert "{unipc,ddim}" in fk and "(default: 7)" in fk and "(default: unipc)" in fk and "--model" not in fk
    assert f"--engine {{auto,{','.join(engines_for('paint'))}}}" in text and "fake}" in text


def test_each_engine_validates_its_own_values(fake, files, tmp_path, capsys) -> None:
    out = tmp_path / "out.png"
    # unipc is fake's choice, not pbe's: fake accepts it, and its own default steps (7) apply.
    assert main(_paint_argv(files, out, "--engine", "fake", "--scheduler", "unipc", "--strength", "0.25")) == 0
    mask = np.asarray(Image.open(files["mask"])) > 0
    assert tuple(np.asarray(Image.open(out))[mask][0]) == (70, 200, 25)
    # pbe refuses unipc by its own choices (before loading any weights).
    assert main(_paint_argv(files, tmp_path / "o2.png", "--engine", "pbe", "--scheduler", "unipc")) == 2
    assert "--scheduler must be one of plms, ddim, euler, dpm, got 'unipc'" in capsys.readouterr().err
    # fake refuses pbe's choice and its own out-of-range value.
    assert main(_paint_argv(files, tmp_path / "o3.png", "--engine", "fake", "--scheduler", "plms")) == 2
    assert "--scheduler must be one of unipc, ddim, got 'plms'" in capsys.readouterr().err
    assert main(_paint_argv(files, tmp_path / "o4.png", "--engine", "fake", "--steps", "50")) == 2
    assert "--steps must be >= 1 and <= 9, got 50" in capsys.readouterr().err
    assert main(_paint_argv(files, tmp_path / "o5.png", "--engine", "fake", "--strength", "nan")) == 2
    assert "--strength must be a finite number" in capsys.readouterr().err
    # an option only the other engine has
    assert main(_paint_argv(files, tmp_path / "o6.png", "--engine", "fake", "--eta", "0.5")) == 2
    assert "engine 'fake' does not use --eta for paint" in capsys.readouterr().err
    assert not any((tmp_path / f"o{i}.png").exists() for i in range(2, 7))


def test_auto_follows_priority_and_says_why(files, tmp_path, caplog) -> None:
    import logging

    from diffcompose.models.device import accelerator_available

    try:
        _register(priority=20)
        assert resolve_engine("auto", "paint") == ("fake", "highest priority for paint (20)")
        with caplog.at_level(logging.INFO, logger="diffcompose"):
            assert main(_paint_argv(files, tmp_path / "a.png")) == 0
        assert "engine: fake (highest priority for paint (20))" in caplog.text
        _register(priority=5)
        assert resolve_engine("auto", "paint") == ("pbe", "highest priority for paint (10)")
        if not accelerator_available():
            _register(priority=20, wants_accelerator=True)
            name, why = resolve_engine("auto", "paint")
            assert name == "pbe" and why.startswith("next by priority for paint (10)")
            assert "fake wants a CUDA or MPS device and none is present (--engine fake forces it)" in why
    finally:
        unregister("fake")
    assert resolve_engine("auto", "paint")[0] == "pbe"  # the highest priority of the registered ones again


def test_base_install_asked_for_a_diffusion_engine_fails_in_one_line(files, tmp_path, capsys, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    code = main(["remove", str(files["image"]), "--mask", str(files["mask"]), "-o", str(tmp_path / "x.png"),
                 "--engine", "freecompose", "--model", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "engine 'freecompose' needs diffusers" in err and "pip install 'diffcompose[diffusion]'" in err
    # auto passes over it and says so
    name, why = resolve_engine("auto", "remove")
    assert name == "classical" and "freecompose needs diffusers" in why


@dataclass(frozen=True)
class FakeInpaintOptions:
    steps: int = option(2, "fake steps")


class FakeMaskHead(Engine):
    """Paints the whole window white and 'predicts' the object in the left half of the user's mask."""

    name = "fakehead"
    predicts_mask = True

    def _inpaint(self, *, image, mask, prompt, negative_prompt, options, ctx):
        pred = mask.copy()
        cols = np.flatnonzero(mask.any(axis=0))
        pred[:, cols[len(cols) // 2]:] = False
        return [np.full_like(image, 255)], [pred]


def test_a_predicted_mask_is_where_pixels_are_pasted_back_and_can_be_written(files, tmp_path, capsys) -> None:
    import diffcompose as dc

    register(EngineInfo("fakehead", f"{__name__}:FakeMaskHead", tasks={"inpaint": FakeInpaintOptions}))
    try:
        image = np.asarray(Image.open(files["image"]))
        user = np.asarray(Image.open(files["mask"])) > 0
        out, pred = dc.inpaint(image, user, prompt="a ball", engine="fakehead", return_masks=True, margin=0)
        out, pred = np.asarray(out), np.asarray(pred) > 0
        assert pred.shape == user.shape and pred.any() and (pred <= user).all() and (user & ~pred).any()
        assert (out[pred] == 255).all()
        assert np.array_equal(out[~pred], image[~pred])  # inside the box but outside the object: the original
        o, mo = tmp_path / "o.png", tmp_path / "o_mask.png"
        argv = ["inpaint", str(files["image"]), "--mask", str(files["mask"]), "--prompt", "a ball", "-o", str(o),
                "--mask-output", str(mo), "--engine", "fakehead"]
        assert main(argv) == 0 and o.exists() and np.array_equal(np.asarray(Image.open(mo)) > 0, pred)
        # The engine object gives the same pair, and one without a mask head refuses in one line.
        eout, epred = dc.get_engine("fakehead").inpaint(image, user, prompt="a ball", return_masks=True, margin=0)
        assert np.array_equal(np.asarray(eout), out) and np.array_equal(np.asarray(epred) > 0, pred)
        with pytest.raises(dc.InputError, match="engine 'classical' predicts no object mask"):
            dc.get_engine("classical").run("remove", image=image, mask=user, masks=[])
    finally:
        unregister("fakehead")
    assert main(["inpaint", str(files["image"]), "--mask", str(files["mask"]), "--prompt", "x",
                 "-o", str(tmp_path / "q.png"), "--mask-output", str(tmp_path / "q_mask.png"),
                 "--engine", "sd-inpaint", "--model", "tiny"]) == 2
    assert "predicts no object mask" in capsys.readouterr().err
    assert not (tmp_path / "q.png").exists()
