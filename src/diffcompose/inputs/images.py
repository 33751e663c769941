"""Images in, images out.

Internal form: ``numpy.ndarray`` of dtype ``uint8``, shape ``(H, W, 3)``, RGB.

Conversion rule for other modes (documented in the README):

* EXIF orientation is applied, so pixels are as a viewer shows them;
* grey (``1``, ``L``) is replicated to three channels;
* 16-bit and 32-bit integer images (``I;16``, ``I``, ``uint16`` arrays) are scaled from
  0..65535 to 0..255; float images are taken as 0..1;
* transparency (``RGBA``, ``LA``, ``P`` with a transparent index) is composited over
  **white**: a cut-out object then reads as the object on a plain background;
* anything else PIL can read (CMYK, YCbCr, ...) goes through ``Image.convert("RGB")``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from diffcompose.errors import InputError, OutputExistsError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

#: Largest image accepted by default (pixels). Larger ones are refused before decoding.
DEFAULT_MAX_PIXELS = 40_000_000

#: Output formats chosen by file extension.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                  ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def open_pil(source: str | os.PathLike, name: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a file as a fully decoded PIL image with EXIF orientation applied."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{name} not found: {path}")
    if path.is_dir():
        raise InputError(f"{name} is a directory, not an image file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before decoding
            try:
                im = Image.open(path)
                _check_pixels(im.size, name, max_pixels)
                im.load()
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {name} {path}: not an image file or an unsupported/corrupt format") from exc
    return ImageOps.exif_transpose(im)


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise InputError(f"{name} is empty ({w}x{h} pixels)")
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(
            f"{name} is {w}x{h} ({w * h / 1e6:.1f} MP), above the limit of {max_pixels / 1e6:.1f} MP; "
            "raise it with --max-pixels (max_pixels= in Python)"
        )


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(im))
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


def _array_to_rgb(arr: np.ndarray, name: str = "image") -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"{name} array has shape {a.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name} is empty ({a.shape[1]}x{a.shape[0]} pixels)")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f"{name} array contains NaN or infinite values")
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.integer):
        a = np.clip(np.rint(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    else:
        raise InputError(f"{name} array has unsupported dtype {a.dtype}")
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


def save_image(image: np.ndarray | Image.Image, path: str | os.PathLike, *, force: bool = False,
               protected: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Write an image atomically (temporary file + rename) in the format of its extension.

    ``protected`` lists input paths: they are never overwritten, even with ``force``.
    """
    out = Path(path)
    fmt = output_format(out)
    for p in protected:
        if Path(p).exists() and out.exists() and os.path.samefile(out, p):
            raise InputError(f"output {out} is one of the inputs; choose another output path")
    if out.exists() and not force:
        raise OutputExistsError(f"output {out} exists; pass --force to overwrite it")
    if not out.parent.exists():
        raise InputError(f"output folder does not exist: {out.parent}")
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    if fmt == "JPEG" and pil.mode not in ("RGB", "L"):
        pil = pil.convert("RGB")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            save_kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
            pil.save(fh, format=fmt, **save_kwargs)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out
