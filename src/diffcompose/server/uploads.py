"""What a client sends, made safe: uploaded images, the ``request`` JSON, model names.

* Bytes: the whole request body is bounded by :class:`BodyLimit` (an ASGI wrapper) before
  it is read: a ``Content-Length`` above the limit is refused at once, and a body that
  grows past it while streaming (chunked, or a lying header) stops being read there.
* Pixels: :func:`decode_image` reads only the header, checks width x height against
  ``max_pixels`` with the same check (and message) as :mod:`diffcompose.inputs`, and only
  then decodes. Pillow's own decompression-bomb refusal (at 2x its ``MAX_IMAGE_PIXELS``)
  is replaced by that check, as :func:`diffcompose.inputs.images.open_pil` does for files.
* Content: every upload is decoded as an image whatever its name or declared type, and only
  in the formats of :data:`UPLOAD_FORMATS` (PNG, JPEG, WebP, BMP, TIFF, GIF).
* Paths: the server never opens a path a client names. Model names (``model`` and the
  options that name weights) must be ``tiny``, a subfolder of ``--model-dir`` (resolved
  here, inside it) or a hub id; anything that looks like a path is refused.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from diffcompose.errors import InputError
from diffcompose.inputs.images import open_header

#: Formats an upload may be in. Pillow reads more, but some of those hand the bytes to outside
#: programs (EPS runs Ghostscript) or are rarely audited parsers: not for bytes from the network.
UPLOAD_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF")


def _formats() -> list[str]:
    """:data:`UPLOAD_FORMATS` this Pillow can open (its plugins registered: ``Image.init``)."""
    Image.init()
    return [f for f in UPLOAD_FORMATS if f in Image.OPEN]


class UploadTooLarge(InputError):
    """The request body is above ``--max-upload-mb`` (HTTP 413)."""


def too_large_message(limit: int) -> str:
    return f"upload is larger than the limit of {limit / 2**20:.4g} MB; raise it with --max-upload-mb"


class BodyLimit:
    """ASGI middleware: refuse a request body above ``max_bytes`` before reading all of it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await _send_error(send, 413, too_large_message(self.max_bytes))
                return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise UploadTooLarge(too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited, send)


async def _send_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message, "field": None}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def decode_image(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """An uploaded file as a decoded PIL image (EXIF orientation applied), pixels checked first."""
    if not data:
        raise InputError(f"{name} upload is empty")
    try:
        im = open_header(io.BytesIO(data), name, max_pixels, formats=_formats())
        im.load()
        return ImageOps.exif_transpose(im)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {name} upload: not an image file or an unsupported/corrupt format "
                         f"(accepted: {', '.join(f for f in UPLOAD_FORMATS if f != 'MPO')})") from exc


# ---------------------------------------------------------------------------- request JSON

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def in_model_dir(name: str, model_dir: Path | None) -> Path | None:
    """``model_dir/NAME``, else ``model_dir/<last part of NAME>``, when that folder exists inside ``model_dir``."""
    if model_dir is None:
        return None
    root = model_dir.resolve()
    for rel in dict.fromkeys((name, name.rsplit("/", 1)[-1])):
        candidate = (root / rel).resolve()
        if candidate.is_dir() and candidate.is_relative_to(root) and candidate != root:
            return candidate
    return None


def resolve_model_name(name: str, model_dir: Path | None, what: str = "model") -> str:
    """``name`` as the loader should see it: a folder inside ``model_dir``, ``tiny`` or a hub id.

    ``NAME`` is looked up with :func:`in_model_dir`; if found the loader gets that absolute
    path. Otherwise the name must read as a hub id (``org/name`` or ``name``: letters,
    digits, ``._-``) that is not also a path relative to the server's working directory
    (the loader would open it as one).
    """
    if not isinstance(name, str) or not _MODEL_NAME.match(name) or ".." in name:
        raise InputError(f"{what} must be 'tiny', a folder name of the server's --model-dir or a hub id "
                         f"(org/name), got {name!r}")
    if name == "tiny":
        return name
    found = in_model_dir(name, model_dir)
    if found is not None:
        return str(found)
    if Path(name).exists():
        raise InputError(f"{what} {name!r} is not a folder of the server's --model-dir")
    return name


#: Keys of the ``request`` JSON besides the tasks' own inputs (boxes, points, text: see the task specs).
REQUEST_KEYS = ("task", "engine", "seed", "model", "options", "paste_back", "margin")


def parse_request(text: str | bytes | None) -> dict[str, Any]:
    """The ``request`` field: a JSON object with a ``task`` (other keys are checked by their users)."""
    if text is None:
        raise InputError("missing the 'request' field: a JSON object such as {\"task\": \"remove\"}")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"the 'request' field is not valid JSON: {getattr(exc, 'msg', exc)}") from None
    except InputError:  # NaN, Infinity (InputError is a ValueError too)
        raise
    except ValueError:  # Python refuses to read an integer literal of more than sys.get_int_max_str_digits()
        raise InputError(f"the 'request' field has a number too long to read (over "
                         f"{sys.get_int_max_str_digits()} digits)") from None
    if not isinstance(value, dict):
        raise InputError("the 'request' field must be a JSON object such as {\"task\": \"remove\"}")
    if not isinstance(value.get("task"), str):
        raise InputError("the 'request' JSON needs \"task\": one of the names of /api/tasks")
    return value


def _refuse_constant(token: str) -> Any:
    raise InputError(f"the 'request' field has {token}: numbers must be finite")


def parse_box(value: Any) -> tuple[int, int, int, int] | None:
    """``[x0, y0, x1, y1]`` of whole numbers (the task checks it against the image)."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise InputError(f"box must be [x0, y0, x1, y1] in whole pixels, got {json.dumps(value)[:80]}")
    return tuple(value)  # type: ignore[return-value]
