"""The ``insert`` task: its command, its Python API and its classical engine.

Errors end in one line and the documented exit code (2 bad input, 3 missing weights);
the classical engine puts the reference object (its mask or alpha cut-out) into the region
and changes nothing beyond the region's seam, on real photos (``../shared/testdata``, AnyDoor's
own examples: skipped when absent) and on scikit-image's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

import diffcompose as dc
from diffcompose.cli.main import main
from diffcompose.inputs import dilate_mask, load_image, load_mask
from diffcompose.methods.registry import engines_for
from diffcompose.methods.tasks import prepare
from diffcompose.regions import changed_region, default_margin

from conftest import TESTDATA

ANYDOOR_EXAMPLES = TESTDATA / "composition" / "AnyDoor" / "examples" / "TestDreamBooth"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a shared machine they make runs much slower."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A scene, a target mask, a reference photo and its object mask, as files."""
    scene, ref = data.astronaut()[:301, :377], data.coffee()
    h, w = scene.shape[:2]
    target = np.zeros((h, w), np.uint8)
    target[120:230, 40:190] = 255
    yy, xx = np.mgrid[:ref.shape[0], :ref.shape[1]]
    cup = ((xx - 300) / 230.0) ** 2 + ((yy - 200) / 150.0) ** 2 <= 1.0
    p = {"scene": tmp_path / "scene.png", "mask": tmp_path / "target.png", "ref": tmp_path / "cup.jpg",
         "ref_mask": tmp_path / "cup_mask.png"}
    Image.fromarray(scene).save(p["scene"])
    Image.fromarray(target).save(p["mask"])
    Image.fromarray(ref).save(p["ref"], quality=95)
    Image.fromarray(cup.astype(np.uint8) * 255).save(p["ref_mask"])
    return p


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _check_inserted(scene: np.ndarray, out: np.ndarray, region: np.ndarray) -> None:
    """Pixels beyond the region's seam are the scene's, bit for bit; the region got the object."""
    outside = ~changed_region(region, default_margin(scene.shape))
    assert out.shape == scene.shape
    assert np.array_equal(out[outside], scene[outside])
    changed = np.abs(out.astype(int) - scene.astype(int)).max(-1) > 8
    assert changed[region].mean() > 0.3, changed[region].mean()


# ----------------------------------------------------------------------------- classical, end to end

def test_classical_insert_end_to_end(capsys, files, tmp_path) -> None:
    out = tmp_path / "out.png"
    code, stdout, err = _run(capsys, ["insert", str(files["scene"]), "--mask", str(files["mask"]), "--reference",
                                      str(files["ref"]), "--reference-mask", str(files["ref_mask"]), "-o", str(out),
                                      "--engine", "classical"])
    assert code == 0, err
    assert stdout.strip() == str(out)
    _check_inserted(load_image(files["scene"]), load_image(out), load_mask(files["mask"]))


def test_classical_insert_on_anydoor_examples(capsys, tmp_path) -> None:
    """AnyDoor's own example: a bedroom scene with a target mask and an RGBA toy (its alpha is the cut-out)."""
    scene_path = ANYDOOR_EXAMPLES / "BG" / "000000047948_GT.png"
    if not scene_path.exists():
        pytest.skip("../shared/testdata is not present")
    mask_path = ANYDOOR_EXAMPLES / "BG" / "000000047948_mask.png"
    out = tmp_path / "toy.png"
    for blend in ("feather", "poisson"):
        code, _, err = _run(capsys, ["insert", str(scene_path), "--mask", str(mask_path), "--reference",
                                     str(ANYDOOR_EXAMPLES / "FG" / "00.png"), "-o", str(out), "--force",
                                     "--engine", "classical", "--blend", blend])
        assert code == 0, err
        _check_inserted(load_image(scene_path), load_image(out), load_mask(mask_path))


def test_classical_insert_places_the_cut_out_exactly() -> None:
    """Alpha as the object mask, the paste rule (fit with the aspect kept, centred), nothing else touched."""
    scene = np.full((60, 80, 3), 90, np.uint8)
    ref = np.zeros((40, 40, 4), np.uint8)
    ref[:, :20] = (250, 10, 10, 255)  # the object: the left half, opaque red
    ref[:, 20:] = (10, 250, 10, 0)  # transparent green: must not appear
    out = np.asarray(dc.insert(scene, reference=Image.fromarray(ref, "RGBA"), box=(20, 10, 60, 50),
                               engine="classical", blend="none", harmonize="none"))
    expected = scene.copy()
    expected[10:50, 30:50] = (250, 10, 10)  # 20x40 fitted into 40x40: scale 1, centred
    assert np.array_equal(out, expected)


