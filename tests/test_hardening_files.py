"""Issue 25, the file side: hostile manifest lines and results rows, run-level settings checked first,
folders the tool made (their kind, a user's files in them, links inside them) and ground truths that
cannot be used. Every case runs the classical engines on small synthetic images: no torch, no data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcompose.batch import read_results, run_batch
from diffcompose.cli.main import main
from diffcompose.errors import InputError
from diffcompose.evaluation.evaluate import Models, evaluate
from diffcompose.inputs import parse_box
from diffcompose.outdir import BATCH, EVALUATION, MARKER, marked_kind, user_files
from diffcompose.training.manifest import MAX_DEPTH, parse_json_line, read_json_lines

H, W = 48, 64


def _image(seed: int) -> np.ndarray:
    """A smooth colour picture (inpainting has something to continue), different per seed."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([(x * 4 + seed * 30) % 256, (y * 5) % 256, (x + y + seed * 50) % 256], axis=-1)
    return rgb.astype(np.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """photos/a.png, photos/b.png, masks/a.png, a 32x32 truth/small.png and a manifest of two removals."""
    for d in ("photos", "masks", "truth"):
        (tmp_path / d).mkdir()
    for k, name in enumerate("ab"):
        Image.fromarray(_image(k)).save(tmp_path / "photos" / f"{name}.png")
    m = np.zeros((H, W), np.uint8)
    m[10:30, 20:40] = 255
    Image.fromarray(m).save(tmp_path / "masks" / "a.png")
    Image.fromarray(_image(3)[:32, :32]).save(tmp_path / "truth" / "small.png")
    _write(tmp_path / "m.jsonl", [_remove("a", "a"), _remove("b", "b")])
    return tmp_path


def _remove(ident: str | None, photo: str, **extra) -> str:
    job = {"task": "remove", "engine": "classical", "inputs": {"image": f"photos/{photo}.png", "mask": "masks/a.png"},
           "options": {"method": "telea"}, **extra}
    if ident is not None:
        job["id"] = ident
    return json.dumps(job)


def _write(path: Path, lines: list[str], prefix: str = "") -> Path:
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ----------------------------------------------------------------------------- 1. bad lines, bad rows

def test_the_shared_reader_turns_deep_nesting_and_lone_surrogates_into_bad_lines(tmp_path: Path) -> None:
    deep = "[" * 20000 + "]" * 20000
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json_line(deep)
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json_line("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert parse_json_line("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    for text in ('{"id": "a\\udcff"}', '{"k\\ud800": 1}', '[["x", {"p": "\\udfff"}]]'):
        with pytest.raises(ValueError, match="lone surrogate"):
            parse_json_line(text)
    assert parse_json_line('{"p": "caf\\u00e9 \\ud83d\\ude00"}') == {"p": "caf\u00e9 \U0001F600"}  # a real pair
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\n' + deep.encode() + b"\n")
    lines = read_json_lines(path)
    assert [(line.number, line.value) for line in lines] == [(1, {"a": 1}), (2, None)] and lines[1].error


def test_box_numbers_must_be_numbers_not_booleans_or_text() -> None:
    assert parse_box([1, 2, 30, 40]) == (1, 2, 30, 40) and parse_box("1,2,30,40") == (1, 2, 30, 40)
    assert parse_box(np.array([1.0, 2, 30, 40])) == (1, 2, 30, 40)
    for bad in ([True, 10, 60, 50], ["1", "2", "30", "40"], [1, 2, 30, None], 5):
        with pytest.raises(InputError, match="box"):
            parse_box(bad)


def test_one_bad_line_is_one_bad_item_whatever_it_holds_and_the_run_goes_on(folder: Path) -> None:
    paste = {"task": "paste", "engine": "classical",
             "inputs": {"background": "photos/a.png", "obj": "photos/b.png", "box": [True, 10, 60, 40]}}
    lines = [
        _remove("good", "a"),
        "[" * 50000 + "]" * 50000,  # RecursionError in Python's parser
        _remove("a\\udcff", "a").replace("a\\\\udcff", "a\\udcff"),  # lone surrogate in the id
        _remove("path", "a").replace("photos/a.png", "photos/\\udcff.png"),  # ... in a path
        json.dumps({"id": "prompt", "task": "inpaint", "engine": "classical",
                    "inputs": {"image": "photos/a.png", "mask": "masks/a.png", "prompt": "x"}}).replace(
            '"x"', '"x\\udcff"'),  # ... in a prompt
        json.dumps({**paste, "id": "bool-box"}),
        json.dumps({**paste, "id": "text-box", "inputs": {**paste["inputs"], "box": ["10", "10", "60", "40"]}}),
        _remove("good2", "b"),
    ]
    manifest = _write(folder / "bad.jsonl", lines, prefix="\ufeff")  # saved by Notepad: a byte-order mark
    summary = run_batch(manifest, folder / "out")
    rows = {r["id"]: r for r in read_results(folder / "out")}
    assert (summary.ok, summary.failed) == (2, 6), rows
    assert rows["good"]["status"] == rows["good2"]["status"] == "ok"
    assert "nested deeper" in rows["000002"]["error"]
    assert "lone surrogate" in rows["000003"]["error"] and "lone surrogate" in rows["000004"]["error"]
    assert "lone surrogate" in rows["000005"]["error"]
    assert "not booleans or text" in rows["bool-box"]["error"] and "not booleans or text" in rows["text-box"]["error"]
    # The results file stays readable text, and evaluate scores it.
    (folder / "out" / "results.jsonl").read_text(encoding="utf-8")
    report = evaluate(folder / "out", folder / "ev", metrics="bg-psnr")
    assert report.is_file()


def test_results_rows_of_the_wrong_shape_never_crash_a_resume_or_evaluate(folder: Path, capsys) -> None:
    manifest = folder / "m.jsonl"
    run_batch(manifest, folder / "out")
    results = folder / "out" / "results.jsonl"
    good = {r["id"]: r for r in read_results(folder / "out")}
    hostile = [
        {**good["a"], "outputs": 5},  # not a list
        {**good["a"], "outputs": [{"x": 1}]},
        {**good["a"], "inputs": [1, 2], "ground_truth": 7, "options": "telea"},
        {"id": {"nested": 1}, "status": "ok"},  # no usable id: a foreign line
        {"id": True},
        [1, 2, 3],
        {**good["b"], "seconds": "fast", "finished": "soon", "status": ["ok"]},
    ]
    with results.open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(row) + "\n" for row in hostile))
    rows = {r["id"]: r for r in read_results(folder / "out")}
    assert set(rows) == {"a", "b"} and rows["b"]["status"] == "error" and "wrong shape" in rows["b"]["error"]
    report = evaluate(folder / "out", folder / "ev", metrics="bg-psnr,psnr")
    doc = json.loads((report.parent / "metrics.json").read_text())
    assert {i["id"]: i["status"] for i in doc["items"]} == {"a": "error", "b": "error"}
    # A resume goes on: a broken row (it has no usable time) never outranks the item's good, older row,
    # whose outputs are still there, so nothing needs to run again.
    again = run_batch(manifest, folder / "out")
    assert (again.ok, again.failed, again.skipped) == (0, 0, 2)
    (folder / "out" / "results.jsonl").write_text(json.dumps({**good["a"], "outputs": 5}) + "\n")
    again = run_batch(manifest, folder / "out")  # with only the broken row left, its item runs again
    assert (again.ok, again.failed, again.skipped) == (2, 0, 0)
    assert {r["id"]: r["status"] for r in read_results(folder / "out")} == {"a": "ok", "b": "ok"}


