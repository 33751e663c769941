"""``diffcompose batch``: the manifest, the results contract, resuming, the folder rules, and sharding
across two real processes (``accelerate launch``, gloo on CPU)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffcompose as dc
from diffcompose.batch import read_manifest, read_results, run_batch
from diffcompose.batch.runner import rank_file
from diffcompose.errors import Cancelled, InputError, OutputExistsError
from diffcompose.methods.engine import Engine
from diffcompose.methods.registry import EngineInfo
from diffcompose.progress import CancelToken
from diffcompose.regions import WindowPolicy

FIELDS = {"id", "task", "engine", "status", "outputs", "seed", "seconds", "error", "inputs", "ground_truth",
          "options", "rank"}


@pytest.fixture
def folder(tmp_path: Path, photo: np.ndarray) -> Path:
    """Two small real photos with masks in photos/ and masks/ beside a manifest folder."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "masks").mkdir()
    for name, (y, x) in {"a": (40, 170), "b": (100, 220)}.items():
        crop = photo[y:y + 96, x:x + 128]
        Image.fromarray(crop).save(tmp_path / "photos" / f"{name}.png")
        m = np.zeros(crop.shape[:2], np.uint8)
        m[30:60, 40:80] = 255
        Image.fromarray(m).save(tmp_path / "masks" / f"{name}.png")
    return tmp_path


def remove_line(ident: str | None, name: str, method: str = "telea", **extra) -> str:
    job = {"task": "remove", "engine": "classical", "inputs": {"image": f"photos/{name}.png",
                                                               "mask": f"masks/{name}.png"},
           "options": {"method": method}, **extra}
    if ident is not None:
        job["id"] = ident
    return json.dumps(job)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_manifest_lines_comments_defaults_and_bad_lines(folder: Path, monkeypatch):
    """Comments/blank lines are skipped but counted (default ids are line numbers); paths are relative to the
    manifest, not the working directory; every kind of bad line becomes a bad item with its reason."""
    write(folder / "m.jsonl", [
        "# a comment", "", remove_line(None, "a"), "{not json",
        json.dumps({"task": "fly"}), json.dumps({"task": "remove", "inputs": {"image": "photos/a.png"}}),
        json.dumps({"task": "remove", "inputs": {"image": "x.png", "mask": "y.png", "colour": "red"}}),
        '{"task": "remove", "inputs": {"image": "x.png", "mask": "y.png"}, "options": {"radius": NaN}}',
        '{"task": "remove", "inputs": {"image": "x.png", "mask": "y.png"}, "options": {"radius": 1e999}}',
        json.dumps({"task": "segment", "inputs": {"image": "photos/a.png", "box": [1, 2, 30, 40],
                                                  "points": [[10, 20, 1]]}, "seed": 7,
                    "ground_truth": "masks/a.png"}),
        "[1, 2]"])
    monkeypatch.chdir(folder / "photos")  # elsewhere: paths must not follow the working directory
    items = read_manifest(Path("..") / "m.jsonl", seed=3)
    assert [it.id for it in items] == [f"{n:06d}" for n in range(3, 12)]
    first = items[0]
    assert first.error is None and first.engine == "classical" and first.seed == 3
    assert first.inputs == {"image": str(folder / "photos/a.png"), "mask": str(folder / "masks/a.png")}
    errors = [it.error for it in items[1:7]] + [items[-1].error]
    assert all(e is not None and e.startswith("line ") and "\n" not in e for e in errors)
    assert "not valid JSON" in errors[0] and "unknown task 'fly'" in errors[1] and "needs input(s) mask" in errors[2]
    assert "colour" in errors[3] and "NaN" in errors[4] and "1e999" in errors[5] and "JSON object" in errors[6]
    seg = items[-2]
    assert seg.error is None and seg.inputs["box"] == (1, 2, 30, 40) and seg.seed == 7 and seg.engine == "auto"
    assert seg.inputs["points"] == [[10, 20, 1]]  # values, not paths
    assert seg.ground_truth == str(folder / "masks/a.png")