def test_classical_insert_harmonizes_toward_the_scene() -> None:
    """Reinhard (full strength) moves the object's colours toward its surroundings."""
    scene = np.zeros((80, 80, 3), np.uint8)
    scene[..., 2] = 200
    scene[::2, :, 2] = 160  # some texture: a non-zero spread in the surroundings
    ref = np.full((30, 30, 3), (220, 220, 40), np.uint8)
    ref[::3] = (180, 180, 20)
    plain = np.asarray(dc.insert(scene, reference=ref, box=(25, 25, 55, 55), engine="classical", harmonize="none"))
    tuned = np.asarray(dc.insert(scene, reference=ref, box=(25, 25, 55, 55), engine="classical", strength=1.0))
    inside = (slice(30, 50), slice(30, 50))
    assert tuned[inside][..., 2].mean() > plain[inside][..., 2].mean() + 50
    assert tuned[inside][..., 0].mean() < plain[inside][..., 0].mean() - 50


def test_engine_object_insert_and_shape_mask() -> None:
    """``Engine.insert``; a shape mask limits the object to its shape (shape control)."""
    scene = data.astronaut()[:200, :240]
    shape = np.zeros(scene.shape[:2], bool)
    yy, xx = np.mgrid[:200, :240]
    shape[((xx - 120) / 40.0) ** 2 + ((yy - 100) / 30.0) ** 2 <= 1.0] = True
    ref = data.coffee()[100:300, 200:450]
    engine = dc.get_engine("classical")
    out = np.asarray(engine.insert(scene, reference=ref, box=(60, 50, 180, 150), shape_mask=shape, margin=0))
    assert not np.array_equal(out[shape], scene[shape])
    assert np.array_equal(out[~shape], scene[~shape])


# ----------------------------------------------------------------------------- pbe (tiny model) and batches

