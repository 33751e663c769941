"""The server's settings (no FastAPI import: ``diffcompose serve --help`` reads the defaults here)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from diffcompose.errors import InputError
from diffcompose.inputs import DEFAULT_MAX_PIXELS

DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 50.0
#: Seconds a client has to send a request line and its headers, and the longest pause while it
#: sends a body; past either, the connection is closed (slow or stalled clients hold a socket).
DEFAULT_HEADER_TIMEOUT, DEFAULT_BODY_TIMEOUT = 10.0, 30.0
#: Open connections at most (past it the oldest one still sending its headers is dropped, or the
#: new one if none is), and open progress streams at most (past it 503).
DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_STREAMS = 2048, 1024


def default_memory_budget() -> int:
    """What jobs may hold together without ``--memory-budget``: a quarter of this machine's memory,
    at least 2 GiB (a removal on a 36 MP photo is costed 1.15 GB)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not POSIX: assume 8 GiB
        physical = 8 * 2**30
    return max(2 * 2**30, physical // 4)


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
    ``memory_budget``: bytes the queued and running jobs may hold together (``None``: a quarter of
    the machine's memory, :func:`default_memory_budget`); when given it also bounds the loaded
    engines (least recently used unloaded above it). ``allow_downloads``: the server may fetch a
    model from the hub; otherwise a model name that is not in the local cache is refused at once.
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
    allow_downloads: bool = False
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_streams: int = DEFAULT_MAX_STREAMS
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
        for flag, value in (("--header-timeout", self.header_timeout), ("--body-timeout", self.body_timeout)):
            if not 0 < value <= 3600:
                raise InputError(f"{flag} must be more than 0 and at most 3600 seconds, got {value:.6g}")
        if not 1 <= self.max_connections <= 10**6:
            raise InputError(f"--max-connections must be 1..1000000, got {self.max_connections}")
        if not 1 <= self.max_streams <= 10**6:
            raise InputError(f"--max-streams must be 1..1000000, got {self.max_streams}")
        if self.memory_budget is not None and not 0 < self.memory_budget <= 2**62:
            raise InputError(f"--memory-budget must be positive, got {self.memory_budget}")
        if self.model_dir is not None and not Path(self.model_dir).is_dir():
            raise InputError(f"--model-dir is not a folder: {self.model_dir}")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def job_memory_budget(self) -> int:
        return self.memory_budget if self.memory_budget is not None else default_memory_budget()