@pytest.mark.parametrize("lines, why", [
    ([remove_line("x", "a"), remove_line("x", "b")], "already used on line 1"),
    ([remove_line("a", "a"), remove_line(None, "b"), remove_line("000002", "b")], "already used on line 2"),
    ([remove_line("../evil", "a")], "cannot name a file"),
    ([remove_line(".hidden", "a")], "cannot name a file"),
    ([remove_line("Dog", "a"), remove_line("dog", "b")], "already used on line 1"),  # one file on macOS
    ([remove_line("p_1", "a"), remove_line("p", "b")], "share its output with image 1 of id 'p' on line 2"),
])
def test_ids_that_would_collide_or_escape_stop_the_batch_before_any_work(folder: Path, lines, why):
    with pytest.raises(InputError, match=why):
        run_batch(write(folder / "m.jsonl", lines), folder / "out")
    assert not (folder / "out").exists()


def test_results_match_the_api_and_a_bad_item_does_not_stop_the_run(folder: Path):
    """The outputs are what ``dc.remove`` makes from the same inputs; a bad item in the middle is one line of
    error and the items after it still run; results carry the contract's fields."""
    manifest = write(folder / "m.jsonl", [
        remove_line("a", "a", ground_truth="photos/a.png"),
        remove_line("bad-option", "a", method="nope"),
        remove_line("missing", "zzz"),
        remove_line("b", "b", method="ns", seed=5),
        json.dumps({"id": "seg", "task": "segment", "engine": "classical",
                    "inputs": {"image": "photos/b.png", "box": "30,20,100,80"}}),
    ])
    events = []
    summary = run_batch(manifest, folder / "out", seed=11, on_progress=events.append)
    assert (summary.ok, summary.failed, summary.skipped, summary.total) == (3, 2, 0, 5)
    assert [(e.task, e.step, e.total) for e in events] == [("batch", k, 5) for k in range(1, 6)]
    rows = read_results(folder / "out")
    assert [r["id"] for r in rows] == ["a", "bad-option", "missing", "b", "seg"]
    assert all(FIELDS <= set(r) for r in rows)
    by = {r["id"]: r for r in rows}
    assert [r["status"] for r in rows] == ["ok", "error", "error", "ok", "ok"]
    assert "method" in by["bad-option"]["error"] and "nope" in by["bad-option"]["error"]
    assert "zzz.png" in by["missing"]["error"] and by["missing"]["outputs"] == []
    assert by["a"]["seed"] == 11 and by["b"]["seed"] == 5 and by["a"]["engine"] == "classical"
    assert by["a"]["ground_truth"] == str(folder / "photos/a.png")
    assert by["a"]["inputs"]["image"] == str(folder / "photos/a.png") and by["seg"]["inputs"]["box"] == "30,20,100,80"
    for ident, method in (("a", "telea"), ("b", "ns")):
        assert by[ident]["outputs"] == [f"outputs/{ident}.png"]
        got = np.asarray(Image.open(folder / "out" / by[ident]["outputs"][0]))
        want = np.asarray(dc.remove(folder / f"photos/{ident}.png", folder / f"masks/{ident}.png",
                                    engine="classical", method=method))
        np.testing.assert_array_equal(got, want)
    seg = np.asarray(Image.open(folder / "out/outputs/seg.png"))
    np.testing.assert_array_equal(seg, np.asarray(dc.segment(folder / "photos/b.png", (30, 20, 100, 80), seed=11)))
    assert json.loads((folder / "out/batch.json").read_text())["manifest"] == str(manifest.resolve())


