"""``diffcompose evaluate``: a batch output folder in, metrics tables and a sortable HTML report out.

The batch folder is built by hand per the batch/evaluate contract (see
``diffcompose.batch.manifest``), from a real photo, so these tests pin evaluate alone.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcompose.cli.main import main
from diffcompose.evaluation import fmse, mae, psnr, ssim
from diffcompose.evaluation.evaluate import Models, evaluate_items, load_items

H, W = 96, 128


def _save(path: Path, arr: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture
def batch_dir(tmp_path) -> Path:
    """A batch output: two removals with ground truth, a paste with a reference, an inpaint, a failure."""
    from skimage import data

    photo = np.ascontiguousarray(data.coffee()[100:100 + H, 200:200 + W])
    src = tmp_path / "inputs"
    out = tmp_path / "batch"
    (out / "outputs").mkdir(parents=True)
    (out / ".diffcompose-model").write_text("written by diffcompose batch\n")
    mask = np.zeros((H, W), bool)
    mask[30:60, 40:90] = True
    good = photo.copy()
    good[mask] = np.clip(photo[mask].astype(int) + 6, 0, 255)
    flat = photo.copy()
    flat[mask] = photo[mask].mean(axis=0).astype(np.uint8)
    composite = photo.copy()
    composite[mask] = 0
    pasted = photo.copy()
    pasted[10:40, 10:50] = (200, 30, 30)
    ref = np.full((30, 40, 3), (200, 30, 30), np.uint8)
    paths = {"image": _save(src / "composite.png", composite), "photo": _save(src / "photo.png", photo),
             "mask": _save(src / "mask.png", mask.astype(np.uint8) * 255), "ref": _save(src / "ref.png", ref)}
    rows = [
        ("rm-good", "remove", good, {"image": paths["image"], "mask": paths["mask"]}, paths["photo"]),
        ("rm-flat", "remove", flat, {"image": paths["image"], "mask": paths["mask"]}, paths["photo"]),
        ("paste-1", "paste", pasted, {"background": paths["photo"], "obj": paths["ref"], "box": [10, 10, 50, 40]},
         None),
        ("inpaint-1", "inpaint", good, {"image": paths["image"], "mask": paths["mask"], "prompt": "a cup"}, None),
    ]
    lines = []
    for rank, (ident, task, img, inputs, truth) in enumerate(rows):
        _save(out / "outputs" / f"{ident}.png", img)
        lines.append({"id": ident, "task": task, "engine": "classical", "status": "ok",
                      "outputs": [f"outputs/{ident}.png"], "seed": 0, "seconds": 0.5 + rank, "error": None,
                      "inputs": inputs, "ground_truth": truth, "options": {}, "rank": 0})
    lines.append({"id": "broken", "task": "remove", "engine": "classical", "status": "error", "outputs": [],
                  "seed": 0, "seconds": 0.0, "error": "mask is empty (no white pixels)",
                  "inputs": {"image": paths["image"]}, "ground_truth": None, "options": {}, "rank": 0})
    # An earlier attempt of rm-flat that failed: the last line per id wins.
    text = json.dumps({**lines[1], "status": "error", "error": "old"}) + "\n"
    text += "".join(json.dumps(line) + "\n" for line in lines)
    (out / "results.jsonl").write_text(text)
    (out / "batch.json").write_text(json.dumps({"manifest": str(tmp_path / "m.jsonl"), "created": 0, "version": "x"}))
    return out


def _run(capsys, argv):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_evaluate_writes_tables_with_the_metrics_of_each_item(capsys, batch_dir) -> None:
    code, out, err = _run(capsys, ["evaluate", str(batch_dir), "--metrics", "psnr,ssim,fmse,fmae,bg-psnr"])
    assert code == 0, err
    report = Path(out.split()[-1])
    assert report == batch_dir / "evaluation" / "report.html" and report.is_file()
    doc = json.loads((batch_dir / "evaluation" / "metrics.json").read_text())
    items = {i["id"]: i for i in doc["items"]}
    assert list(items) == ["rm-good", "rm-flat", "paste-1", "inpaint-1", "broken"]
    photo = np.asarray(Image.open(batch_dir.parent / "inputs" / "photo.png"))
    mask = np.asarray(Image.open(batch_dir.parent / "inputs" / "mask.png")) > 127
    good = np.asarray(Image.open(batch_dir / "outputs" / "rm-good.png"))
    s = items["rm-good"]["scores"]
    assert s["psnr"] == pytest.approx(psnr(good, photo)) and s["ssim"] == pytest.approx(ssim(good, photo))
    assert s["fmse"] == pytest.approx(fmse(good, photo, mask)) and s["fmae"] == pytest.approx(mae(good, photo, mask))
    assert s["bg-psnr"] == "inf"  # outside the mask the removal kept the input exactly
    assert items["rm-flat"]["status"] == "ok" and items["rm-flat"]["scores"]["fmse"] > s["fmse"]
    # No ground truth: the pixel metrics are skipped with the reason; background preservation still runs.
    assert items["paste-1"]["skipped"]["psnr"] == "no ground truth" and "bg-psnr" in items["paste-1"]["scores"]
    assert items["broken"]["scores"] == {} and items["broken"]["skipped"]["psnr"] == "the item failed"
    agg = {(a["task"], a["engine"]): a for a in doc["aggregate"]}
    rm = agg[("remove", "classical")]
    assert rm["items"] == 3 and rm["ok"] == 2
    assert rm["fmse"] == pytest.approx((s["fmse"] + items["rm-flat"]["scores"]["fmse"]) / 2)
    rows = list(csv.DictReader(open(batch_dir / "evaluation" / "metrics.csv")))
    assert [r["id"] for r in rows] == list(items) and float(rows[1]["fmse"]) == pytest.approx(
        items["rm-flat"]["scores"]["fmse"])
    assert "no ground truth" in rows[2]["skipped"]


def test_report_has_one_row_per_item_with_thumbnail_files_and_sortable_headers(capsys, batch_dir, tmp_path) -> None:
    out_dir = tmp_path / "eval"
    code, out, err = _run(capsys, ["evaluate", str(batch_dir / "results.jsonl"), "-o", str(out_dir)])
    assert code == 0, err
    page = (out_dir / "report.html").read_text()
    body = page.split("<h2>Items")[1]
    assert body.count("<tr") == 1 + 5 and body.count("class=error") == 1
    assert "data:image" not in page and "addEventListener('click'" in page
    thumbs = re.findall(r'src="([^"]+)"', page)
    # rm-good: input, mask, output, ground truth; the paste shows its reference.
    assert len(thumbs) >= 4 * 2 + 3 and all((out_dir / t).is_file() for t in thumbs)
    assert all(t.startswith("report_files/") for t in thumbs)
    assert max(Image.open(out_dir / t).size[0] for t in thumbs) <= 160
    links = re.findall(r'<a href="([^"]+)">', page)  # full-size images by relative path
    assert links and all((out_dir / link).resolve().is_file() for link in links)


@pytest.mark.slow
def test_report_sorts_by_a_clicked_header_in_a_browser(capsys, batch_dir, tmp_path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no /usr/bin/chromium")
    code, _, err = _run(capsys, ["evaluate", str(batch_dir), "--metrics", "fmse"])
    assert code == 0, err
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page()
        page.goto((batch_dir / "evaluation" / "report.html").as_uri())
        table = page.locator("table").last
        table.locator("th", has_text="fmse").click()
        ids = table.locator("tbody tr td:first-child").all_inner_texts()
        table.locator("th", has_text="fmse").click()
        reverse = table.locator("tbody tr td:first-child").all_inner_texts()
        browser.close()
    # Only the removals have ground truth (so an fmse); items without a score stay last both ways.
    assert ids[:2] == ["rm-good", "rm-flat"] and reverse[:2] == ["rm-flat", "rm-good"]
    assert set(ids[2:]) == set(reverse[2:]) == {"paste-1", "inpaint-1", "broken"}


def test_an_existing_evaluation_is_replaced_only_with_force(capsys, batch_dir) -> None:
    assert _run(capsys, ["evaluate", str(batch_dir)])[0] == 0
    code, _, err = _run(capsys, ["evaluate", str(batch_dir)])
    assert code == 2 and err.count("\n") == 1 and "--force" in err
    assert _run(capsys, ["evaluate", str(batch_dir), "--force"])[0] == 0


def test_force_never_replaces_the_evaluated_folder_or_one_holding_its_inputs(capsys, batch_dir, tmp_path) -> None:
    """``--force`` replaces an earlier evaluation only: not the batch being scored (it is marked as ours too),
    nor a marked folder holding the items' inputs."""
    before = sorted(p.name for p in batch_dir.iterdir())
    code, _, err = _run(capsys, ["evaluate", str(batch_dir), "-o", str(batch_dir), "--force"])
    assert code == 2 and err.count("\n") == 1 and "being evaluated" in err, err
    (tmp_path / "inputs" / ".diffcompose-model").write_text("written by diffcompose batch\n")
    code, _, err = _run(capsys, ["evaluate", str(batch_dir), "-o", str(tmp_path / "inputs"), "--force"])
    assert code == 2 and err.count("\n") == 1 and "contains the input" in err, err
    assert sorted(p.name for p in batch_dir.iterdir()) == before
    assert (tmp_path / "inputs" / "photo.png").is_file()


