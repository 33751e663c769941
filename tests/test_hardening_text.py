"""Hostile text, configs, option types and output names (issue 25, items 3, 4 and 6b).

* Text from outside that is not valid Unicode (invalid UTF-8 from a shell, lone surrogates,
  ``bytes``) is refused in one line before any model loads, from the CLI and from Python.
* Training configs refuse YAML alias bombs and oversized documents at once; no message prints
  an unbounded value (numbers in short form, long text cut, small pixel limits in pixels).
* An output name the file system cannot take is one line, never "internal error"; Python
  keywords must have their option's type, while the CLI's text keeps being parsed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffcompose as dc
import diffcompose.api as api
from diffcompose.cli.main import main
from diffcompose.errors import InputError, short_number, shown
from diffcompose.inputs.images import save_image
from diffcompose.methods import all_engines
from diffcompose.methods.options import build_options, check_text, field_types, unwrap_optional

# What a shell hands Python for the bytes 0xff and 0xe9 that are not UTF-8 (surrogateescape).
SHELL_FF, SHELL_E9 = "\udcff", "\udce9"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    mask = np.zeros((48, 64), np.uint8)
    mask[12:30, 20:40] = 255
    paths = {"image": tmp_path / "image.png", "mask": tmp_path / "mask.png"}
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(paths["image"])
    Image.fromarray(mask).save(paths["mask"])
    return paths


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if any engine gets loaded: the refusals below must come before that."""
    def load(*args, **kwargs):
        raise AssertionError("an engine was loaded before the input was refused")

    monkeypatch.setattr(api, "get_engine", load)


def _one_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "internal error" not in err, (code, err)
    return err


# ----------------------------------------------------------------------------- 3. text from outside

@pytest.mark.parametrize("engine", ["sd-inpaint", "smartbrush"])
@pytest.mark.parametrize("flag, value, fragment", [
    ("--prompt", SHELL_FF, "invalid UTF-8 byte 0xff at character 0"),
    ("--prompt", f"a{SHELL_E9}b", "invalid UTF-8 byte 0xe9 at character 1"),
    ("--negative-prompt", "x\ud800", "lone surrogate U+D800 at character 1"),
])
def test_text_that_is_not_utf8_from_the_shell_is_one_line_before_any_model(capsys, files, tmp_path, no_model_load,
                                                                           engine, flag, value, fragment):
    argv = ["inpaint", str(files["image"]), "--mask", str(files["mask"]), "--engine", engine, "--model", "tiny",
            "--prompt", "a red ball", "-o", str(tmp_path / "out.png")]
    if flag == "--prompt":
        argv[argv.index("--prompt") + 1] = value
    else:
        argv += [flag, value]
    err = _one_line(capsys, main(argv))
    assert f"{flag} is not valid text" in err and fragment in err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("call, fragment", [
    (lambda f: dc.inpaint(f["image"], f["mask"], prompt=SHELL_FF, model="tiny"), "--prompt is not valid text"),
    (lambda f: dc.inpaint(f["image"], f["mask"], prompt="\udcff", engine="sd-inpaint"), "byte 0xff"),
    (lambda f: dc.inpaint(f["image"], f["mask"], prompt=b"a cat"), "--prompt must be text (a str), got bytes"),
    (lambda f: dc.inpaint(f["image"], f["mask"], prompt="a cat", negative_prompt=bytearray(b"x")),
     "--negative-prompt must be text"),
    (lambda f: dc.inpaint(f["image"], f["mask"], prompt="a cat", negative_prompt="\ud800"), "U+D800"),
    (lambda f: dc.compose(f["image"], f["mask"], prompt="\udfff"), "--prompt is not valid text"),
    (lambda f: dc.remove(f["image"], f["mask"], engine="freecompose", source_prompt="\udcff"),
     "--source-prompt is not valid text"),
    (lambda f: dc.remove(f["image"], f["mask"], engine="freecompose", target_prompt=b"x"),
     "--target-prompt must be text"),
    (lambda f: dc.inpaint(f["image"], f["mask"], prompt="a cat", model=b"tiny"), "--model must be"),
])
def test_text_that_is_not_unicode_from_python_is_refused_before_any_model(files, no_model_load, call, fragment):
    with pytest.raises(InputError, match=None) as exc:
        call(files)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_valid_text_passes_untouched():
    for text in ("", "a red armchair", "ein Stuhl aus Holz, gr\u00fcn", "\u732b \U0001F408", "tab\tand\nnewline"):
        assert check_text("--prompt", text) is text
    for bad in (SHELL_FF, "\ud800", b"x", 5, None, ["a"]):
        with pytest.raises(InputError):
            check_text("--prompt", bad)


