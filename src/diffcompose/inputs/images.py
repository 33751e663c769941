"""Images in, images out.

Internal form: ``numpy.ndarray`` of dtype ``uint8``, shape ``(H, W, 3)``, RGB.

Conversion rule for other modes (documented in docs/conventions.md):

* EXIF orientation is applied, so pixels are as a viewer shows them;
* grey (``1``, ``L``) is replicated to three channels;
* image files and PIL images: 16-bit and 32-bit integer modes (``I;16``, ``I``) are scaled
  from 0..65535 to 0..255; float images (``F``) are taken as 0..1 (clipped);
* numpy arrays (Python API), by dtype: ``uint8`` is 0..255; ``uint16`` is 0..65535 (16-bit
  images); every other integer dtype (``int8`` .. ``int64``, ``uint32``, ``uint64``) is
  0..255, and values outside 0..255 are refused; ``bool`` is 0/255; floating dtypes are
  0..1, and values outside [0, 1] (beyond a 1e-6 tolerance) are refused rather than
  clipped (a float array in 0..255 would otherwise come out nearly white); NaN and
  infinity are refused;
* transparency (``RGBA``, ``LA``, ``P`` with a transparent index) is composited over
  **white**: a cut-out object then reads as the object on a plain background;
* anything else PIL can read (CMYK, YCbCr, ...) goes through ``Image.convert("RGB")``.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from diffcompose.errors import InputError, OutputExistsError, cut, shown
from diffcompose.outdir import current_umask

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

#: Largest image accepted by default (pixels). Larger ones are refused before decoding.
DEFAULT_MAX_PIXELS = 40_000_000

#: Output formats chosen by file extension.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                  ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def open_pil(source: str | os.PathLike, name: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a file as a fully decoded PIL image with EXIF orientation applied."""
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError) as exc:  # missing, a name too long, a NUL in the name, ...
        why = "not found" if isinstance(exc, FileNotFoundError) else f"cannot be read ({_reason(exc)})"
        raise InputError(f"{name} {why}: {cut(path)}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{name} is a directory, not an image file: {cut(path)}")
    if not stat.S_ISREG(mode):  # a FIFO, socket or device would block or never end: regular files only
        raise InputError(f"{name} is not a regular file: {cut(path)}")
    try:
        im = open_header(path, name, max_pixels)
        im.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {name} {path}: not an image file or an unsupported/corrupt format") from exc
    return ImageOps.exif_transpose(im)


#: Pillow's decompression-bomb limit is process-global: it is lifted only under this lock.
_PIL_LIMIT = threading.Lock()


def open_header(fp: Any, name: str, max_pixels: int | None, formats: list[str] | None = None) -> Image.Image:
    """``Image.open`` (header only) with our pixel limit in place of Pillow's bomb check.

    Pillow refuses images above twice its global ``MAX_IMAGE_PIXELS`` at open time; ours is
    ``max_pixels`` (``--max-pixels``), checked here before anything is decoded. The global is
    lifted only for the header read and under one lock, so a thread opening an image at the
    same time (the server, a batch) never runs with Pillow's check switched off.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _PIL_LIMIT:  # open() reads the header only: held for microseconds
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(fp, formats=formats)
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    _check_pixels(im.size, name, max_pixels)
    return im


def load_pil(im: Image.Image, name: str = "image") -> None:
    """Decode a (possibly lazily opened) PIL image now, a corrupt file ending in one line."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        where = f" {im.filename}" if getattr(im, "filename", "") else ""
        raise InputError(f"cannot read {name}{where}: not an image file or an unsupported/corrupt format") from exc


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise InputError(f"{name} is empty ({w}x{h} pixels)")
    if max_pixels is not None and w * h > max_pixels:
        size_text, limit_text = pixel_counts(w * h, max_pixels)
        raise InputError(f"{name} is {w}x{h} ({size_text}), above the limit of {limit_text}; "
                         "raise it with --max-pixels (max_pixels= in Python)")


