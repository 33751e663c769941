"""The one JSON-lines reader (``training/manifest.py``) and its callers: the three trainers, ``batch``, ``evaluate``.

Each caller keeps its own meaning of a row and its own messages; these tests pin what they now
share: line numbers counted over blank and comment lines, a byte-order mark dropped, only
``\\n``/``\\r\\n``/``\\r`` ending a line, and non-standard numbers refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcompose.batch.manifest import read_manifest, read_results, read_results_file
from diffcompose.errors import InputError
from diffcompose.training.manifest import read_json_lines, read_training_manifest


def test_lines_are_numbered_in_the_file_and_parsed_or_given_their_error(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes("\ufeff# a comment\n\n  # indented comment\r\n{\"a\": 1}\r\n[1, 2]\n{broken\n"
                     "{\"x\": NaN}\n{\"x\": -Infinity}\n{\"x\": 1e999}\n\"text\"\n".encode("utf-8"))
    lines = read_json_lines(path)
    assert [ln.number for ln in lines] == [4, 5, 6, 7, 8, 9, 10]
    assert (lines[0].value, lines[0].error) == ({"a": 1}, None)  # the byte-order mark and the \r are gone
    assert lines[1].value == [1, 2] and lines[6].error is None and lines[6].value == "text"
    bad = lines[2:6]
    assert all(ln.value is None and ln.error.startswith("not valid JSON (") and "\n" not in ln.error for ln in bad)
    assert "NaN" in lines[3].error and "Infinity" in lines[4].error and "1e999" in lines[5].error


def test_only_json_line_breaks_end_a_line(tmp_path: Path) -> None:
    """U+2028, U+0085 and a form feed are characters a JSON string may hold: they do not cut the line."""
    prompt = "a cat\u2028on a mat\x85\x0cend"
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"prompt": prompt}, ensure_ascii=False) + "\r" + json.dumps({"b": 2}) + "\n",
                    encoding="utf-8")
    lines = read_json_lines(path)
    assert [(ln.number, ln.value) for ln in lines] == [(1, {"prompt": prompt}), (2, {"b": 2})]


def test_undecodable_text_is_the_callers_error_or_replaced(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(UnicodeDecodeError):
        read_json_lines(path)
    assert [ln.value["id"] for ln in read_json_lines(path, errors="replace")] == ["a", "\ufffd"]


def test_batch_manifest_uses_the_shared_rules(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    job = {"task": "remove", "engine": "classical", "inputs": {"image": "a.png", "mask": "a.png"}}
    path = tmp_path / "m.jsonl"
    path.write_bytes(("\ufeff" + json.dumps(job) + "\r\nnull\n\n" + json.dumps({**job, "model": "x\u2028y"},
                                                                             ensure_ascii=False)).encode())
    items = read_manifest(path)
    assert [it.id for it in items] == ["000001", "000002", "000004"]
    assert items[0].error is None and items[0].task == "remove"  # the byte-order mark is not part of the JSON
    assert items[1].error == "line 2: a job must be a JSON object"  # before: a null line was an item without error
    assert items[2].error is None and items[2].model == "x\u2028y"  # U+2028 inside a string does not cut the line


def test_results_readers_skip_torn_lines_and_keep_the_last_row_per_id(tmp_path: Path) -> None:
    rows = [{"id": "a", "n": 1}, {"id": "b", "n": 1}, {"id": "a", "n": 2}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"id": "c", "n"' + "\n" + json.dumps({"no_id": 1}) + "\n"
    (tmp_path / "results.jsonl").write_text(text)
    assert read_results(tmp_path) == [{"id": "b", "n": 1}, {"id": "a", "n": 2}]
    copy = tmp_path / "elsewhere.jsonl"
    copy.write_text(text)
    assert read_results_file(copy) == read_results(tmp_path)


def test_training_manifest_errors_are_one_line(tmp_path: Path) -> None:
    def jsonl(path: Path, root: Path, lo: float, hi: float) -> list:
        return [ln.value["image"] for ln in read_json_lines(path)]

    def coco(path: Path, root: Path, lo: float, hi: float) -> list:
        return json.loads(path.read_text(encoding="utf-8"))["images"]

    with pytest.raises(InputError, match="training manifest not found"):
        read_training_manifest(tmp_path / "none.jsonl", None, (coco, jsonl), 0.0, 1.0)
    for name, data, fragment in (("m.jsonl", b'{"image": 1}\n{"mask": 2}\n', r"valid \.jsonl manifest \(KeyError"),
                                 ("m.json", b"{}", r"not a valid COCO instances \.json manifest"),
                                 ("n.jsonl", b"\xff\xfe", "is not UTF-8 text")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=fragment):
            read_training_manifest(tmp_path / name, None, (coco, jsonl), 0.0, 1.0)
    assert read_training_manifest(tmp_path / "m.jsonl", None, (coco, lambda *a: ["ok"]), 0.0, 1.0) == ["ok"]


def test_every_trainer_reads_its_manifest_with_the_shared_rules(tmp_path: Path) -> None:
    """A byte-order mark and comments are fine for all three; a line that is not JSON is named by its line."""
    pytest.importorskip("torch")
    from diffcompose.methods.anydoor.data import read_sources
    from diffcompose.methods.pbe.data import read_records
    from diffcompose.methods.smartbrush.data import read_instances

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "img.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rows = {"pbe": {"image": "img.png", "boxes": [[16, 16, 48, 48]]},
            "anydoor": {"image": "img.png", "mask": "mask.png"},
            "smartbrush": {"image": "img.png", "mask": "mask.png", "label": "a square"}}
    readers = {"pbe": read_records, "anydoor": read_sources, "smartbrush": read_instances}
    for name, row in rows.items():
        good = tmp_path / f"{name}.jsonl"
        good.write_text("\ufeff# made by hand\n" + json.dumps(row) + "\n", encoding="utf-8")
        assert len(readers[name](good)) == 1, name
        bad = tmp_path / f"{name}_bad.jsonl"
        bad.write_text("# made by hand\n" + json.dumps(row) + "\n{\"image\": NaN\n", encoding="utf-8")
        with pytest.raises(InputError, match=f"{bad.name}:3: not valid JSON \\(NaN is not a JSON number\\)"):
            readers[name](bad)
        listed = tmp_path / f"{name}_list.jsonl"
        listed.write_text(json.dumps(row) + "\n[1, 2]\n", encoding="utf-8")
        with pytest.raises(InputError, match=f"{listed.name}:2: expected a JSON object, got list"):
            readers[name](listed)


def test_batch_reads_manifests_without_torch() -> None:
    code = "import sys, diffcompose.batch.manifest, diffcompose.training.manifest; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