# ----------------------------------------------------------------------------- 4. config files

BOMB = "\n".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *[f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefg", "bcdefgh")],
    "data: {manifest: *h}",
]) + "\n"


def _train(tmp_path: Path, engine: str, text: str, output_dir: str | None = None) -> int:
    (tmp_path / "data.jsonl").write_text("")
    cfg = tmp_path / f"{engine}.yaml"
    cfg.write_text(text)
    return main(["train", engine, "--config", str(cfg), "--output-dir", output_dir or str(tmp_path / "run")])


TRAINERS = sorted(info.name for info in all_engines() if info.trainer is not None)


def test_every_trainer_is_covered():
    assert {"anydoor", "smartbrush", "pbe"} <= set(TRAINERS)


@pytest.mark.parametrize("engine", TRAINERS)
def test_a_yaml_alias_bomb_is_refused_at_once_by_every_trainer(capsys, tmp_path, engine):
    assert len(BOMB) < 700  # the probe's size: 9**8 values once expanded
    start = time.monotonic()
    err = _one_line(capsys, _train(tmp_path, engine, BOMB))
    assert time.monotonic() - start < 10
    assert "alias *a repeats a mapping or a list" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, fragment", [
    ("data: {manifest: data.jsonl}\ntrain: {seed: [" + ",".join(["1"] * 20_000) + "]}\n", "more than 10000 values"),
    ("data: {manifest: data.jsonl}\ntrain: {seed: " + "[" * 3000 + "]" * 3000 + "}\n", "nests too deep"),
    ("data: {manifest: data.jsonl}\ntrain: {max_steps: " + "9" * 5000 + "}\n", "a number too long to read"),
    ("data: {manifest: data.jsonl}\ntrain: {max_steps: 1.0e+308}\n", "got 1e308"),
    ("data: {manifest: data.jsonl}\ntrain: {max_steps: " + "9" * 400 + "}\n", "got 1e400"),
    ("data: {manifest: data.jsonl}\ntrain: {learning_rate: 1.0e+308}\n", "got 1e+308"),
    ("data: {manifest: data.jsonl, init_kind: " + "x" * 5000 + "}\n", "init_kind must be one of"),
    ("data: {manifest: data.jsonl}\ntrain: {" + "k" * 1000 + ": 1}\n", "unknown key(s)"),
    ("data: {manifest: " + "m" * 5000 + "}\n", "data.manifest not found"),
    ("data: {manifest: data.jsonl}\nmodel: &m {init: tiny}\ntrain: {<<: *m}\n", "repeats a mapping"),
])
def test_config_refusals_are_short_lines(capsys, tmp_path, text, fragment):
    err = _one_line(capsys, _train(tmp_path, "pbe", text))
    assert fragment in err and len(err) < 400, err


def test_an_alias_of_a_single_value_still_works(tmp_path):
    from diffcompose.methods.pbe.config import load_config

    (tmp_path / "data.jsonl").write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {manifest: data.jsonl, resolution: &r 256}\ntrain: {seed: *r, max_steps: 3}\n")
    loaded = load_config(cfg)
    assert loaded.resolution == 256 and loaded.seed == 256 and loaded.max_steps == 3


def test_an_oversized_config_is_refused_unread(capsys, tmp_path):
    text = "data: {manifest: data.jsonl}\n" + "# padding\n" * 120_000
    err = _one_line(capsys, _train(tmp_path, "smartbrush", text))
    assert "over 1024 KB" in err