def pixel_counts(n: int, limit: int) -> tuple[str, str]:
    """An image's ``n`` pixels and the ``limit`` it is above, for a message: in megapixels
    (``41.2 MP``, ``40.0 MP``) where that tells them apart, else in pixels (a limit of 5000 is
    not "0.0 MP", and 1000001 is not "1.0 MP, above the limit of 1.0 MP")."""
    mp = f"{n / 1e6:.1f} MP", f"{limit / 1e6:.1f} MP"
    return mp if limit >= 100_000 and mp[0] != mp[1] else (f"{n} pixels", f"{limit} pixels")


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # files: 0..65535, whatever the integer width
        return _array_to_rgb(np.clip(np.asarray(im), 0, 65535).astype(np.uint16))
    if mode == "F":  # files: 0..1, clipped (NaN stays NaN and is refused)
        return _array_to_rgb(np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0))
    if mode == "1":
        im = im.convert("L")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("L",):
        g = np.asarray(im, dtype=np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"), dtype=np.uint8)
        return _over_white(np.repeat(la[..., :1], 3, axis=2), la[..., 1])
    if im.mode in ("RGBA", "RGBa", "PA"):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return _over_white(rgba[..., :3], rgba[..., 3])
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


#: Slack allowed outside 0..1 for float arrays (rounding in the caller's arithmetic).
FLOAT_TOLERANCE = 1e-6


def _value_range(a: np.ndarray) -> str:
    return f"{a.min():g}..{a.max():g}" if a.dtype.kind == "f" else f"{int(a.min())}..{int(a.max())}"


def array_to_uint8(a: np.ndarray, name: str = "image") -> np.ndarray:
    """A numpy array (Python API) to ``uint8`` 0..255 following the dtype rule of the module docstring."""
    kind, size = a.dtype.kind, a.dtype.itemsize
    if kind == "b":
        return a.astype(np.uint8) * 255
    if kind == "u" and size == 1:
        return a.astype(np.uint8)
    if kind == "u" and size == 2:  # 16-bit images: 0..65535
        return np.clip(np.rint(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    if kind in ("i", "u"):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InputError(f"{name} array of dtype {a.dtype} has values in {_value_range(a)}; integer arrays "
                             "other than uint16 must be in 0..255 (uint16: 0..65535)")
        return a.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(a).all():
            raise InputError(f"{name} array contains NaN or infinite values")
        if a.size and (a.min() < -FLOAT_TOLERANCE or a.max() > 1.0 + FLOAT_TOLERANCE):
            raise InputError(f"float {name} arrays must be in 0..1, got values in {_value_range(a)}; "
                             "divide by 255 or pass uint8")
        return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    raise InputError(f"{name} array has unsupported dtype {a.dtype}")


def _array_to_rgb(arr: np.ndarray, name: str = "image") -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"{name} array has shape {a.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name} is empty ({a.shape[1]}x{a.shape[0]} pixels)")
    a = array_to_uint8(a, name)
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:
        return _over_white(a[..., :3], a[..., 3])
    return np.ascontiguousarray(a)


def load_image(source: ImageLike, name: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a path, PIL image or array as an ``(H, W, 3)`` ``uint8`` RGB array (a copy)."""
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source, name)
        _check_pixels((rgb.shape[1], rgb.shape[0]), name, max_pixels)
        return rgb
    if isinstance(source, Image.Image):
        _check_pixels(source.size, name, max_pixels)
        load_pil(source, name)
        return _pil_to_rgb(source)
    if isinstance(source, (str, os.PathLike)):
        return _pil_to_rgb(open_pil(source, name, max_pixels))
    raise InputError(f"{name} must be a file path, a PIL image or a numpy array, not {type(source).__name__}")


def to_pil(image: np.ndarray) -> Image.Image:
    """Internal array (RGB ``uint8`` or ``bool``/``uint8`` mask) to a PIL image."""
    if image.dtype == np.bool_:
        return Image.fromarray(image.astype(np.uint8) * 255, mode="L")
    return Image.fromarray(image)


def output_format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        known = ", ".join(sorted(OUTPUT_FORMATS))
        raise InputError(f"cannot tell the output format from '{Path(path).name}': use one of {known}")
    return OUTPUT_FORMATS[ext]


def _publish_new(tmp: str, out: Path) -> None:
    """Give the finished ``tmp`` the name ``out`` only if no file has that name, atomically.

    Checking that ``out`` does not exist and then renaming would let a second writer that
    started at the same time replace the first one's output; a hard link (or, where the file
    system has none, an ``O_EXCL`` placeholder) claims the name in one step instead.
    """
    taken = f"output {out} exists; pass --force to overwrite it"
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise OutputExistsError(taken) from None
    except OSError:  # no hard links here (EPERM, EXDEV, ENOTSUP, ...): claim the name with O_EXCL
        try:
            fd = os.open(out, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            raise OutputExistsError(taken) from None
        os.close(fd)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.unlink(out)  # the placeholder (or our own output) is ours to remove
            raise
    else:
        os.unlink(tmp)


def save_image(image: np.ndarray | Image.Image, path: str | os.PathLike, *, force: bool = False,
               protected: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Write an image atomically (temporary file + rename) in the format of its extension.

    Without ``force`` the output name is claimed atomically: if another writer creates ``path``
    meanwhile, :class:`OutputExistsError` is raised and that file is left as it is.
    ``protected`` lists input paths: they are never overwritten, even with ``force``.
    A name the file system cannot take (too long, not encodable) is an :class:`InputError`.
    """
    out = Path(path)
    fmt = output_format(out)
    check_output_name(out)
    try:
        return _save(image, out, fmt, force, protected)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise InputError(f"output path is too long for the file system: {cut(out)}") from None


def _save(image: np.ndarray | Image.Image, out: Path, fmt: str, force: bool,
          protected: tuple[str | os.PathLike, ...]) -> Path:
    for p in protected:
        if Path(p).exists() and out.exists() and os.path.samefile(out, p):
            raise InputError(f"output {cut(out)} is one of the inputs; choose another output path")
    if out.exists() and not force:
        raise OutputExistsError(f"output {cut(out)} exists; pass --force to overwrite it")
    if not out.parent.exists():
        raise InputError(f"output folder does not exist: {cut(out.parent)}")
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    if fmt == "JPEG" and pil.mode not in ("RGB", "L"):
        pil = pil.convert("RGB")
    # The temporary name stays short (16 characters of the output's name are at most 64 bytes, so
    # a 255-byte output name still fits) and gets the permissions a plain new file would (mkstemp
    # makes it 0600).
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name[:16]}.", suffix=".tmp", dir=out.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            save_kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
            pil.save(fh, format=fmt, **save_kwargs)
        if force:
            os.replace(tmp, out)
        else:
            _publish_new(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


#: Longest path (bytes) and file name the file system takes where it does not say (Linux's).
PATH_MAX, NAME_MAX = 4096, 255


def check_output_name(out: Path) -> None:
    """Refuse in one line an output path the file system cannot take: a name (the file's or a
    folder's) over its length limit, a path over the path limit, text that is no file name (a
    lone surrogate, a NUL). Before any work, and again on writing: never an ``OSError``."""
    try:
        parts = [os.fsencode(part) for part in out.parts]
        whole = os.fsencode(os.path.abspath(out))
    except (UnicodeEncodeError, ValueError):
        raise InputError(f"output path {shown(str(out))} is not a valid file name (it holds a lone surrogate "
                         "or a NUL)") from None
    if b"\0" in whole:
        raise InputError(f"output path {shown(str(out))} is not a valid file name (it holds a NUL)")
    name_max = _limit(out.parent, "PC_NAME_MAX", NAME_MAX)
    if len(parts[-1]) > name_max:
        raise InputError(f"output file name is too long ({len(parts[-1])} bytes; at most {name_max})")
    longest = max(parts[:-1], key=len, default=b"")
    if len(longest) > name_max:
        raise InputError(f"a folder name in the output path is too long ({len(longest)} bytes; at most {name_max})")
    path_max = _limit(out.parent, "PC_PATH_MAX", PATH_MAX)
    if len(whole) >= path_max:
        raise InputError(f"output path is too long ({len(whole)} bytes; at most {path_max - 1})")


def _limit(folder: Path, name: str, default: int) -> int:
    """The file system's ``pathconf`` limit ``name`` where ``folder`` is (or would be), else ``default``."""
    try:
        return os.pathconf(folder if folder.is_dir() else "/", name)
    except (OSError, ValueError, AttributeError):
        return default


def _reason(exc: BaseException) -> str:
    """Why a path could not be used, in words (``File name too long``)."""
    return getattr(exc, "strerror", None) or str(exc).split(":")[0]
