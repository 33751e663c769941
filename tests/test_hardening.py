"""Hostile input: every number, folder, config and manifest a user can get wrong ends in one
stderr line and exit 2, and no command deletes what it did not write."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcompose.cli.main import main
from diffcompose.errors import InputError
from diffcompose.methods import engines_for, get_engine_info
from diffcompose.methods.options import field_types, flag, unwrap_optional

BAD_NUMBERS = ["nan", "inf", "-inf", "1e400", "123456789012345678901234567890"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    mask = np.zeros((64, 80), bool)
    mask[20:40, 30:50] = True
    edges = np.zeros((64, 80), np.uint8)
    edges[10:50, 20] = 255
    paths = {k: tmp_path / f"{k}.png" for k in ("image", "mask", "edges", "ref")}
    Image.fromarray(img).save(paths["image"])
    Image.fromarray(mask).save(paths["mask"])
    Image.fromarray(edges).save(paths["edges"])
    Image.fromarray(img[:32, :32]).save(paths["ref"])
    return paths


def _base(command: str, f: dict[str, Path], out: Path) -> list[str]:
    image, mask = str(f["image"]), str(f["mask"])
    return {
        "remove": ["remove", image, "--mask", mask],
        "harmonize": ["harmonize", image, "--mask", mask],
        "paste": ["paste", image, "--object", str(f["ref"]), "--box", "10,10,40,40"],
        "segment": ["segment", image, "--box", "10,10,50,50"],
        "compose": ["compose", image, "--edited-condition", str(f["edges"]), "--mask", mask],
        "paint": ["paint", image, "--mask", mask, "--reference", str(f["ref"])],
        "inpaint": ["inpaint", image, "--mask", mask, "--prompt", "a red ball"],
        "insert": ["insert", image, "--mask", mask, "--reference", str(f["ref"])],
        "outpaint": ["outpaint", image, "--extend", "0,0,16,0"],
    }[command] + ["-o", str(out)]


def _numeric_options(engine: str, task: str) -> list[str]:
    cls = get_engine_info(engine).tasks[task]
    hints = field_types(cls)
    return [f.name for f in dataclasses.fields(cls) if unwrap_optional(hints[f.name])[0] in (int, float)]


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    from diffcompose.methods.registry import TASKS

    for task in TASKS:
        for engine in engines_for(task):
            cases += [(task, engine, flag(name)) for name in _numeric_options(engine, task)]
        shared = ["--seed", "--max-pixels"] + (["--margin"] if task not in ("paste", "segment") else [])
        cases += [(task, engines_for(task)[0], name) for name in shared]
    return cases


@pytest.mark.parametrize("task, engine, option", _cases())
def test_every_numeric_option_refuses_nan_inf_and_huge_in_one_line(capsys, files, tmp_path, task, engine, option):
    out = tmp_path / "out.png"
    for value in BAD_NUMBERS:
        argv = _base(task, files, out) + ["--engine", engine, f"{option}={value}"]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own type errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert not out.exists()


def test_train_numbers_refuse_nan_inf_and_huge(capsys, tmp_path):
    (tmp_path / "data.jsonl").write_text("")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{manifest: data.jsonl}}\ntrain: {{output_dir: {tmp_path / 'run'}}}\n")
    for value in BAD_NUMBERS:
        try:
            code = main(["train", "pbe", "--config", str(cfg), f"--max-steps={value}"])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, (value, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("box", ["nan,0,10,10", "0,0,inf,10", "-inf,0,10,10", "0,0,1e400,10"])
def test_non_finite_boxes(capsys, files, tmp_path, box):
    for task in ("segment", "paste"):
        argv = _base(task, files, tmp_path / "o.png")
        i = argv.index("--box")
        argv[i: i + 2] = [f"--box={box}"]  # a value starting with '-' needs the = form (said in --help)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "finite" in err


def test_api_refuses_what_the_cli_refuses(files):
    import diffcompose as dc

    for bad in (dict(margin=-5), dict(margin=10**9), dict(seed=2**70), dict(seed=-1), dict(max_pixels=0),
                dict(radius=float("nan")), dict(radius=2.5), dict(radius=True), dict(paste_back="no")):
        with pytest.raises(InputError):
            dc.remove(files["image"], files["mask"], engine="classical", **bad)


# ----------------------------------------------------------------------------- outputs

def test_unwritable_outputs_fail_before_any_work(capsys, files, tmp_path):
    (tmp_path / "adir.png").mkdir()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    cases = {
        str(tmp_path / "adir.png"): "is a folder",
        str(blocker / "out.png"): "is a file, not a folder",
        str(tmp_path / ("x" * 300 + ".png")): "too long",
    }
    if os.geteuid() != 0:  # root writes through read-only permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases[str(ro / "out.png")] = "cannot write in"
    for out, fragment in cases.items():
        assert main(["remove", str(files["image"]), "--mask", str(files["mask"]), "-o", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err


def test_convert_refuses_random_bytes_and_needs_a_kind(capsys, tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(os.urandom(4096))
    assert main(["convert", "pbe", str(fake), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable safetensors file" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:
        main(["convert"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "required: KIND" in err


def test_torch_checkpoint_errors_never_advise_loading_unsafely(capsys, tmp_path):
    import pickle

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"x": slice(1, 2, print)}))
    assert main(["convert", "pbe", str(evil), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused" in err and "weights_only=False" not in err and "trust" not in err


def _light_run(argv: list[str], cwd: Path) -> tuple[int, str, bool]:
    """Run the CLI in a fresh interpreter: exit code, stderr, whether torch got imported."""
    code = ("import sys; from diffcompose.cli.main import main; rc = main(sys.argv[1:]); "
            "sys.stdout.write(str('torch' in sys.modules)); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=cwd, timeout=120)
    return p.returncode, p.stderr, p.stdout.strip() == "True"


@pytest.mark.slow
def test_convert_and_train_check_arguments_before_importing_torch(tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep")
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"x")
    cfg = tmp_path / "cfg.yaml"
    (tmp_path / "data.jsonl").write_text("")
    cfg.write_text(f"data: {{manifest: data.jsonl}}\ntrain: {{output_dir: {users}}}\n")
    for argv, fragment in (
        (["convert", "pbe", str(tmp_path / "missing.ckpt"), str(tmp_path / "o")], "checkpoint not found"),
        (["convert", "pbe", str(ckpt), str(users), "--force"], "not written by diffcompose"),
        (["train", "pbe", "--config", str(cfg)], "not written by diffcompose"),
    ):
        code, err, torch_loaded = _light_run(argv, tmp_path)
        assert code == 2 and fragment in err and err.count("\n") == 1, err
        assert not torch_loaded
    assert sorted(p.name for p in users.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------- configs and manifests

def test_config_values_are_read_by_their_types(tmp_path):
    from diffcompose.methods.pbe.config import config_from_dict

    cfg = config_from_dict({"data": {"manifest": "m.jsonl"}, "train": {"learning_rate": "1e-5", "max_steps": "10"}})
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float) and cfg.max_steps == 10
    for bad, fragment in ((float("nan"), "learning_rate must be a finite number"),
                          (float("-inf"), "learning_rate must be a finite number"),
                          ("fast", "learning_rate must be a number")):
        with pytest.raises(InputError, match=fragment):
            config_from_dict({"data": {"manifest": "m.jsonl"}, "train": {"learning_rate": bad}})
    with pytest.raises(InputError, match="seed"):
        config_from_dict({"data": {"manifest": "m.jsonl"}, "train": {"seed": 2**70}})


@pytest.mark.parametrize("text, fragment", [
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"data: [unclosed", "not valid YAML"),
    (b"train: {learning_rate: .nan}\ndata: {manifest: data.jsonl}", "learning_rate must be a finite number"),
    (b"data: {manifest: nowhere.jsonl}", "data.manifest not found"),
])
def test_bad_configs_are_one_line(capsys, tmp_path, text, fragment):
    (tmp_path / "data.jsonl").write_text("")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(text)
    assert main(["train", "pbe", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


@pytest.mark.parametrize("name, text, fragment", [
    ("m.jsonl", "5\n", "expected a JSON object"),
    ("m.jsonl", '{"image": "missing.png", "boxes": [[0, 0, 5, 5]]}\n', "image not found"),
    ("m.jsonl", '{"image": "img.png", "boxes": [["a", "b", "c", "d"]]}\n', "box must have 4 numbers"),
    ("m.jsonl", '{"image": "img.png", "boxes": 7}\n', "must be a list"),
    ("m.json", "{broken", "not a valid COCO"),
    ("m.json", "12", "a COCO manifest is a JSON object"),
])
def test_bad_manifests_are_one_line(tmp_path, name, text, fragment):
    pytest.importorskip("torch")
    from diffcompose.methods.pbe.data import read_records

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "img.png")
    manifest = tmp_path / name
    manifest.write_text(text)
    with pytest.raises(InputError, match=fragment):
        read_records(manifest)


@pytest.mark.parametrize("text, fragment", [
    ("{broken", "not valid JSON"),
    ('{"a": 1}', "JSON list of cases"),
    ('[{"task": "removal"}]', "no \"files\" mapping"),
    ('[{"task": "removal", "files": {"image": "x.png"}}]', "needs files image, mask"),
])
def test_demo_testdata_problems_are_one_line(capsys, tmp_path, text, fragment):
    data = tmp_path / "td"
    data.mkdir()
    (data / "manifest.json").write_text(text)
    assert main(["demo", "--testdata", str(data), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


def test_train_never_writes_into_a_folder_it_did_not_make(capsys, tmp_path):
    users = tmp_path / "results"
    users.mkdir()
    (users / "paper.tex").write_text("precious")
    (tmp_path / "data.jsonl").write_text("")
    cfg = tmp_path / "cfg.yaml"
    for out, fragment in ((users, "not written by diffcompose"), (tmp_path, "contains the input")):
        cfg.write_text(f"data: {{manifest: data.jsonl}}\ntrain: {{output_dir: {out}}}\n")
        assert main(["train", "pbe", "--config", str(cfg)]) == 2
        assert fragment in capsys.readouterr().err
    assert [p.name for p in users.iterdir()] == ["paper.tex"]


def test_choice_options_have_their_choices_typed():
    """Guard for the property test above: it must see numeric options of every engine."""
    assert {"radius"} <= set(_numeric_options("classical", "remove"))
    assert {"iterations", "guidance", "lr"} <= set(_numeric_options("freecompose", "remove"))
    assert typing.get_origin(field_types(get_engine_info("pbe").tasks["paint"])["scheduler"]) is typing.Literal


@pytest.mark.slow
def test_library_warnings_do_not_reach_stderr(files, tmp_path):
    """A fresh interpreter (pytest would swallow the warning itself): the CLI keeps library warnings off stderr."""
    code = (
        "import sys, warnings\n"
        "from diffcompose.methods.classical import remove as r\n"
        "real = r.remove\n"
        "def noisy(**kw):\n"
        "    warnings.warn('Corrupt EXIF data.  Expecting to read 4 bytes but only got 0.', UserWarning)\n"
        "    return real(**kw)\n"
        "r.remove = noisy\n"
        "from diffcompose.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "o.png"
    argv = ["remove", str(files["image"]), "--mask", str(files["mask"]), "-o", str(out), "--engine", "classical"]
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and out.exists()
    assert "EXIF" not in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-c", code, "-v", *argv, "--force"], capture_output=True, text=True, timeout=120)
    assert "EXIF" in p.stderr  # shown when asked for


def test_tiny_model_cache_never_replaces_a_users_folder(tmp_path):
    pytest.importorskip("diffusers")
    from diffcompose.models.tiny import ensure_written

    target = tmp_path / "cache"
    target.mkdir()
    (target / "thesis.pdf").write_text("mine")
    with pytest.raises(InputError, match="not a tiny model written by diffcompose"):
        ensure_written(target, lambda p: (p.mkdir(), (p / "model_index.json").write_text("{}")), "model")
    assert [p.name for p in target.iterdir()] == ["thesis.pdf"]
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no temporary folder left beside it


def test_memory_budget_refuses_nan_inf_and_nonsense(monkeypatch):
    from diffcompose.methods.manager import BUDGET_ENV, EngineManager, parse_bytes

    assert parse_bytes("8GB") == 8 * 10**9 and parse_bytes("512MiB") == 512 * 2**20
    for text in ("nan", "inf", "-1GB", "0", "lots", "1e400"):
        with pytest.raises(InputError, match="memory budget"):
            parse_bytes(text)
        monkeypatch.setenv(BUDGET_ENV, text)
        with pytest.raises(InputError):
            EngineManager()
    monkeypatch.delenv(BUDGET_ENV)
    for value in (float("nan"), float("inf"), -5, 0, True, "8GB"):
        with pytest.raises(InputError, match="memory_budget"):
            EngineManager(memory_budget=value)
    assert EngineManager(memory_budget=10**9).memory_budget == 10**9