@pytest.mark.parametrize("argv, code, fragment", [
    (["--metrics", "psnr,nope"], 2, "unknown metric 'nope'"),
    (["--metrics", "all", "--device", "gpu7"], 2, "--device must be"),
    (["--metrics", "lpips", "--vgg", "/nonexistent/vgg"], 3, "VGG16"),
    (["--metrics", "clip", "--clip-model", "nobody/no-clip"], 3, "CLIP model"),
    (["--metrics", "fid", "--model-dir", "/nonexistent"], 3, "FID Inception weights not found"),
])
def test_a_named_metric_that_cannot_run_fails_in_one_line(capsys, batch_dir, monkeypatch, argv, code, fragment):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent/hub")
    got, _, err = _run(capsys, ["evaluate", str(batch_dir), *argv])
    assert got == code and err.count("\n") == 1 and fragment in err, err
    assert not (batch_dir / "evaluation").exists()


def test_model_metrics_run_where_their_inputs_exist_and_missing_weights_are_skipped(capsys, batch_dir, tmp_path,
                                                                                   monkeypatch) -> None:
    from diffcompose.evaluation.tiny import write_tiny_metric_models

    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no FID weights anywhere
    models = write_tiny_metric_models(tmp_path / "models")
    code, _, err = _run(capsys, ["evaluate", str(batch_dir), "--metrics", "all", "--model-dir", str(models),
                                 "--device", "cpu"])
    assert code == 0, err
    items = {i["id"]: i for i in json.loads((batch_dir / "evaluation" / "metrics.json").read_text())["items"]}
    assert "lpips" in items["rm-good"]["scores"] and items["paste-1"]["skipped"]["lpips"] == "no ground truth"
    assert 0 <= items["inpaint-1"]["scores"]["clip"] <= 100 and items["rm-good"]["skipped"]["clip"] == "no prompt"
    for m in ("clip-i", "dino"):
        assert -1 <= items["paste-1"]["scores"][m] <= 1 and items["rm-good"]["skipped"][m] == "no reference image"
    assert items["rm-good"]["skipped"]["fid"].startswith("weights missing: FID Inception weights not found")