def test_pbe_insert_writes_a_batch(capsys, files, tmp_path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "out.png"
    code, stdout, err = _run(capsys, ["insert", str(files["scene"]), "--box", "40,120,190,230", "--reference",
                                      str(files["ref"]), "-o", str(out), "--engine", "pbe", "--model", "tiny",
                                      "--steps", "1", "--resolution", "64", "--num-images", "2", "--device", "cpu"])
    assert code == 0, err
    assert stdout.split() == [str(tmp_path / "out_0.png"), str(tmp_path / "out_1.png")]
    scene = load_image(files["scene"])
    region = np.zeros(scene.shape[:2], bool)
    region[120:230, 40:190] = True
    for p in (tmp_path / "out_0.png", tmp_path / "out_1.png"):
        res = load_image(p)
        outside = ~changed_region(region, default_margin(scene.shape))
        assert np.array_equal(res[outside], scene[outside])


def test_pbe_insert_is_paint_of_the_region() -> None:
    """The pbe engine of insert is its paint (same seed, same pixels): one implementation."""
    pytest.importorskip("torch")
    scene, ref = data.astronaut()[:97, :131], data.coffee()[:150, :200]
    mask = np.zeros(scene.shape[:2], bool)
    mask[30:70, 40:100] = True
    kw = dict(engine="pbe", model="tiny", device="cpu", steps=1, resolution=64, seed=4)
    a = np.asarray(dc.insert(scene, mask, ref, **kw))
    b = np.asarray(dc.paint(scene, mask, ref, **kw))
    assert np.array_equal(a, b)


def test_pbe_insert_with_a_shape_mask_paints_and_pastes_only_the_shape() -> None:
    """Shape control in pbe: the shape is painted; the rest of the region keeps the scene's own pixels."""
    pytest.importorskip("torch")
    scene, ref = data.astronaut()[:97, :131], data.coffee()[:150, :200]
    mask = np.zeros(scene.shape[:2], bool)
    mask[30:70, 40:100] = True
    shape = np.zeros_like(mask)
    shape[40:60, 55:85] = True
    kw = dict(engine="pbe", model="tiny", device="cpu", steps=1, resolution=64, seed=4, margin=0)
    out = np.asarray(dc.insert(scene, mask, ref, shape_mask=shape, **kw))
    # The tiny model works the window at 64 px: the shape comes back resampled, a pixel or two wider.
    around = ~dilate_mask(shape, 2)
    assert np.array_equal(out[around], scene[around])  # the rest of the region too: no VAE round trip
    assert not np.array_equal(out[shape], scene[shape])


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("case", ["no-reference", "mask-and-box", "no-region"])
def test_usage_errors_exit_2_in_one_line(capsys, files, tmp_path, case) -> None:
    out = tmp_path / "out.png"
    argv = {"no-reference": ["--mask", str(files["mask"])],
            "mask-and-box": ["--mask", str(files["mask"]), "--box", "1,1,20,20", "--reference", str(files["ref"])],
            "no-region": ["--reference", str(files["ref"])]}[case]
    with pytest.raises(SystemExit) as exc:
        main(["insert", str(files["scene"]), *argv, "-o", str(out), "--engine", "classical"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize(("flags", "words"), [
    (["--box", "0,0,500,40"], "outside"),
    (["--box", "30,30,30,60"], "degenerate"),
    (["--box", "1,2,3"], "4 numbers"),
    (["--box", "10,10,100,100", "--reference-mask", "SCENE_MASK"], "reference mask"),
    (["--box", "10,10,60,60", "--shape-mask", "SCENE_MASK"], "shape mask"),
    (["--box", "10,10,100,100", "--strength", "2"], "--strength"),
])
def test_bad_input_exits_2_in_one_line(capsys, files, tmp_path, flags, words) -> None:
    flags = [str(files["mask"]) if f == "SCENE_MASK" else f for f in flags]  # scene-sized: wrong for the reference
    out = tmp_path / "out.png"
    code, _, err = _run(capsys, ["insert", str(files["scene"]), "--reference", str(files["ref"]), *flags,
                                 "-o", str(out), "--engine", "classical"])
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_missing_weights_exit_3(capsys, files, tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = _run(capsys, ["insert", str(files["scene"]), "--mask", str(files["mask"]), "--reference",
                                 str(files["ref"]), "-o", str(tmp_path / "o.png"), "--engine", "pbe",
                                 "--model", str(tmp_path / "no-such-model")])
    assert code == 3 and err.count("\n") == 1, err


def test_anydoor_without_model_exits_3_pointing_to_convert(capsys, files, tmp_path, monkeypatch) -> None:
    """No AnyDoor weights are published in a loadable layout: without --model the one line says how to get them."""
    if "anydoor" not in engines_for("insert"):
        pytest.skip("the anydoor engine is not registered")
    pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = _run(capsys, ["insert", str(files["scene"]), "--mask", str(files["mask"]), "--reference",
                                 str(files["ref"]), "--reference-mask", str(files["ref_mask"]),
                                 "-o", str(tmp_path / "o.png"), "--engine", "anydoor"])
    assert code == 3 and err.count("\n") == 1 and "convert anydoor" in err, err
    assert not (tmp_path / "o.png").exists()


def test_existing_output_is_not_overwritten(capsys, files, tmp_path) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"keep")
    code, _, err = _run(capsys, ["insert", str(files["scene"]), "--mask", str(files["mask"]), "--reference",
                                 str(files["ref"]), "-o", str(out), "--engine", "classical"])
    assert code != 0 and "--force" in err and out.read_bytes() == b"keep"


def test_anydoor_needs_the_reference_mask(capsys, files, tmp_path) -> None:
    if "anydoor" not in engines_for("insert"):
        pytest.skip("the anydoor engine is not registered")
    pytest.importorskip("torch")
    code, _, err = _run(capsys, ["insert", str(files["scene"]), "--mask", str(files["mask"]), "--reference",
                                 str(files["ref"]), "-o", str(tmp_path / "o.png"), "--engine", "anydoor",
                                 "--model", "tiny", "--device", "cpu"])
    assert code == 2 and "reference" in err and err.count("\n") == 1, err


# ----------------------------------------------------------------------------- the task's inputs

def test_prepare_insert_region_reference_mask_and_shape() -> None:
    scene = np.zeros((50, 70, 3), np.uint8)
    ref = np.zeros((20, 30, 4), np.uint8)
    ref[5:15, 5:25, 3] = 255
    job = prepare("insert", {"image": scene, "box": "10,5,40,45", "reference": ref})
    assert job.output == "images" and job.region == (10, 5, 40, 45)
    assert job.paste_mask.sum() == 30 * 40 and job.paste_mask[5:45, 10:40].all()
    assert job.arrays["reference_mask"].sum() == 10 * 20  # the reference's own alpha
    opaque = prepare("insert", {"image": scene, "box": "10,5,40,45", "reference": ref[..., :3]})
    assert opaque.arrays["reference_mask"] is None  # no cut-out known: the engine decides (anydoor refuses)
    shape = np.zeros((50, 70), bool)
    shape[10:20, 12:30] = True
    region = np.zeros((50, 70), bool)
    region[5:45, 10:30] = True
    region[25:30, 30:40] = True  # irregular: the shape may use the region's whole box
    shape[26, 35] = True
    job = prepare("insert", {"image": scene, "mask": region, "reference": ref, "shape_mask": shape})
    assert np.array_equal(job.paste_mask, region | shape) and job.kinds["shape_mask"] == "mask"