def test_messages_quote_values_bounded():
    assert short_number(10**308) == "1e308" and short_number(-(2**70)) == "-1.18e21"
    assert short_number(10**5000) == "1e5000" and short_number(123) == "123"
    nested: list = ["lol"]
    for _ in range(40):  # 9**40 items once expanded: a repr would never end
        nested = [nested] * 9
    for value in (nested, "x" * 10**6, b"\xff" * 10**6, 10**10000, {"k" * 10**5: 1}):
        assert len(shown(value)) <= 200
    with pytest.raises(InputError) as exc:
        dc.remove(np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=bool), engine="classical", radius=10**400)
    assert "1e400" in str(exc.value) and len(str(exc.value)) < 200


@pytest.mark.parametrize("limit, size, fragment", [
    (5000, (100, 100), "(10000 pixels), above the limit of 5000 pixels"),
    (1_000_000, (1001, 1000), "(1001000 pixels), above the limit of 1000000 pixels"),
    (1_000_000, (1500, 1000), "(1.5 MP), above the limit of 1.0 MP"),
])
def test_a_pixel_limit_is_never_zero_megapixels(tmp_path, limit, size, fragment):
    path = tmp_path / "big.png"
    Image.new("RGB", size).save(path)
    with pytest.raises(InputError) as exc:
        dc.remove(path, np.ones(size[::-1], bool), max_pixels=limit)
    assert fragment in str(exc.value) and "0.0 MP" not in str(exc.value)


# ----------------------------------------------------------------------------- 6b. output names

@pytest.mark.parametrize("make, fragment", [
    (lambda t: t / ("x" * 300 + ".png"), "output file name is too long (304 bytes; at most 255)"),
    (lambda t: t / ("\u00e9" * 130 + ".png"), "output file name is too long (264 bytes"),
    (lambda t: t / ("d" * 300) / "o.png", "a folder name in the output path is too long"),
    (lambda t: t.joinpath(*["y" * 200] * 25, "o.png"), "output path is too long"),
])
def test_an_output_name_too_long_is_one_line(capsys, files, tmp_path, make, fragment):
    out = make(tmp_path)
    err = _one_line(capsys, main(["remove", str(files["image"]), "--mask", str(files["mask"]), "-o", str(out)]))
    assert fragment in err and len(err) < 400
    with pytest.raises(InputError, match="too long"):
        save_image(np.zeros((4, 4, 3), np.uint8), out)


def test_a_mask_output_or_input_name_too_long_is_one_line(capsys, files, tmp_path, no_model_load):
    long = tmp_path / ("m" * 300 + ".png")
    err = _one_line(capsys, main(["inpaint", str(files["image"]), "--mask", str(files["mask"]), "--prompt", "x",
                                  "--engine", "smartbrush", "-o", str(tmp_path / "o.png"), "--mask-output",
                                  str(long)]))
    assert "too long" in err
    err = _one_line(capsys, main(["remove", str(long), "--mask", str(files["mask"]), "-o", str(tmp_path / "o.png")]))
    assert "too long" in err and len(err) < 400
    with pytest.raises(InputError, match="File name too long"):
        dc.remove(long, files["mask"], engine="classical")


@pytest.mark.parametrize("name", ["\ud800.png", "a\0.png"])
def test_an_output_name_that_is_no_file_name_is_refused(tmp_path, name):
    with pytest.raises(InputError, match="not a valid file name"):
        save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / name)


def test_a_long_output_name_that_fits_is_written(tmp_path):
    out = tmp_path / ("\u00e9" * 120 + ".png")  # 244 bytes: fits, and so must its temporary file
    assert save_image(np.zeros((4, 4, 3), np.uint8), out) == out and out.is_file()


# ----------------------------------------------------------------------------- 6b. option types

def _options():
    """(engine, task, name, kind, default) for every int, float and bool option of every engine."""
    for info in all_engines():
        for task, cls in info.tasks.items():
            hints = field_types(cls)
            for f in dataclasses.fields(cls):
                kind = unwrap_optional(hints[f.name])[0]
                if kind in (int, float, bool):
                    yield info.name, task, cls, f.name, kind


def _wrong_types(kind: type, good: object) -> list:
    if kind is bool:
        return [str(good).lower(), 1, 0]
    if kind is int:
        return [str(good), float(good), True]
    return [str(good), True, "nan"]


