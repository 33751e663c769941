"""The sampler options base: every engine that extends it gets the one shared range of each sampler
option it declares (same message, same bounds in the HTTP schema), keeps its own defaults, help,
choices and field order, and its own checks still run; a declaration that does not fit a shared
option is refused. Light: no torch."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

import pytest

import diffcompose.methods  # noqa: F401  (registers the engines)
from diffcompose.errors import InputError
from diffcompose.methods.options import (
    SAMPLER_KEY, SAMPLER_OPTIONS, OptionRangeError, SamplerOptions, build_options, option, sampler_fields,
    sampler_option,
)
from diffcompose.methods.registry import all_engines
from diffcompose.server.schema import option_range


#: Each registered options class that extends the base, once (an engine may use one class for several tasks).
SAMPLER_CLASSES = list({cls: (f"{info.name}:{cls.__name__}", cls) for info in all_engines()
                        for cls in info.tasks.values() if issubclass(cls, SamplerOptions)}.values())


def test_the_diffusion_samplers_extend_the_base() -> None:
    # every registered options class with the sampler's core options (steps and a guidance scale) is one
    core = [cls for info in all_engines() for cls in info.tasks.values()
            if {"steps", "guidance_scale"} <= {f.name for f in dataclasses.fields(cls)}]
    assert len(core) >= 4
    assert all(issubclass(cls, SamplerOptions) for cls in core)


@pytest.mark.parametrize("name,cls", SAMPLER_CLASSES, ids=[n for n, _ in SAMPLER_CLASSES])
def test_every_shared_option_is_declared_through_the_base_and_checked_with_its_one_range(name, cls) -> None:
    declared = {f.name: f for f in dataclasses.fields(cls) if f.name in SAMPLER_OPTIONS}
    assert declared, name
    assert all(f.metadata.get(SAMPLER_KEY) == f.name for f in declared.values())
    assert [n for n, _, _ in sampler_fields(cls)] == list(declared)
    for opt in declared:
        shared = SAMPLER_OPTIONS[opt]
        if shared.choices is not None:
            with pytest.raises(InputError, match=f"--{opt} must be one of"):
                cls(**{opt: "no-such-sampler"})
            continue
        # the bounds the HTTP schema reads are the shared ones, as written (ints stay ints)
        assert option_range(cls, opt) == (shared.lo, shared.hi, False, False)
        flag = "--" + opt.replace("_", "-")
        for bad in (shared.lo - 1, shared.hi + 1):
            with pytest.raises(OptionRangeError) as info:
                cls(**{opt: bad})
            assert str(info.value) == f"{flag} must be >= {shared.lo} and <= {shared.hi}, got {bad}"
        cls(**{opt: shared.lo})
        cls(**{opt: shared.hi})


def test_engines_keep_their_own_defaults_choices_and_checks() -> None:
    from diffcompose.methods.anydoor.options import AnyDoorInsertOptions
    from diffcompose.methods.pbe.options import PaintOptions
    from diffcompose.methods.sdinpaint.options import InpaintOptions
    from diffcompose.methods.smartbrush.options import SmartBrushOptions

    assert PaintOptions().guidance_scale == AnyDoorInsertOptions().guidance_scale == 5.0
    assert InpaintOptions().guidance_scale == SmartBrushOptions().guidance_scale == 7.5
    assert (PaintOptions().scheduler, SmartBrushOptions().scheduler) == ("plms", "ddim")
    # SmartBrush offers only the variance-preserving schedulers: euler is refused there, also when built directly
    assert PaintOptions(scheduler="euler").scheduler == "euler"
    with pytest.raises(InputError, match="--scheduler must be one of ddim, plms, dpm, got 'euler'"):
        SmartBrushOptions(scheduler="euler")
    with pytest.raises(InputError, match="--scheduler"):
        build_options(SmartBrushOptions, {"scheduler": "euler"}, engine="smartbrush", task="inpaint")
    # each engine's own rules still run after the shared ones
    with pytest.raises(InputError, match="multiple of 8"):
        PaintOptions(resolution=100)
    assert InpaintOptions(resolution=100).resolution == 100
    with pytest.raises(OptionRangeError, match="--mask-threshold"):
        SmartBrushOptions(mask_threshold=1.0)
    with pytest.raises(OptionRangeError, match="--control-strength"):
        AnyDoorInsertOptions(control_strength=3.0)
    assert PaintOptions(resolution=None).resolution is None  # optional: None is not checked
    # the help an engine gives is its own; where it gives none, the shared one
    helps = {cls.__name__: {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}
             for cls in (PaintOptions, InpaintOptions, AnyDoorInsertOptions)}
    assert "reference" in helps["PaintOptions"]["guidance_scale"]
    assert helps["InpaintOptions"]["guidance_scale"] == SAMPLER_OPTIONS["guidance_scale"].help
    assert helps["AnyDoorInsertOptions"]["steps"].startswith("DDIM steps")
    assert helps["PaintOptions"]["num_images"] == SAMPLER_OPTIONS["num_images"].help


def test_an_engine_keeps_its_own_field_order() -> None:
    @dataclass(frozen=True)
    class Toy(SamplerOptions):
        strength: float = option(0.5, "own option first")
        steps: int = sampler_option("steps", 20)
        crop: bool = option(True, "own option between shared ones")
        num_images: int = sampler_option("num_images")

    assert [f.name for f in dataclasses.fields(Toy)] == ["strength", "steps", "crop", "num_images"]
    assert Toy().steps == 20 and Toy().strength == 0.5
    with pytest.raises(OptionRangeError, match="--steps must be >= 1 and <= 1000, got 0"):
        Toy(steps=0)
    assert Toy(strength=-5.0).strength == -5.0  # the base checks only the shared options


def _declare(annotation: object, name: str, shared: str, **kw: object) -> type:
    cls = type("Bad", (SamplerOptions,), {"__annotations__": {name: annotation},
                                          name: sampler_option(shared, **kw)})
    return dataclass(frozen=True)(cls)


@pytest.mark.parametrize("annotation,name,shared", [
    (int, "iterations", "steps"),  # another name
    (float, "steps", "steps"),  # another type
    (int, "scheduler", "scheduler"),  # a number where the sampler has choices
    (Literal["ddim", "heun"], "scheduler", "scheduler"),  # a scheduler the sampler does not build
    (Literal["ddim", "plms"], "eta", "eta"),  # choices where the option is a number
])
def test_a_declaration_that_does_not_fit_the_shared_option_is_a_programming_error(annotation, name, shared) -> None:
    kw = {"help": "a scheduler"} if shared == "scheduler" else {}
    default = "ddim" if typing.get_origin(annotation) is Literal else SAMPLER_OPTIONS[shared].default
    cls = _declare(annotation, name, shared, default=default, **kw)
    with pytest.raises(TypeError, match="does not fit sampler option"):
        cls()


def test_a_shared_option_without_shared_help_needs_the_engines() -> None:
    with pytest.raises(TypeError, match="scheduler"):
        sampler_option("scheduler")
