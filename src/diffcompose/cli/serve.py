"""``diffcompose serve``: the HTTP API and the page on uvicorn (see :mod:`diffcompose.server.app`).

Nothing heavy at import: FastAPI and uvicorn are imported when the command runs (so other
commands' ``--help`` never pay for them), torch and models when a job first needs them.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
from pathlib import Path

from diffcompose.inputs import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)
#: File descriptors kept back from the connection cap (logs, results, model files, the listener).
FD_RESERVE = 64


def run_serve(args: argparse.Namespace) -> None:
    from diffcompose.errors import MissingExtraError
    from diffcompose.methods.manager import parse_bytes
    from diffcompose.server.settings import Settings, is_loopback

    try:
        import uvicorn  # noqa: F401
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"diffcompose serve needs {exc.name}, which is not installed; install it with: "
                                "pip install 'diffcompose[server]'") from None
    token = args.token
    generated = False
    if token is None and not is_loopback(args.host):
        token, generated = secrets.token_urlsafe(24), True
    settings = Settings(host=args.host, port=args.port, token=token, device=args.device, dtype=args.dtype,
                        model_dir=args.model_dir.resolve() if args.model_dir else None, max_pixels=args.max_pixels,
                        max_upload_mb=args.max_upload_mb, workers=args.workers, queue_size=args.queue_size,
                        result_ttl=args.result_ttl, max_results=args.max_results,
                        memory_budget=parse_bytes(args.memory_budget) if args.memory_budget else None,
                        allow_downloads=args.allow_downloads, header_timeout=args.header_timeout,
                        body_timeout=args.body_timeout, max_connections=args.max_connections,
                        max_streams=args.max_streams).check()
    if not settings.allow_downloads:
        forbid_downloads()
    serve(settings, generated_token=generated)


def forbid_downloads() -> None:
    """No model is fetched from the hub by this process (``HF_HUB_OFFLINE=1``, read by huggingface_hub,
    diffusers and transformers; set on the library too if something imported it already)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered to what the open-files limit allows (raising the soft limit first):
    past the limit ``accept`` fails and no client at all is served."""
    try:
        import resource
    except ImportError:  # not POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        cap = max(1, soft - FD_RESERVE)
        log.warning("--max-connections %d lowered to %d: the open-files limit is %d", wanted, cap, soft)
        return cap
    return wanted


def shown_host(host: str) -> str:
    """The host part of the printed URL: a wildcard address (0.0.0.0, ::) is no address to open,
    so this machine's name stands for it; an IPv6 address gets its brackets."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname() or host
    return f"[{host}]" if ":" in host else host


def serve(settings: object, *, generated_token: bool = False) -> None:
    """Run ``settings`` on uvicorn until SIGINT/SIGTERM; print the URL once the socket listens."""
    import uvicorn

    from diffcompose.server import create_app

    # the socket first: a port in use must not leave the job manager's results folder behind
    sock = listen(settings.host, settings.port)  # type: ignore[attr-defined]
    try:
        app = create_app(settings)  # type: ignore[arg-type]
    except BaseException:
        sock.close()
        raise

    class Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            port = settings.port  # type: ignore[attr-defined]
            for server in getattr(self, "servers", []):
                for sock in server.sockets:
                    port = sock.getsockname()[1]
                    break
            url = f"http://{shown_host(settings.host)}:{port}/"  # type: ignore[attr-defined]
            if settings.token:  # type: ignore[attr-defined]
                url += f"?token={settings.token}"  # type: ignore[attr-defined]
            note = " (access token generated for this run)" if generated_token else ""
            print(f"diffcompose serving at {url}{note}", flush=True)

    from diffcompose.server.connections import guarded_protocol

    protocol = guarded_protocol(settings.header_timeout,  # type: ignore[attr-defined]
                                connection_cap(settings.max_connections))  # type: ignore[attr-defined]
    config = uvicorn.Config(app, host=settings.host, port=settings.port,  # type: ignore[attr-defined]
                            http=protocol, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM after uvicorn's own graceful shutdown: a normal end
        pass
    sys.stdout.flush()


def listen(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn, or one line saying why not (port in use, unknown address)."""
    from diffcompose.errors import InputError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def register(sub: argparse._SubParsersAction) -> None:
    from diffcompose.server.settings import (
        DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_STREAMS,
        DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT,
    )

    p = sub.add_parser("serve", help="the local web app and HTTP API",
                       description="Serve the page and the HTTP API (OpenAPI at /docs). Binds 127.0.0.1 by default; "
                                   "any other --host requires an access token on every request (generated and "
                                   "printed in the URL unless --token is given). Models load on first use.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0 = any free one)")
    p.add_argument("--token", default=None,
                   help="access token required on every request (default: none on loopback, generated otherwise)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu for diffusion engines (default: best)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="compute dtype")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="folder of local models: a request's model NAME (or org/NAME) loads from DIR/NAME when that "
                        "folder exists; clients can never name other paths")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels than this, before decoding (default: {DEFAULT_MAX_PIXELS})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest request body in MiB, all files together (default: {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--workers", type=int, default=2,
                   help="job worker threads: jobs on different engines run side by side (a quick mask while a "
                        "diffusion job runs); each engine still runs one job at a time (default: 2)")
    p.add_argument("--queue-size", type=int, default=16,
                   help="waiting jobs beyond which requests get 429 with Retry-After (default: 16)")
    p.add_argument("--result-ttl", type=float, default=3600.0,
                   help="seconds a finished job and its results are kept (default: 3600)")
    p.add_argument("--max-results", type=int, default=256,
                   help="finished jobs kept at most: past this, the oldest ended job and its results go before "
                        "their expiry, so the results folder stays bounded (default: 256)")
    p.add_argument("--memory-budget", default=None,
                   help="memory the queued and running jobs may hold together, e.g. 8GB: each job is costed "
                        "from its decoded images plus the engine's working copies before it is queued, and one "
                        "that does not fit gets 429 (503 if it alone is larger); when given, loaded engines are "
                        "also unloaded (least recently used first) above it (default: a quarter of this "
                        "machine's memory, at least 2 GiB, for jobs; engines not unloaded)")
    p.add_argument("--allow-downloads", action="store_true",
                   help="let requests fetch models from the Hugging Face hub (default: off, the process runs with "
                        "HF_HUB_OFFLINE=1 and a model not in the local cache or --model-dir ends its job at once)")
    p.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT,
                   help="seconds a client has to send its request line and headers, else 408 and the "
                        f"connection closes (default: {DEFAULT_HEADER_TIMEOUT:g})")
    p.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT,
                   help=f"longest pause while a client sends a body, else 408 (default: {DEFAULT_BODY_TIMEOUT:g})")
    p.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                   help="open connections at most; past it the oldest idle or half-sent one is closed "
                        f"(default: {DEFAULT_MAX_CONNECTIONS}, lowered to the open-files limit)")
    p.add_argument("--max-streams", type=int, default=DEFAULT_MAX_STREAMS,
                   help=f"open progress streams (SSE) at most; past it 503 (default: {DEFAULT_MAX_STREAMS})")
    p.set_defaults(func=run_serve)