@pytest.mark.slow
def test_fid_of_a_group_is_the_frechet_distance_of_its_outputs_and_truths(batch_dir) -> None:
    """FID over the items of one task/engine; local FID over their mask crops (SmartBrush)."""
    from diffcompose.evaluation.fid import FIDInceptionV3, fid_from_features, inception_features

    import torch

    torch.manual_seed(2)
    net = FIDInceptionV3().eval()  # random weights: the test pins which images are compared, and how
    models = Models()
    models._cache["inception"] = net
    items = [i for i in load_items(batch_dir) if i["task"] == "remove"]
    _, agg = evaluate_items(items, ["fid", "local-fid"], models, explicit=True)
    photo = np.asarray(Image.open(batch_dir.parent / "inputs" / "photo.png"))
    outs = [np.asarray(Image.open(batch_dir / "outputs" / f"{i}.png")) for i in ("rm-good", "rm-flat")]
    with torch.no_grad():
        crop = (slice(30, 60), slice(40, 90))
        fake, lfake = inception_features(net, outs), inception_features(net, [o[crop] for o in outs])
        real, lreal = inception_features(net, [photo, photo[crop]])  # the truth of both items is the photo
        real, lreal = np.stack([real, real]), np.stack([lreal, lreal])
    assert agg[0]["fid_n"] == 2 and agg[0]["fid"] == pytest.approx(fid_from_features(fake, real), rel=1e-6)
    assert agg[0]["local-fid"] == pytest.approx(fid_from_features(lfake, lreal), rel=1e-6)


