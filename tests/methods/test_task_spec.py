"""Tasks as typed specs: each task declares its inputs once, and the CLI, the HTTP API, batch and the
Python API are made from that declaration.

The proof is a throw-away task (``tint``: paint a box of an image in the mean colour of a swatch),
declared here as a spec and a ``prepare`` with a test engine serving it: without any other file
being edited it runs through ``api.run``, ``Engine.run``, the CLI (``--help`` included), HTTP
(``/api/tasks``, OpenAPI, ``/api/run``) and a batch manifest, with the same output everywhere.
"""

from __future__ import annotations

import io
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import diffcompose.api as api
from diffcompose.batch import run_batch
from diffcompose.batch.manifest import VALUE_INPUTS, read_manifest
from diffcompose.cli.main import build_parser, main
from diffcompose.errors import InputError
from diffcompose.inputs import DEFAULT_MAX_PIXELS, ImageLike, load_image, parse_box
from diffcompose.methods.engine import Engine
from diffcompose.methods.options import check_range, option
from diffcompose.methods.registry import EngineInfo, register, unregister
from diffcompose.methods.tasks import (
    TASK_SPECS, InputSpec, Job, TaskSpec, one_of, prepare, register_task, unregister_task,
)

# --------------------------------------------------------------------------- the throw-away task

MODULE = "diffcompose_test_task_engines"
ENGINE = "test-tint"
MODES = ("flat", "half")


def prepare_tint(image: ImageLike, swatch: ImageLike, *, region: Any = None, mode: str = "flat",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    if mode not in MODES:
        raise InputError(f"--mode must be flat or half, got {mode!r}")
    img = load_image(image, "image", max_pixels)
    colour = load_image(swatch, "swatch", max_pixels).reshape(-1, 3).mean(axis=0)
    size = (img.shape[1], img.shape[0])
    box = parse_box(region, size) if region is not None else parse_box((0, 0, *size), size)
    mask = np.zeros(img.shape[:2], bool)
    mask[box.slices] = True
    return Job("tint", img, {"image": img, "mask": mask, "colour": colour, "mode": mode}, box,
               {"image": "image", "mask": "mask"}, mask)


TINT = TaskSpec("tint", (
    InputSpec("image", "image", True, cli="IMAGE", http_help="the image to tint"),
    InputSpec("swatch", "image", True, "a photo of the colour to use", "the colour's photo"),
    InputSpec("region", "box", False, "where to tint: x0,y0,x1,y1"),
    InputSpec("mode", "choice", False, "how strongly", choices=MODES),
), prepare_tint, "paint a box in the mean colour of a swatch", description="Tint --region of IMAGE.")


@dataclass(frozen=True)
class TintOptions:
    amount: float = option(1.0, "share of the swatch colour in the result")

    def __post_init__(self) -> None:
        check_range("amount", self.amount, 0.0, 1.0)


class TintEngine(Engine):
    name = ENGINE

    def _tint(self, *, image: np.ndarray, mask: np.ndarray, colour: np.ndarray, mode: str, options: TintOptions,
              ctx: Any) -> np.ndarray:
        share = options.amount * (0.5 if mode == "half" else 1.0)
        out = image.astype(np.float64)
        out[mask] = (1 - share) * out[mask] + share * colour
        return np.round(out).astype(np.uint8)


def _unload(*names: str) -> None:
    """Unload only this file's throw-away engines (the shared manager keeps what other tests loaded)."""
    manager = api.default_manager()
    for engine in manager.loaded():
        if engine.name in names:
            manager.unload(engine)


@pytest.fixture
def tint(monkeypatch: pytest.MonkeyPatch) -> Any:
    module = types.ModuleType(MODULE)
    module.TintEngine = TintEngine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, MODULE, module)
    register_task(TINT)
    register(EngineInfo(ENGINE, f"{MODULE}:TintEngine", tasks={"tint": TintOptions}, summary="test tint"))
    yield
    unregister(ENGINE)
    unregister_task("tint")
    _unload(ENGINE)


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    swatch = np.zeros((5, 5, 3), np.uint8)
    swatch[...] = (10, 200, 30)
    paths = {"image": tmp_path / "image.png", "swatch": tmp_path / "swatch.png"}
    Image.fromarray(image).save(paths["image"])
    Image.fromarray(swatch).save(paths["swatch"])
    return {"image": image, "swatch": swatch, "paths": paths, "region": "4,2,20,12"}