def test_engines_load_once_per_process(folder: Path, monkeypatch):
    """Every item naming the same engine (and model) runs on one loaded instance of the process's manager."""
    from diffcompose.methods import manager
    from diffcompose.methods.classical.engine import ClassicalEngine

    loads = []
    original = ClassicalEngine._load
    monkeypatch.setattr(ClassicalEngine, "_load", lambda self: (loads.append(id(self)), original(self))[1])
    monkeypatch.setattr(manager, "_DEFAULT", manager.EngineManager())
    manifest = write(folder / "m.jsonl", [remove_line("a", "a"), remove_line("b", "b", method="ns"),
                                          json.dumps({"task": "segment", "engine": "classical",
                                                      "inputs": {"image": "photos/a.png", "box": [5, 5, 90, 80]}})])
    assert run_batch(manifest, folder / "out").ok == 3
    assert len(loads) == 1 and len(manager.default_manager().loaded()) == 1


@dataclasses.dataclass(frozen=True)
class PairOptions:
    """No options."""


class PairEngine(Engine):
    """A registered test engine that paints two images per request (as ``--num-images 2`` does)."""

    name = "pairs"

    def window_policy(self, task: str, options: object) -> WindowPolicy:
        return WindowPolicy(context=0.2, min_context=4)

    def _paint(self, *, image: np.ndarray, mask: np.ndarray, reference: np.ndarray, reference_mask: object,
               options: object, ctx: object) -> list[np.ndarray]:
        return [np.full_like(image, 40), 255 - image]


def test_several_images_per_item_are_numbered_outputs(folder: Path):
    from diffcompose.methods.registry import register, unregister

    register(EngineInfo("pairs", f"{__name__}:PairEngine", tasks={"paint": PairOptions}))
    try:
        manifest = write(folder / "m.jsonl", [json.dumps({"id": "p", "task": "paint", "engine": "pairs", "inputs": {
            "image": "photos/a.png", "mask": "masks/a.png", "reference": "photos/b.png"}})])
        assert run_batch(manifest, folder / "out").ok == 1
        row = read_results(folder / "out")[0]
        assert row["outputs"] == ["outputs/p_0.png", "outputs/p_1.png"]
        want = dc.paint(folder / "photos/a.png", folder / "masks/a.png", folder / "photos/b.png", engine="pairs")
        for name, image in zip(row["outputs"], want):
            np.testing.assert_array_equal(np.asarray(Image.open(folder / "out" / name)), np.asarray(image))
    finally:
        unregister("pairs")


def test_rerun_skips_finished_items_and_runs_only_what_is_missing_failed_or_changed(folder: Path):
    """Resume semantics: ok + unchanged line + output present = skipped; anything else runs again."""
    manifest = write(folder / "m.jsonl", [remove_line("a", "a"), remove_line("b", "b"), remove_line("c", "zzz")])
    out = folder / "out"
    run_batch(manifest, out)
    first = {r["id"]: r for r in read_results(out)}

    def ran() -> list[str]:
        return [r["id"] for r in read_results(out) if r["finished"] != first[r["id"]]["finished"]]

    again = run_batch(manifest, out)
    assert (again.ok, again.failed, again.skipped) == (0, 1, 2)  # the failed item is retried, the others kept
    assert ran() == ["c"]
    # a result line deleted: only that item runs again
    kept = [line for line in (out / "results.jsonl").read_text().splitlines() if json.loads(line)["id"] != "b"]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")
    first = {r["id"]: r for r in read_results(out)}
    third = run_batch(manifest, out)
    assert (third.ok, third.failed, third.skipped) == (1, 1, 1)
    rows = read_results(out)
    assert [r["id"] for r in rows] == ["a", "b", "c"]  # compacted back into manifest order
    assert rows[0]["finished"] == first["a"]["finished"]
    # a changed line and a deleted output run again too
    write(manifest, [remove_line("a", "a", method="ns"), remove_line("b", "b"), remove_line("c", "zzz")])
    (out / "outputs/b.png").unlink()
    fourth = run_batch(manifest, out)
    assert (fourth.ok, fourth.skipped) == (2, 0)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "outputs/a.png")), np.asarray(
        dc.remove(folder / "photos/a.png", folder / "masks/a.png", engine="classical", method="ns")))