def test_evaluate_writes_its_report_when_some_text_cannot_be_encoded(folder: Path) -> None:
    run_batch(folder / "m.jsonl", folder / "out")
    report = evaluate(folder / "out", folder / "ev", metrics="bg-psnr", title="scores of \udcff")
    assert "\\udcff" in report.read_text(encoding="utf-8")
    assert (report.parent / "metrics.csv").is_file() and (report.parent / "metrics.json").is_file()


# ----------------------------------------------------------------------------- 2. run-level settings first

@pytest.mark.parametrize("keywords, fragment", [
    ({"max_pixels": -1}, "--max-pixels"), ({"max_pixels": 0}, "--max-pixels"), ({"max_pixels": True}, "--max-pixels"),
    ({"max_pixels": "100"}, "--max-pixels"), ({"device": "gpu7"}, "--device"), ({"device": 3}, "--device"),
    ({"dtype": "float8"}, "--dtype"), ({"seed": -1}, "--seed"),
])
def test_run_batch_checks_its_settings_before_any_folder_is_made(folder: Path, keywords, fragment) -> None:
    with pytest.raises(InputError, match=fragment):
        run_batch(folder / "m.jsonl", folder / "out", **keywords)
    assert not (folder / "out").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--max-pixels", "-1"], "--max-pixels"), (["--max-pixels", "0"], "--max-pixels"),
    (["--device", "gpu7"], "--device"),
])
def test_batch_cli_refuses_bad_run_flags_with_exit_2_and_no_folder(folder: Path, capsys, flags, fragment) -> None:
    code, _, err = _run(capsys, ["batch", str(folder / "m.jsonl"), "-o", str(folder / "out"), *flags])
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (folder / "out").exists()


