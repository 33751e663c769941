"""Hardening of inputs and outputs: concurrent writers, FIFOs, SIGTERM, numeric arrays, contradictory arguments."""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffcompose
from diffcompose.cli.main import main
from diffcompose.errors import InputError, OutputExistsError
from diffcompose.inputs import load_image, load_mask
from diffcompose.inputs.images import save_image


def _image(seed: int = 0, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A smooth RGB test picture with some texture (uint8, (H, W, 3))."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // max(h + w - 2, 1)], -1)
    img = img + rng.integers(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask(size: tuple[int, int] = (64, 64)) -> np.ndarray:
    m = np.zeros(size, bool)
    m[20:40, 24:44] = True
    return m


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("diffcompose: error: ")


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    p = {"image": tmp_path / "img.png", "mask": tmp_path / "mask.png"}
    Image.fromarray(_image()).save(p["image"])
    Image.fromarray(_mask().astype(np.uint8) * 255).save(p["mask"])
    return p


# ----------------------------------------------------------------------------- 1. concurrent writers

def _appear_during_save(monkeypatch, out: Path, other: bytes) -> None:
    """Another writer creates ``out`` after save_image's existence check, while it encodes."""
    real_save = Image.Image.save

    def save(self, fp, *a, **kw):
        real_save(self, fp, *a, **kw)
        if not out.exists():
            out.write_bytes(other)

    monkeypatch.setattr(Image.Image, "save", save)


def test_save_image_does_not_replace_a_file_that_appeared_meanwhile(monkeypatch, tmp_path) -> None:
    out = tmp_path / "out.png"
    _appear_during_save(monkeypatch, out, b"the other run's output")
    with pytest.raises(OutputExistsError, match=r"^output .*out\.png exists; pass --force to overwrite it$"):
        save_image(_image(), out)
    assert out.read_bytes() == b"the other run's output"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("err", [errno.EPERM, errno.EXDEV, errno.ENOTSUP])
def test_save_image_claims_the_name_without_hard_links(monkeypatch, tmp_path, err) -> None:
    def no_link(src, dst, *a, **kw):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "link", no_link)
    ok = tmp_path / "ok.png"  # the fallback still writes a complete image
    save_image(_image(1), ok)
    np.testing.assert_array_equal(load_image(ok), _image(1))
    out = tmp_path / "out.png"  # and still refuses a name taken meanwhile
    _appear_during_save(monkeypatch, out, b"other")
    with pytest.raises(OutputExistsError):
        save_image(_image(), out)
    assert out.read_bytes() == b"other"
    assert _temps(tmp_path) == []


def test_concurrent_writers_of_one_new_output_exactly_one_wins(monkeypatch, tmp_path) -> None:
    n = 6
    out = tmp_path / "out.png"
    barrier = threading.Barrier(n, timeout=20)
    real_save = Image.Image.save

    def save(self, fp, *a, **kw):  # every writer has passed the existence check and encoded before any publishes
        real_save(self, fp, *a, **kw)
        barrier.wait()

    monkeypatch.setattr(Image.Image, "save", save)
    results: dict[int, BaseException | None] = {}

    def write(i: int) -> None:
        try:
            save_image(_image(i), out)
            results[i] = None
        except BaseException as exc:  # noqa: BLE001 - recorded and checked below
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [i for i, r in results.items() if r is None]
    assert len(results) == n and len(winners) == 1, results
    assert all(isinstance(r, OutputExistsError) for i, r in results.items() if i not in winners)
    np.testing.assert_array_equal(load_image(out), _image(winners[0]))
    assert _temps(tmp_path) == []


def test_force_still_overwrites(tmp_path) -> None:
    out = tmp_path / "out.png"
    save_image(_image(1), out)
    save_image(_image(2), out, force=True)
    np.testing.assert_array_equal(load_image(out), _image(2))
    with pytest.raises(OutputExistsError):
        save_image(_image(3), out)
    np.testing.assert_array_equal(load_image(out), _image(2))


# ----------------------------------------------------------------------------- 2. FIFOs and SIGTERM

def _fifo(tmp_path: Path, name: str) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _returns_within(fn, seconds: float, fifo: Path) -> BaseException | None:
    """Run ``fn`` in a thread; its exception (None if it returned) once it ends within ``seconds``."""
    box: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            fn()
            box["exc"] = None
        except BaseException as exc:  # noqa: BLE001
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():  # unblock the reader stuck in open(), then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail(f"reading the FIFO {fifo.name} blocked for more than {seconds} s")
    return box["exc"]


def test_fifo_as_image_is_refused_at_once(tmp_path) -> None:
    fifo = _fifo(tmp_path, "pipe.png")
    exc = _returns_within(lambda: load_image(fifo), 5, fifo)
    assert isinstance(exc, InputError) and str(exc) == f"image is not a regular file: {fifo}"


def test_fifo_as_mask_is_refused_at_once(tmp_path) -> None:
    fifo = _fifo(tmp_path, "pipe_mask.png")
    exc = _returns_within(lambda: load_mask(fifo), 5, fifo)
    assert isinstance(exc, InputError) and str(exc) == f"mask is not a regular file: {fifo}"


def test_fifo_via_cli_is_one_line(capsys, pair, tmp_path) -> None:
    fifo = _fifo(tmp_path, "pipe_mask.png")
    argv = ["remove", str(pair["image"]), "--mask", str(fifo), "-o", str(tmp_path / "o.png"), "--engine", "classical"]
    codes: dict[str, int] = {}
    exc = _returns_within(lambda: codes.setdefault("code", main(argv)), 5, fifo)  # also: main off the main thread
    err = capsys.readouterr().err
    assert exc is None and codes["code"] == 2
    assert _one_line(err) and "mask is not a regular file" in err


def test_symlink_to_a_regular_file_still_reads(pair, tmp_path) -> None:
    link = tmp_path / "link.png"
    link.symlink_to(pair["image"])
    np.testing.assert_array_equal(load_image(link), _image())


def test_sigterm_during_the_write_cleans_up_and_exits_130(monkeypatch, capsys, pair, tmp_path) -> None:
    out = tmp_path / "out.png"
    seen: dict[str, object] = {}
    real_save = Image.Image.save

    def save(self, fp, *a, **kw):
        real_save(self, fp, *a, **kw)
        seen["temps"] = _temps(tmp_path)  # the temporary file exists now
        os.kill(os.getpid(), signal.SIGTERM)

    def sentinel(signum, frame):  # stands for the caller's handler; without the fix it swallows the signal
        seen["sentinel"] = signum

    monkeypatch.setattr(Image.Image, "save", save)
    previous = signal.signal(signal.SIGTERM, sentinel)
    try:
        code = main(["remove", str(pair["image"]), "--mask", str(pair["mask"]), "-o", str(out),
                     "--engine", "classical"])
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert seen["temps"] and "sentinel" not in seen
    assert code == 130 and err == "diffcompose: cancelled; nothing was written\n"
    assert not out.exists() and _temps(tmp_path) == []
    assert restored is sentinel


def test_sigterm_handler_is_restored_after_errors_too(capsys, tmp_path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert main(["remove", str(tmp_path / "missing.png"), "--mask", str(tmp_path / "m.png"),
                 "-o", str(tmp_path / "o.png")]) == 2
    assert signal.getsignal(signal.SIGTERM) is before
    capsys.readouterr()


# ----------------------------------------------------------------------------- 3. numeric arrays (Python API)

def test_float_image_in_0_255_is_refused_with_the_fix_in_the_message() -> None:
    with pytest.raises(InputError) as info:
        load_image(_image().astype(np.float64))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("float image arrays must be in 0..1, got values in ")
    assert msg.endswith("; divide by 255 or pass uint8")
    with pytest.raises(InputError, match=r"got values in 0\.\.255; divide by 255"):
        load_image(np.array([[[0.0, 255.0, 3.0]]]))
    with pytest.raises(InputError, match=r"float image arrays must be in 0\.\.1, got values in -0\.5\.\.1"):
        load_image(np.array([[[-0.5, 1.0, 0.0]]], np.float32))


def test_float_image_in_0_1_reads_with_a_tiny_tolerance() -> None:
    a = np.array([[[0.0, 0.5, 1.0 + 1e-7]], [[-1e-7, 1.0, 0.25]]])
    np.testing.assert_array_equal(load_image(a), [[[0, 128, 255]], [[0, 255, 64]]])
    with pytest.raises(InputError, match="NaN or infinite"):
        load_image(np.array([[[np.nan, 0.0, 0.0]]]))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_other_integer_images_are_0_255(dtype) -> None:
    img = _image()
    if dtype == np.int8:
        img = img // 2  # int8 holds 0..127
    np.testing.assert_array_equal(load_image(img.astype(dtype)), img)


def test_integer_image_outside_0_255_is_refused_naming_dtype_and_range() -> None:
    with pytest.raises(InputError, match=r"^image array of dtype int64 has values in -3\.\.1000; .*0\.\.255"):
        load_image(np.array([[[-3, 1000, 5]]], np.int64))
    with pytest.raises(InputError, match=r"dtype uint32 has values in 0\.\.65535"):
        load_image(np.array([[[0, 65535, 5]]], np.uint32))


def test_uint16_and_bool_images_keep_their_scale() -> None:
    np.testing.assert_array_equal(load_image(np.array([[[0, 257, 65535]]], np.uint16)), [[[0, 1, 255]]])
    np.testing.assert_array_equal(load_image(np.array([[True, False]])), [[[255] * 3, [0] * 3]])


def test_sixteen_and_thirty_two_bit_files_keep_their_scale(tmp_path) -> None:
    g16 = np.array([[0, 257 * 100, 65535]], np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(g16).save(p)
    assert Image.open(p).mode.startswith("I")
    np.testing.assert_array_equal(load_image(p)[..., 0], [[0, 100, 255]])
    i32 = Image.fromarray(np.array([[0, 257 * 100, 65535]], np.int32), "I")  # 32-bit mode: 0..65535 as before
    np.testing.assert_array_equal(load_image(i32)[..., 0], [[0, 100, 255]])
    m16 = tmp_path / "m16.png"
    Image.fromarray(_mask().astype(np.uint16) * 65535).save(m16)
    np.testing.assert_array_equal(load_mask(m16), _mask())


@pytest.mark.parametrize("encode", ["int64-0-255", "int32-0-255", "uint8-0-1", "int64-0-1", "uint16-0-65535",
                                    "uint16-0-1", "float32-0-1", "int16-rgb-0-255"])
def test_mask_arrays_by_dtype_equal_the_bool_mask(encode) -> None:
    m = _mask()
    if encode == "int64-0-255":
        a = m.astype(np.int64) * 255
    elif encode == "int32-0-255":
        a = m.astype(np.int32) * 255
    elif encode == "uint8-0-1":
        a = m.astype(np.uint8)
    elif encode == "int64-0-1":
        a = m.astype(np.int64)
    elif encode == "uint16-0-65535":
        a = m.astype(np.uint16) * 65535
    elif encode == "uint16-0-1":
        a = m.astype(np.uint16)
    elif encode == "float32-0-1":
        a = m.astype(np.float32)
    else:
        a = np.dstack([m.astype(np.int16) * 255] * 3)
    np.testing.assert_array_equal(load_mask(a), m)


def test_bad_mask_arrays_are_refused_in_one_line() -> None:
    m = _mask()
    with pytest.raises(InputError, match=r"^float mask arrays must be in 0\.\.1, got values in 0\.\.255; "
                                         r"divide by 255 or pass uint8$"):
        load_mask(m.astype(np.float64) * 255)
    with pytest.raises(InputError, match=r"^mask array of dtype int64 has values in 0\.\.300; "):
        load_mask(m.astype(np.int64) * 300)
    with pytest.raises(InputError, match="NaN or infinite"):
        load_mask(np.where(m, np.inf, 0.0))


def test_uint8_grey_mask_arrays_keep_the_0_255_scale() -> None:
    a = np.zeros((4, 4), np.uint8)
    a[0, 0], a[1, 1], a[2, 2] = 1, 100, 200  # not all 0/1: 0..255, so only 200 is at least half
    np.testing.assert_array_equal(np.argwhere(load_mask(a)), [[2, 2]])


def test_api_remove_reads_integer_arrays_like_uint8_and_refuses_float_0_255() -> None:
    img, m = _image(), _mask()
    want = np.asarray(diffcompose.remove(img, m, engine="classical"))
    got = np.asarray(diffcompose.remove(img.astype(np.int64), m.astype(np.int64) * 255, engine="classical"))
    np.testing.assert_array_equal(got, want)
    got = np.asarray(diffcompose.remove(img.astype(np.float64) / 255.0, m.astype(np.uint8), engine="classical"))
    np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError, match="float image arrays must be in 0..1"):
        diffcompose.remove(img.astype(np.float64), m, engine="classical")
    with pytest.raises(InputError, match="float mask arrays must be in 0..1"):
        diffcompose.remove(img, m * 255.0, engine="classical")


def _corrupt_png(tmp_path: Path) -> Path:
    p = tmp_path / "corrupt.png"
    Image.fromarray(_image()).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def test_lazily_opened_corrupt_pil_images_are_one_line(tmp_path) -> None:
    p = _corrupt_png(tmp_path)
    with pytest.raises(InputError, match=r"^cannot read image .*corrupt\.png: not an image file or an "
                                         r"unsupported/corrupt format$"):
        load_image(Image.open(p))
    with pytest.raises(InputError, match=r"^cannot read mask .*corrupt\.png: "):
        load_mask(Image.open(p))
    with pytest.raises(InputError, match="cannot read image"):
        diffcompose.remove(Image.open(p), _mask(), engine="classical")


# ----------------------------------------------------------------------------- 4. contradictory harmonize arguments

def test_harmonize_refuses_mask_and_object_together(tmp_path) -> None:
    img, m, obj = _image(), _mask(), _image(3, (16, 16))
    with pytest.raises(InputError, match=r"^give either --mask \(a composite\) or --object with --box, not both$"):
        diffcompose.harmonize(img, mask=m, obj=obj, box="10,10,30,30", engine="classical")
    with pytest.raises(InputError, match=r"^--box needs --object "):
        diffcompose.harmonize(img, mask=m, box="10,10,30,30", engine="classical")
    with pytest.raises(InputError, match=r"^--object-mask needs --object "):
        diffcompose.harmonize(img, mask=m, object_mask=np.ones((16, 16), bool), engine="classical")
    with pytest.raises(InputError, match=r"^--box and --object-mask need --object "):
        diffcompose.harmonize(img, mask=m, box="10,10,30,30", object_mask=np.ones((16, 16), bool),
                              engine="classical")
    diffcompose.harmonize(img, mask=m, engine="classical")  # each way alone still works
    diffcompose.harmonize(img, obj=obj, box="10,10,30,30", engine="classical")


def test_harmonize_contradictions_via_cli_are_one_line(capsys, pair, tmp_path) -> None:
    obj = tmp_path / "obj.png"
    Image.fromarray(_image(3, (16, 16))).save(obj)
    out = tmp_path / "h.png"
    base = ["harmonize", str(pair["image"]), "--engine", "classical", "-o", str(out)]
    for extra, fragment in (
        (["--mask", str(pair["mask"]), "--object", str(obj), "--box", "10,10,30,30"], "not both"),
        (["--mask", str(pair["mask"]), "--box", "10,10,30,30"], "--box needs --object"),
        (["--mask", str(pair["mask"]), "--object-mask", str(pair["mask"])], "--object-mask needs --object"),
    ):
        code = main(base + extra)
        err = capsys.readouterr().err
        assert code == 2 and _one_line(err) and fragment in err, (extra, err)
        assert not out.exists()


# ----------------------------------------------------------------------------- 5. fully transparent objects

def _transparent_object(alpha: int = 0) -> np.ndarray:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 90
    rgba[..., 3] = alpha
    return rgba


def test_fully_transparent_object_is_refused_via_api() -> None:
    bg = _image()
    for obj in (_transparent_object(), Image.fromarray(_transparent_object(), "RGBA"),
                _transparent_object().astype(np.float32) / 255.0):
        with pytest.raises(InputError, match=r"^object is fully transparent: nothing to paste$"):
            diffcompose.paste(bg, obj, "10,10,30,30")
        with pytest.raises(InputError, match=r"^object is fully transparent: nothing to paste$"):
            diffcompose.harmonize(bg, obj=obj, box="10,10,30,30", engine="classical")
    opaque = np.asarray(diffcompose.paste(bg, _transparent_object(255), "10,10,26,26"))  # opaque: the whole object
    assert (opaque[10:26, 10:26] == 90).all()


def test_fully_transparent_object_is_refused_via_cli(capsys, pair, tmp_path) -> None:
    obj = tmp_path / "ghost.png"
    Image.fromarray(_transparent_object(), "RGBA").save(obj)
    for cmd in (["paste", str(pair["image"]), "--object", str(obj), "--box", "10,10,30,30"],
                ["harmonize", str(pair["image"]), "--object", str(obj), "--box", "10,10,30,30",
                 "--engine", "classical"]):
        out = tmp_path / f"{cmd[0]}.png"
        code = main(cmd + ["-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err == "diffcompose: error: object is fully transparent: nothing to paste\n"
        assert not out.exists()


def test_object_alpha_of_an_integer_array_follows_the_image_rule() -> None:
    """An int64 RGBA object in 0..255 whose alpha cuts out a disk pastes that disk only."""
    rgba = _transparent_object()
    yy, xx = np.mgrid[:16, :16]
    rgba[..., 3] = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 <= 36) * 255
    bg = np.zeros((64, 64, 3), np.uint8)
    want = np.asarray(diffcompose.paste(bg, rgba, "0,0,16,16", blend="none"))
    got = np.asarray(diffcompose.paste(bg, rgba.astype(np.int64), "0,0,16,16", blend="none"))
    np.testing.assert_array_equal(got, want)
    assert (want[6:10, 6:10] == 90).all() and (want[0, 0] == 0).all() and (want[16:] == 0).all()