def test_python_values_must_have_their_option_type_and_text_is_parsed_only_from_the_command_line():
    checked = 0
    for engine, task, cls, name, kind in _options():
        good = {bool: True, int: 1, float: 0.5}[kind]
        try:
            build_options(cls, {name: good}, engine=engine, task=task)
        except InputError:
            continue  # out of this option's range: the type rule is tested on the others
        for bad in _wrong_types(kind, good):
            with pytest.raises(InputError) as exc:
                build_options(cls, {name: bad}, engine=engine, task=task)
            assert "--" + name.replace("_", "-") in str(exc.value), (engine, task, name, bad)
        text = build_options(cls, {name: str(good).lower()}, engine=engine, task=task, from_text=True)
        assert getattr(text, name) == good and type(getattr(text, name)) is kind
        checked += 1
    assert checked >= 20


def test_numpy_scalars_count_as_their_python_kind(files):
    out = dc.remove(files["image"], files["mask"], engine="classical", method="telea", radius=np.int64(3))
    assert out.size == (64, 48)
    from diffcompose.methods.classical.options import HarmonizeOptions

    opts = build_options(HarmonizeOptions, {"strength": np.float32(0.25)}, engine="classical", task="harmonize")
    assert opts.strength == 0.25 and type(opts.strength) is float


@pytest.mark.parametrize("bad", [dict(radius="5"), dict(radius=5.0), dict(radius=True), dict(patch="3")])
def test_the_python_api_and_engine_objects_refuse_wrong_types_like_the_cli(files, bad):
    (name, value), = bad.items()
    for call in (lambda: dc.remove(files["image"], files["mask"], engine="classical", **bad),
                 lambda: dc.get_engine("classical").remove(files["image"], files["mask"], **bad)):
        with pytest.raises(InputError, match=f"--{name} must be an integer, got {value!r}"):
            call()


def test_the_cli_still_parses_its_text(capsys, files, tmp_path):
    out = tmp_path / "o.png"
    assert main(["remove", str(files["image"]), "--mask", str(files["mask"]), "--engine", "classical",
                 "--method", "telea", "--radius", "3", "-o", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    err = _one_line(capsys, main(["remove", str(files["image"]), "--mask", str(files["mask"]), "--engine",
                                  "classical", "--radius", "three", "-o", str(tmp_path / "p.png")]))
    assert "--radius must be an integer, got 'three'" in err


def test_a_folder_output_name_too_long_is_one_line_in_every_command(capsys, files, tmp_path):
    """``batch`` and ``convert`` write folders: a name past the limit is still one line (exit 2)."""
    long = str(tmp_path / ("z" * 300))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"task": "remove", "inputs": {"image": "image.png", "mask": "mask.png"}, '
                        '"engine": "classical"}\n')
    checkpoint = tmp_path / "c.ckpt"
    checkpoint.write_bytes(b"x")
    for argv in (["batch", str(manifest), "-o", long], ["convert", "pbe", str(checkpoint), long]):
        err = _one_line(capsys, main(argv))
        assert "too long" in err and len(err) < 400, err


def test_an_output_name_that_is_not_utf8_is_written_and_said_as_its_bytes(files, tmp_path):
    """A file name may hold any bytes (the shell hands them over as surrogates); saying it on a
    strict UTF-8 stdout must not turn a written output into "internal error"."""
    out = os.fsencode(tmp_path) + b"/\xff.png"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-m", "diffcompose", "--quiet", "remove", os.fsencode(files["image"]),
                        "--mask", os.fsencode(files["mask"]), "--engine", "classical", "-o", out],
                       capture_output=True, env=env, timeout=120)
    assert p.returncode == 0 and p.stdout == out + b"\n", p.stderr
    assert os.path.isfile(out)


@pytest.mark.parametrize("output_dir, fragment", [
    ("afile/run", "cannot create the run's folder"),
    ("/".join(["a"] * 1500) + "/run", "nested too deep"),
])
def test_a_run_folder_that_cannot_be_made_is_one_line(capsys, tmp_path, monkeypatch, output_dir, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    err = _one_line(capsys, _train(tmp_path, "pbe", "data: {manifest: data.jsonl}\n", output_dir))
    assert fragment in err and len(err) < 400, err
    assert not (tmp_path / "a").exists()
