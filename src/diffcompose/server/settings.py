"""The server's settings (no FastAPI import: ``diffcompose serve --help`` reads the defaults here)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from diffcompose.errors import InputError
from diffcompose.inputs import DEFAULT_MAX_PIXELS

DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 50.0


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    """What ``create_app`` needs. ``token``: required on every request when set (``serve`` sets one
    whenever ``host`` is not loopback). ``max_upload_mb``: the whole request body, all files together.
    ``model_dir``: a request's model name, or the engine's default model when none is given,
    loads from ``model_dir/NAME`` (or ``model_dir/<last part of NAME>``) when that folder exists."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    device: str | None = None
    dtype: str | None = None
    model_dir: Path | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    workers: int = 2
    queue_size: int = 16
    result_ttl: float = 3600.0
    max_results: int = 256
    preview_interval: float = 1.0
    memory_budget: int | None = None
    #: Host names the ``Host`` header may carry (``None``: 127.0.0.1, localhost, ::1 without a
    #: token; anything with one). In-process test clients name theirs ("testserver").
    allowed_hosts: tuple[str, ...] | None = None

    def check(self) -> "Settings":
        if not is_loopback(self.host) and not self.token:
            raise InputError(f"--host {self.host} is not loopback: the server needs an access token (--token)")
        if self.token is not None and (len(self.token) < 8 or not self.token.isprintable() or " " in self.token):
            raise InputError("--token must be at least 8 printable characters without spaces")
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port must be 0..65535, got {self.port}")
        if not (self.max_upload_mb > 0 and self.max_upload_mb <= 1e6):
            raise InputError(f"--max-upload-mb must be > 0 and <= 1000000, got {self.max_upload_mb}")
        if not 1 <= self.workers <= 64:
            raise InputError(f"--workers must be 1..64, got {self.workers}")
        if not 1 <= self.queue_size <= 100000:
            raise InputError(f"--queue-size must be 1..100000, got {self.queue_size}")
        if self.max_pixels is not None and not 1 <= self.max_pixels <= 10**12:
            raise InputError(f"--max-pixels must be a whole number from 1 to {10**12}, got {self.max_pixels}")
        if not self.result_ttl > 0:
            raise InputError(f"result expiry must be positive, got {self.result_ttl}")
        if not 1 <= self.max_results <= 10**6:
            raise InputError(f"--max-results must be 1..1000000, got {self.max_results}")
        if self.model_dir is not None and not Path(self.model_dir).is_dir():
            raise InputError(f"--model-dir is not a folder: {self.model_dir}")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)