def test_a_hand_edited_results_line_without_a_usable_time_does_not_stop_the_merge(folder: Path):
    """Results are merged by ``finished`` time; a line whose time is not a number counts as the oldest."""
    manifest = write(folder / "m.jsonl", [remove_line("a", "a")])
    out = folder / "out"
    run_batch(manifest, out)
    good = (out / "results.jsonl").read_text()
    stale = json.dumps({**json.loads(good), "status": "error", "finished": "yesterday"})
    (out / "results.jsonl").write_text(good + stale + "\n")
    again = run_batch(manifest, out)
    assert (again.ok, again.failed, again.skipped) == (0, 0, 1)
    assert (out / "results.jsonl").read_text() == good


def test_cancel_keeps_the_finished_items_and_a_rerun_resumes(folder: Path):
    manifest = write(folder / "m.jsonl", [remove_line(k, k) for k in ("a", "b")] + [remove_line("c", "a")])
    token = CancelToken()
    with pytest.raises(Cancelled):
        run_batch(manifest, folder / "out", cancel=token, on_progress=lambda e: token.cancel())
    assert [(r["id"], r["status"]) for r in read_results(folder / "out")] == [("a", "ok")]
    resumed = run_batch(manifest, folder / "out")
    assert (resumed.ok, resumed.skipped) == (2, 1)