def _want(p: dict[str, Any]) -> np.ndarray:
    out = np.asarray(api.run("tint", {"image": p["image"], "swatch": p["swatch"], "region": p["region"]},
                             engine=ENGINE))
    assert (out[4:10, 6:18] == (10, 200, 30)).all()  # the box, away from its seam, is the swatch's colour
    assert np.array_equal(out[16:], p["image"][16:]) and np.array_equal(out[:, 24:], p["image"][:, 24:])
    return out


def test_a_new_task_runs_through_the_python_api_and_engine_objects(tint, pictures) -> None:
    want = _want(pictures)
    by_keywords = api.run("tint", image=pictures["image"], swatch=pictures["swatch"], region=pictures["region"],
                          engine=ENGINE, amount=1.0)
    assert np.array_equal(np.asarray(by_keywords), want)
    engine = api.get_engine(ENGINE)
    assert np.array_equal(np.asarray(engine.run("tint", image=pictures["image"], swatch=pictures["swatch"],
                                                region=pictures["region"], amount=1.0)), want)
    half = np.asarray(engine.run("tint", image=pictures["image"], swatch=pictures["swatch"],
                                 region=pictures["region"], mode="half"))
    assert not np.array_equal(half, want)  # the choice input reached the engine
    with pytest.raises(InputError, match="amount"):  # an option, checked by the engine's dataclass
        engine.run("tint", image=pictures["image"], swatch=pictures["swatch"], amount=2.0)
    with pytest.raises(InputError, match="region given both"):
        api.run("tint", {"image": pictures["image"], "swatch": pictures["swatch"], "region": "0,0,2,2"},
                region="0,0,2,2", engine=ENGINE)