def test_evaluate_metrics_empty_list_or_wrong_type_is_one_line_and_a_list_works(folder: Path, capsys) -> None:
    run_batch(folder / "m.jsonl", folder / "out")
    for metrics in ("", " , ", []):
        with pytest.raises(InputError, match="names no metric"):
            evaluate(folder / "out", folder / "ev", metrics=metrics)
    with pytest.raises(InputError, match="--metrics must be"):
        evaluate(folder / "out", folder / "ev", metrics=5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--device"):
        evaluate(folder / "out", folder / "ev", models=Models(device="gpu7"))
    assert not (folder / "ev").exists()
    code, _, err = _run(capsys, ["evaluate", str(folder / "out"), "-o", str(folder / "ev"), "--metrics", ""])
    assert code == 2 and err.count("\n") == 1 and "names no metric" in err, err
    report = evaluate(folder / "out", folder / "ev", metrics=["bg-psnr", "bg-mse"])
    assert json.loads((report.parent / "metrics.json").read_text())["metrics"] == ["bg-psnr", "bg-mse"]


def test_an_unwritable_batch_folder_on_resume_is_one_line(folder: Path, capsys, monkeypatch) -> None:
    run_batch(folder / "m.jsonl", folder / "out")
    out = folder / "out"
    (out / "results.jsonl").unlink()
    (out / "outputs" / "a.png").unlink()
    (out / "outputs" / "b.png").unlink()
    (out / "outputs").rmdir()
    (out / "outputs").write_text("not a folder")
    code, _, err = _run(capsys, ["batch", str(folder / "m.jsonl"), "-o", str(out)])
    assert code == 2 and err.count("\n") == 1 and "not a folder" in err and "internal error" not in err, err
    (out / "outputs").unlink()
    (out / "outputs").mkdir()
    (out / "results.jsonl").mkdir()
    code, _, err = _run(capsys, ["batch", str(folder / "m.jsonl"), "-o", str(out)])
    assert code == 2 and err.count("\n") == 1 and "results.jsonl is not a file" in err, err
    (out / "results.jsonl").rmdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes through any permission: the system's answer is what a user would get
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != out and real(p, mode, **kw))
    try:
        code, _, err = _run(capsys, ["batch", str(folder / "m.jsonl"), "-o", str(out)])
    finally:
        out.chmod(0o755)
    assert code == 2 and err.count("\n") == 1 and f"cannot write in {out}" in err, err
    assert sorted(p.name for p in (out / "outputs").iterdir()) == []


# ----------------------------------------------------------------------------- 5. folders the tool made

def test_a_folder_marker_names_its_kind_and_force_never_turns_one_kind_into_another(folder: Path, capsys) -> None:
    run_batch(folder / "m.jsonl", folder / "out")
    out = folder / "out"
    assert marked_kind(out) == BATCH
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    run_batch(folder / "m.jsonl", folder / "other")
    code, _, err = _run(capsys, ["evaluate", str(folder / "other"), "-o", str(out), "--force"])
    assert code == 2 and err.count("\n") == 1 and "batch run folder" in err and "not an evaluation" in err, err
    ckpt = folder / "model.ckpt"
    ckpt.write_bytes(b"\0" * 16)
    code, _, err = _run(capsys, ["convert", "pbe", str(ckpt), str(out), "--force"])
    assert code == 2 and err.count("\n") == 1 and "batch run folder" in err and "not a model" in err, err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # nothing of the batch was touched
    evaluate(out, folder / "ev", metrics="bg-psnr")
    assert marked_kind(folder / "ev") == EVALUATION
    with pytest.raises(InputError, match="evaluation folder .* not a batch run"):
        run_batch(folder / "m.jsonl", folder / "ev", force=True)
    legacy = folder / "legacy"  # a marker from before kinds were recorded still says what it is
    legacy.mkdir()
    (legacy / MARKER).write_text("written by diffcompose batch\n")
    (legacy / "results.jsonl").write_text("")
    assert marked_kind(legacy) == BATCH
    with pytest.raises(InputError, match="batch run folder"):
        evaluate(out, legacy, metrics="bg-psnr", force=True)