def test_output_folder_rules(folder: Path):
    """Resume only into a batch folder of the same manifest; --force replaces only a folder this tool wrote."""
    one = write(folder / "one.jsonl", [remove_line("a", "a")])
    other = write(folder / "other.jsonl", [remove_line("b", "b")])
    run_batch(one, folder / "out")
    with pytest.raises(OutputExistsError, match="batch of .*one.jsonl.*--force"):
        run_batch(other, folder / "out")
    replaced = run_batch(other, folder / "out", force=True)
    assert replaced.ok == 1 and [r["id"] for r in read_results(folder / "out")] == ["b"]
    assert not (folder / "out/outputs/a.png").exists()
    (folder / "mine").mkdir()
    (folder / "mine/notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not written by diffcompose"):
        run_batch(one, folder / "mine", force=True)
    assert (folder / "mine/notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="contains the input"):
        run_batch(one, folder / "photos" / "..", force=True)


def test_a_second_run_into_a_folder_being_written_is_refused(folder: Path):
    """While one run holds the folder (its lock), another run into it, resuming or --force, is refused."""
    from diffcompose.batch.runner import lock_folder

    manifest = write(folder / "m.jsonl", [remove_line("a", "a")])
    run_batch(manifest, folder / "out")
    fd = lock_folder(folder / "out")  # as a running batch holds it
    try:
        for force in (False, True):
            with pytest.raises(InputError, match="another batch is running"):
                run_batch(manifest, folder / "out", force=force)
        assert (folder / "out/outputs/a.png").is_file()
    finally:
        os.close(fd)
    assert run_batch(manifest, folder / "out").skipped == 1  # released: resumes


def run_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffcompose", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.slow
def test_cli_exit_codes_summary_and_no_torch_for_a_classical_batch(folder: Path):
    write(folder / "some.jsonl", [remove_line("a", "a"), remove_line("z", "zzz")])
    write(folder / "none.jsonl", [remove_line("z", "zzz")])
    probe = ("import sys\nfrom diffcompose.cli.main import main\nrc = main(sys.argv[1:])\n"
             "assert 'torch' not in sys.modules and 'accelerate' not in sys.modules, 'torch imported'\n"
             "raise SystemExit(rc)")
    some = subprocess.run([sys.executable, "-c", probe, "batch", "some.jsonl", "-o", "out"], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    assert some.returncode == 0, some.stderr
    assert some.stderr.strip().splitlines()[-1] == \
        f"diffcompose: 1 ok, 1 failed, 0 skipped; results in {folder / 'out/results.jsonl'}"
    assert some.stdout.strip() == str(folder / "out")
    none = run_cli(["batch", "none.jsonl", "-o", "out2"], folder)
    assert none.returncode == 1 and none.stderr.strip().splitlines()[-1].startswith("diffcompose: error: all 1 item")
    limited = run_cli(["batch", "some.jsonl", "-o", "out4", "--max-pixels", "5000"], folder)  # 128x96 photos
    assert limited.returncode == 1 and "max-pixels" in read_results(folder / "out4")[0]["error"]
    missing = run_cli(["batch", "nope.jsonl", "-o", "out3"], folder)
    assert missing.returncode == 2 and missing.stderr.strip() == "diffcompose: error: manifest not found: nope.jsonl"
    assert not (folder / "out3").exists()


def test_ctrl_c_exits_130_keeping_the_finished_items(folder: Path):
    """SIGINT mid-run: exit 130 with one line saying the finished items are kept; they are, outputs included
    (resuming after a cancel: test_cancel_keeps_the_finished_items_and_a_rerun_resumes)."""
    import signal
    import time

    # Two small items, then 400 of about 0.1 s each (Telea over a 300x300 hole of a 512x512 photo: many short C
    # calls, never one long one), so the run lasts far longer than the wait for the first two lines on any
    # machine, and the signal is answered within one item on a loaded one.
    big = np.tile(np.asarray(Image.open(folder / "photos/a.png")), (6, 4, 1))[:512, :512]
    Image.fromarray(big).save(folder / "photos/c.png")
    hole = np.zeros((512, 512), np.uint8)
    hole[100:400, 120:420] = 255
    Image.fromarray(hole).save(folder / "masks/c.png")
    n = 402
    write(folder / "m.jsonl", [remove_line("i000", "a"), remove_line("i001", "b")]
          + [remove_line(f"i{k:03d}", "c") for k in range(2, n)])
    # A test run started in the background (``cmd &``) has SIGINT ignored, and children inherit that: give the
    # batch the default disposition, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen([sys.executable, "-m", "diffcompose", "batch", "m.jsonl", "-o", "out"], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    results = folder / "out/results.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None and \
            (not results.exists() or results.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("diffcompose: error: cancelled; ") and "resume" in err
    done = read_results(folder / "out")
    assert 2 <= len(done) < n and all(r["status"] == "ok" and (folder / "out" / r["outputs"][0]).is_file()
                                        for r in done)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_the_items_and_merge_the_same_results_as_one(folder: Path):
    """``accelerate launch`` with two CPU processes (gloo): each rank runs a disjoint share, all ranks together
    every item, and the merged results and outputs equal a single-process run's."""
    pytest.importorskip("accelerate")
    torch = pytest.importorskip("torch")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch without gloo")
    lines = [remove_line(f"i{k}", "ab"[k % 2], method=("telea", "ns")[k % 3 == 0]) for k in range(5)]
    lines.insert(2, remove_line("bad", "zzz"))
    manifest = write(folder / "m.jsonl", lines)
    run_batch(manifest, folder / "single")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "diffcompose", "batch", "m.jsonl", "-o", "multi"]
    proc = subprocess.run(cmd, env=env, cwd=folder, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("ok, 1 failed") == 1  # one summary: the main process's
    multi = folder / "multi"
    shares = [[r["id"] for r in map(json.loads, rank_file(multi, k).read_text().splitlines())] for k in (0, 1)]
    ids = ["i0", "i1", "bad", "i2", "i3", "i4"]
    assert shares[0] and shares[1] and not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(ids)
    one, two = read_results(folder / "single"), read_results(multi)
    assert [r["id"] for r in two] == [r["id"] for r in one] == ids
    assert [r["status"] for r in two] == [r["status"] for r in one]
    assert {r["id"]: r["rank"] for r in two} == {i: k for k in (0, 1) for i in shares[k]}
    for a, b in zip(one, two):
        assert a["outputs"] == b["outputs"]
        for o in a["outputs"]:
            assert (folder / "single" / o).read_bytes() == (multi / o).read_bytes()