@pytest.mark.slow
def test_an_item_with_several_images_scores_their_mean_and_each_counts_in_fid_once(batch_dir, monkeypatch) -> None:
    from diffcompose.evaluation.fid import FIDInceptionV3, fid_from_features, inception_features

    import torch

    items = {i["id"]: i for i in load_items(batch_dir)}
    both = {**items["rm-good"], "id": "rm-both",
            "outputs": [str(batch_dir / "outputs" / "rm-good.png"), str(batch_dir / "outputs" / "rm-flat.png")]}
    torch.manual_seed(2)
    models = Models()
    models._cache["inception"] = FIDInceptionV3().eval()
    from diffcompose.evaluation import evaluate as ev

    loads = []
    load_item = ev._load_item
    monkeypatch.setattr(ev, "_load_item", lambda item: loads.append(item["id"]) or load_item(item))
    scored, agg = evaluate_items([both, items["rm-good"]], ["fmse", "psnr", "fid"], models, explicit=True)
    assert loads == ["rm-both", "rm-good"]  # each item's images are read once for all its metrics
    photo = np.asarray(Image.open(batch_dir.parent / "inputs" / "photo.png"))
    mask = np.asarray(Image.open(batch_dir.parent / "inputs" / "mask.png")) > 127
    outs = [np.asarray(Image.open(batch_dir / "outputs" / f"{i}.png")) for i in ("rm-good", "rm-flat")]
    assert scored[0]["scores"]["fmse"] == pytest.approx(np.mean([fmse(o, photo, mask) for o in outs]))
    assert scored[0]["scores"]["psnr"] == pytest.approx(np.mean([psnr(o, photo) for o in outs]))
    with torch.no_grad():
        fake = inception_features(models.get("inception"), outs + outs[:1])  # rm-both's two, then rm-good's one
        real = np.repeat(inception_features(models.get("inception"), [photo]), 2, axis=0)  # once per item
    assert agg[0]["fid_n"] == 3 and agg[0]["fid"] == pytest.approx(fid_from_features(fake, real), rel=1e-6)
    # Images of different sizes in one item are that item's error, not a crash.
    odd = batch_dir / "outputs" / "small.png"
    Image.fromarray(outs[0][:50, :60]).save(odd)
    bad = {**both, "outputs": both["outputs"][:1] + [str(odd)]}
    scored, _ = evaluate_items([bad], ["fmse"], models)
    assert "output 1 is 60x50" in scored[0]["skipped"]["fmse"]


def test_a_folder_of_outputs_with_its_manifest_is_evaluated_too(capsys, batch_dir, tmp_path) -> None:
    inputs = batch_dir.parent / "inputs"
    manifest = inputs / "manifest.jsonl"
    manifest.write_text("# two removals\n" + "".join(json.dumps(
        {"id": i, "task": "remove", "inputs": {"image": "composite.png", "mask": "mask.png"},
         "ground_truth": "photo.png"}) + "\n" for i in ("rm-good", "missing")))
    outputs = tmp_path / "just_outputs"
    outputs.mkdir()
    shutil.copy(batch_dir / "outputs" / "rm-good.png", outputs / "rm-good.png")
    code, _, err = _run(capsys, ["evaluate", str(outputs), "--manifest", str(manifest), "--metrics", "fpsnr",
                                 "-o", str(tmp_path / "ev")])
    assert code == 0, err
    items = {i["id"]: i for i in json.loads((tmp_path / "ev" / "metrics.json").read_text())["items"]}
    assert items["rm-good"]["scores"]["fpsnr"] > 30 and items["missing"]["error"] == "no output file"


def test_numbered_outputs_are_an_items_own_in_the_order_of_k(tmp_path) -> None:
    """With a manifest, ``<id>_<k>.png`` (k digits) are the item's images, sorted by k; a file that only
    starts like one (``p_1x.png``, ``q_1.5.png``) is never taken."""
    out = tmp_path / "outs"
    out.mkdir()
    for name in ("p_2.png", "p_10.png", "p_1x.png", "q_1.5.png"):
        (out / name).write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "task": "remove", "inputs": {"image": "a.png", "mask": "a.png"}})
                                + "\n" for i in ("p", "q")))
    items = {i["id"]: i for i in load_items(out, manifest)}
    assert [Path(o).name for o in items["p"]["outputs"]] == ["p_2.png", "p_10.png"]
    assert items["q"]["outputs"] == [] and items["q"]["error"] == "no output file"


def test_pixel_metrics_never_import_torch(batch_dir, tmp_path) -> None:
    """A classical batch's evaluation stays light: torch loads only for a model metric."""
    import subprocess
    import sys

    code = ("import sys; from diffcompose.cli.main import main; "
            f"rc = main(['-q', 'evaluate', {str(batch_dir)!r}, '-o', {str(tmp_path / 'ev')!r}]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stderr