def test_a_new_task_gets_its_cli_command(tint, pictures, tmp_path, capsys) -> None:
    commands = build_parser().format_help()
    assert "tint" in commands and TINT.summary in commands
    text = build_parser()._subparsers._group_actions[0].choices["tint"].format_help()
    for piece in ("IMAGE", "--swatch SWATCH", "a photo of the colour to use", "--region REGION",
                  "(end-exclusive; --region=... for a value starting with '-')", "{flat,half}",
                  "test-tint engine options", "--amount", "--no-paste-back"):
        assert piece in " ".join(text.split()), piece
    out = tmp_path / "out.png"
    code = main(["tint", str(pictures["paths"]["image"]), "--swatch", str(pictures["paths"]["swatch"]),
                 "--region", pictures["region"], "-o", str(out)])
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), _want(pictures))
    with pytest.raises(SystemExit) as exc:
        main(["tint", str(pictures["paths"]["image"]), "-o", str(tmp_path / "o2.png")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "the following arguments are required: --swatch" in err and err.count("\n") == 1


def test_a_new_task_gets_its_http_schema_and_runs_over_http(tint, pictures) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from diffcompose.server import Settings, create_app

    client = TestClient(create_app(Settings()), base_url="http://127.0.0.1:7860")
    tasks = {t["name"]: t for t in client.get("/api/tasks").json()}
    assert tasks["tint"]["engines"] == [ENGINE] and tasks["tint"]["summary"] == TINT.summary
    assert tasks["tint"]["inputs"] == [
        {"name": "image", "kind": "image", "required": True, "help": "the image to tint"},
        {"name": "swatch", "kind": "image", "required": True, "help": "the colour's photo"},
        {"name": "region", "kind": "box", "required": False, "help": "x0,y0,x1,y1 in pixels, end-exclusive"},
        {"name": "mode", "kind": "text", "required": False, "help": "flat or half"}]
    doc = client.get("/openapi.json").json()
    request = doc["components"]["schemas"]["JobRequest"]["properties"]
    assert request["region"]["anyOf"][0]["maxItems"] == 4 and request["mode"]["anyOf"][0] == {"enum": ["flat", "half"]}
    assert "tint" in request["task"]["enum"]
    body = doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["swatch"] == {"type": "string", "format": "binary"}

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    files = {k: (f"{k}.png", png(pictures[k]), "image/png") for k in ("image", "swatch")}
    request_json = {"task": "tint", "engine": ENGINE, "region": [4, 2, 20, 12]}
    r = client.post("/api/run", files=files, data={"request": json.dumps(request_json)})
    assert r.status_code == 200, r.text
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")), _want(pictures))
    r = client.post("/api/run", files={"image": files["image"]}, data={"request": json.dumps(request_json)})
    assert r.status_code == 400 and r.json()["error"] == "tint needs 'swatch' (an uploaded file)"
    r = client.post("/api/run", files=files, data={"request": json.dumps({**request_json, "prompt": "x"})})
    assert r.status_code == 400 and r.json()["error"] == "task tint takes no prompt"


def test_a_new_task_runs_from_a_batch_manifest(tint, pictures, tmp_path) -> None:
    paths = pictures["paths"]
    lines = [{"id": "a", "task": "tint", "engine": ENGINE,
              "inputs": {"image": paths["image"].name, "swatch": paths["swatch"].name, "region": [4, 2, 20, 12]}},
             {"id": "b", "task": "tint", "engine": ENGINE, "inputs": {"image": paths["image"].name}}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    items = read_manifest(manifest)
    assert items[0].inputs == {"image": str(paths["image"]), "swatch": str(paths["swatch"]),
                               "region": (4, 2, 20, 12)}  # paths resolved, the box kept as a value
    assert items[1].error == "line 2: tint needs input(s) swatch"
    assert "region" in VALUE_INPUTS and "mode" in VALUE_INPUTS and "swatch" not in VALUE_INPUTS
    summary = run_batch(manifest, tmp_path / "out")
    assert summary.ok == 1
    got = np.asarray(Image.open(tmp_path / "out" / "outputs" / "a.png").convert("RGB"))
    assert np.array_equal(got, _want(pictures))


def test_the_throw_away_task_leaves_nothing_behind(tint) -> None:
    assert "tint" in TASK_SPECS
    unregister(ENGINE)
    unregister_task("tint")
    assert "tint" not in TASK_SPECS and "tint" not in VALUE_INPUTS and "region" not in VALUE_INPUTS
    assert "tint" not in build_parser().format_help()


# --------------------------------------------------------------------------- the spec itself


def test_a_spec_that_disagrees_with_its_prepare_is_refused() -> None:
    with pytest.raises(ValueError, match="prepare takes"):  # an input prepare does not take
        TaskSpec("bad", (*TINT.params, InputSpec("extra", "text")), prepare_tint, "x")
    with pytest.raises(ValueError, match="prepare takes"):  # an input prepare takes but the spec forgets
        TaskSpec("bad", TINT.params[:3], prepare_tint, "x")
    with pytest.raises(ValueError, match="required"):  # prepare has no default for swatch
        TaskSpec("bad", (TINT.params[0], InputSpec("swatch", "image"), *TINT.params[2:]), prepare_tint, "x")
    with pytest.raises(ValueError, match="unknown inputs"):
        TaskSpec("bad", TINT.params, prepare_tint, "x", one_of=(one_of("region", "colour"),))
    with pytest.raises(ValueError, match="choice"):
        InputSpec("mode", "choice")

    def prepare_clash(image: Any, prompt: Any = None, *, max_pixels: int | None = None) -> Job:
        raise AssertionError("never run")

    clash = TaskSpec("clash", (InputSpec("image", "image", True), InputSpec("prompt", "mask")), prepare_clash, "x")
    with pytest.raises(ValueError, match="input prompt is a mask but prompt of compose is a text"):
        register_task(clash)  # a manifest or a request reads "prompt" as text: one name, one kind
    assert "clash" not in TASK_SPECS


def test_prepare_refuses_an_unknown_input_in_one_line() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match=r"^remove takes no input colour; its inputs: image, mask$"):
        prepare("remove", {"image": image, "mask": image[..., 0] > 0, "colour": 1})
    with pytest.raises(InputError, match="unknown task 'fly'"):
        api.run("fly", {})


def _value(param: InputSpec) -> Any:
    """A valid value of each kind on a 32x32 image (a box and a mask in the middle)."""
    if param.kind == "image":
        return np.full((32, 32, 3), 120, np.uint8)
    if param.kind == "mask":
        m = np.zeros((32, 32), bool)
        m[8:24, 8:24] = True
        return m
    if param.keyword in _STRUCTURED_TEXT:
        return _STRUCTURED_TEXT[param.keyword]
    return {"box": "8,8,24,24", "points": "16,16,1", "text": "a red chair"}.get(param.kind, param.choices[:1] or None)


#: Text inputs with a format of their own (outpaint's extents): a valid value of each.
_STRUCTURED_TEXT = {"extend": "0,0,8,0", "aspect": "2:1"}


@pytest.mark.parametrize("task", [t for t in TASK_SPECS if TASK_SPECS[t].one_of])
def test_one_of_groups_are_what_prepare_enforces(task: str) -> None:
    """Exactly one alternative of each group: none or two are refused in one line, each alone is accepted."""
    spec = TASK_SPECS[task]
    base = {p.keyword: _value(p) for p in spec.params if p.required}
    for group in spec.one_of:
        alone = [{k: _value(spec.param(k)) for k in alternative} for alternative in group.alternatives]
        for inputs in alone:
            prepare(task, {**base, **inputs})
        with pytest.raises(InputError):
            prepare(task, base)
        with pytest.raises(InputError):
            prepare(task, {**base, **alone[0], **alone[1]})


def test_the_cli_commands_follow_the_specs() -> None:
    """Each input is the spec's positional or flag, with its help and requiredness; a group of single
    inputs is a required mutually exclusive group; image and mask inputs are paths."""
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, spec in TASK_SPECS.items():
        parser = commands[name]
        actions = {a.dest: a for a in parser._actions}
        grouped = {k for g in spec.one_of if g.single for k in g.keywords}
        for param in spec.params:
            action = actions[param.keyword]
            assert (action.option_strings == [] if param.positional else action.option_strings == [param.flag])
            assert action.help.startswith(param.help) if param.help else action.help is None
            assert action.required == (param.required and param.keyword not in grouped)
            assert (action.type is Path) == param.is_file
        for group in parser._mutually_exclusive_groups:
            assert group.required and {a.dest for a in group._group_actions} <= grouped
        assert ("--mask-output" in parser._option_string_actions) == bool(spec.mask_output)
        assert ("--no-paste-back" in parser._option_string_actions) == spec.paste_back


@pytest.mark.parametrize("task", ["insert", "paste"])
def test_an_object_or_reference_file_is_decoded_once(tmp_path, monkeypatch, task) -> None:
    """Its colour, its alpha (the cut-out) and the readings an engine may take are all read from
    one decode, under the caller's pixel limit."""
    import diffcompose.inputs.images as images
    from PIL import Image as PILImage

    from diffcompose.methods.tasks import prepare

    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[10:30, 10:40, 3] = 255
    path = tmp_path / "object.png"
    PILImage.fromarray(rgba, "RGBA").save(path)
    scene = np.full((120, 160, 3), 90, np.uint8)
    opened: list[str] = []
    real = images.open_header
    monkeypatch.setattr(images, "open_header", lambda p, *a, **kw: (opened.append(str(p)), real(p, *a, **kw))[1])
    inputs = ({"image": scene, "box": (20, 20, 120, 100), "reference": str(path)} if task == "insert" else
              {"background": scene, "obj": str(path), "box": (20, 20, 120, 100)})
    job = prepare(task, inputs)
    assert opened == [str(path)]
    cut = job.arrays["reference_mask" if task == "insert" else "object_mask"]
    assert cut.sum() == 20 * 30  # the alpha still gives the cut-out


# --------------------------------------------------------------------------- an opt-in input

def prepare_glaze(image: ImageLike, *, stencil: ImageLike | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Job:
    img = load_image(image, "image", max_pixels)
    mask = np.ones(img.shape[:2], bool)
    st = None if stencil is None else load_image(stencil, "stencil", max_pixels)[..., 0] > 127
    return Job("glaze", img, {"image": img, "stencil": st}, parse_box((0, 0, img.shape[1], img.shape[0]),
                                                                        (img.shape[1], img.shape[0])),
               {"image": "image", "stencil": "mask"}, mask)


GLAZE = TaskSpec("glaze", (
    InputSpec("image", "image", True, cli="IMAGE"),
    InputSpec("stencil", "image", False, "where to glaze (only some engines take one)", opt_in=True),
), prepare_glaze, "glaze an image", description="Glaze IMAGE.")


@dataclass(frozen=True)
class GlazeOptions:
    pass


class PlainGlaze(Engine):  # takes no stencil: the runner never passes it one
    name = "test-glaze-plain"

    def _glaze(self, *, image: np.ndarray, options: Any, ctx: Any) -> np.ndarray:
        return 255 - image


class StencilGlaze(Engine):
    name = "test-glaze-stencil"

    def _glaze(self, *, image: np.ndarray, stencil: np.ndarray | None, options: Any, ctx: Any) -> np.ndarray:
        out = image.copy()
        if stencil is not None:
            out[stencil] = 0
        return out


@pytest.fixture
def glaze(monkeypatch: pytest.MonkeyPatch) -> Any:
    module = types.ModuleType(MODULE + "_glaze")
    module.PlainGlaze, module.StencilGlaze = PlainGlaze, StencilGlaze  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, MODULE + "_glaze", module)
    register_task(GLAZE)
    register(EngineInfo(PlainGlaze.name, f"{MODULE}_glaze:PlainGlaze", tasks={"glaze": GlazeOptions}, priority=9))
    register(EngineInfo(StencilGlaze.name, f"{MODULE}_glaze:StencilGlaze", tasks={"glaze": GlazeOptions},
                        takes={"glaze": ("stencil",)}, priority=1))
    yield
    unregister(PlainGlaze.name)
    unregister(StencilGlaze.name)
    unregister_task("glaze")
    _unload(PlainGlaze.name, StencilGlaze.name)


def test_an_opt_in_input_is_taken_only_by_the_engines_that_declare_it(glaze) -> None:
    image = np.full((8, 8, 3), 100, np.uint8)
    stencil = np.zeros((8, 8, 3), np.uint8)
    stencil[2:4, 2:4] = 255
    plain = np.asarray(api.run("glaze", {"image": image}))  # auto: the higher priority
    assert (plain == 155).all()
    out = np.asarray(api.run("glaze", {"image": image, "stencil": stencil}))  # auto: one that takes it
    assert (out[2:4, 2:4] == 0).all() and (out[5:, 5:] == 100).all()
    with pytest.raises(InputError, match="^engine 'test-glaze-plain' takes no stencil for glaze; engines that do: "
                                         "test-glaze-stencil$"):
        api.run("glaze", {"image": image, "stencil": stencil}, engine=PlainGlaze.name)
    with pytest.raises(ValueError, match="not opt-in inputs of glaze"):
        EngineInfo("x", f"{MODULE}_glaze:PlainGlaze", tasks={"glaze": GlazeOptions}, takes={"glaze": ("image",)})
    assert GLAZE.opt_in == ("stencil",) and GLAZE.given_opt_in({"stencil": None}) == ()