def test_force_on_the_same_kind_never_deletes_files_the_user_added(folder: Path) -> None:
    out = folder / "out"
    run_batch(folder / "m.jsonl", out)
    assert user_files(out) == []
    (out / "outputs" / "a_retouched.png").write_bytes(b"my edit")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"did not write \(notes.txt, outputs/a_retouched.png\)"):
        run_batch(folder / "m.jsonl", out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "outputs" / "a_retouched.png").read_bytes() == b"my edit"
    (out / "notes.txt").unlink()
    (out / "outputs" / "a_retouched.png").unlink()
    Image.fromarray(_image(7)).save(out / "outputs" / "a.png")  # retouched in place
    with pytest.raises(InputError, match=r"did not write \(outputs/a.png\)"):
        run_batch(folder / "m.jsonl", out, force=True)
    (out / "outputs" / "a.png").unlink()  # the tool writes it again on a resume: then it is the tool's once more
    assert run_batch(folder / "m.jsonl", out).ok == 1 and user_files(out) == []
    assert run_batch(folder / "m.jsonl", out, force=True).ok == 2  # the tool's own files are replaced as before
    ev = folder / "ev"
    evaluate(out, ev, metrics="bg-psnr")
    (ev / "my-summary.md").write_text("mine")
    with pytest.raises(InputError, match="my-summary.md"):
        evaluate(out, ev, metrics="bg-psnr", force=True)
    assert (ev / "my-summary.md").read_text() == "mine"
    # evaluate's default folder sits inside the batch: its files are the tool's, a note in it is not
    evaluate(out, out / "evaluation", metrics="bg-psnr")
    assert user_files(out) == []
    (out / "evaluation" / "note.txt").write_text("mine")
    with pytest.raises(InputError, match=r"evaluation/note.txt"):
        run_batch(folder / "m.jsonl", out, force=True)
    (out / "evaluation" / "note.txt").unlink()
    assert run_batch(folder / "m.jsonl", out, force=True).ok == 2


def test_no_write_goes_through_a_link_placed_inside_a_tool_made_folder(folder: Path, capsys) -> None:
    out = folder / "out"
    run_batch(folder / "m.jsonl", out)
    mine = folder / "mine"
    mine.mkdir()
    (mine / "a.png").write_bytes(b"a user's own file")
    for p in (out / "outputs").iterdir():
        p.unlink()
    (out / "outputs").rmdir()
    (out / "outputs").symlink_to(mine, target_is_directory=True)  # the items rerun: their outputs are gone
    code, _, err = _run(capsys, ["batch", str(folder / "m.jsonl"), "-o", str(out)])
    assert code == 2 and err.count("\n") == 1 and "symbolic link outputs" in err, err
    assert (mine / "a.png").read_bytes() == b"a user's own file" and sorted(p.name for p in mine.iterdir()) == ["a.png"]
    (out / "outputs").unlink()
    (out / "outputs").mkdir()
    (out / "results.jsonl").unlink()
    (out / "results.jsonl").symlink_to(mine / "a.png")
    code, _, err = _run(capsys, ["batch", str(folder / "m.jsonl"), "-o", str(out)])
    assert code == 2 and "symbolic link results.jsonl" in err, err
    assert (mine / "a.png").read_bytes() == b"a user's own file"


# ----------------------------------------------------------------------------- 6. ground truth

def test_a_missing_or_wrong_size_ground_truth_drops_only_the_metrics_that_need_it(folder: Path) -> None:
    _write(folder / "gt.jsonl", [_remove("small", "a", ground_truth="truth/small.png"),
                                 _remove("gone", "b", ground_truth="truth/nowhere.png"),
                                 _remove("right", "b", ground_truth="photos/a.png")])
    run_batch(folder / "gt.jsonl", folder / "out")
    report = evaluate(folder / "out", folder / "ev", metrics="psnr,fmse,bg-psnr,bg-mse")
    items = {i["id"]: i for i in json.loads((report.parent / "metrics.json").read_text())["items"]}
    for ident, why in (("small", "ground truth is 32x32, the output 64x48"), ("gone", "not found")):
        assert set(items[ident]["scores"]) == {"bg-psnr", "bg-mse"}, items[ident]
        assert why in items[ident]["skipped"]["psnr"] and why in items[ident]["skipped"]["fmse"], items[ident]
    assert set(items["right"]["scores"]) == {"psnr", "fmse", "bg-psnr", "bg-mse"}
