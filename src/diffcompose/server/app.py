"""The HTTP API and the page: an ASGI app made by :func:`create_app` (``diffcompose serve`` runs it on uvicorn).

Why FastAPI (on Starlette): the API must be documented by an OpenAPI document served at
``/docs``; FastAPI writes it (and serves Swagger UI), and we only add what it cannot see (the
multipart body and one schema per engine options dataclass, from :mod:`diffcompose.server.schema`).
Everything else is plain Starlette underneath (streaming responses for SSE, static files,
pure ASGI middleware for the token and the body limit), so the extra dependency buys the
documentation without a second framework. Its import costs about 0.3 s, paid only by ``serve``.

The HTTP contract (auth, errors, the request JSON, events, jobs, security) is written once,
in ``static/api-guide.md``; the page in ``static/`` is its first client, so change both
together. ``/docs`` shows that guide with the reference made from the OpenAPI document
(:mod:`diffcompose.server.reference`), and ``docs/http-api.md`` in the repository is
generated from the same two sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import threading
import weakref
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.staticfiles import StaticFiles

from diffcompose import __version__
from diffcompose.errors import (
    Cancelled, DiffComposeError, InputError, MissingExtraError, WeightsMissingError, http_field, http_message,
)
from diffcompose.methods.manager import EngineManager
from diffcompose.methods.registry import get_engine_info
from diffcompose.server import schema
from diffcompose.server.connections import SECURITY_HEADERS
from diffcompose.server.jobs import (
    FINISHED, JobManager, JobNotFound, QueueFull, TooBig, Unavailable, result_metadata,
)
from diffcompose.server.reference import render_reference
from diffcompose.server.settings import Settings, is_loopback
from diffcompose.server.schema import file_fields
from diffcompose.server.uploads import BodyLimit, UploadTooLarge, parse_request
from diffcompose.server.validate import build_submission

log = logging.getLogger(__name__)

STATIC = Path(str(resources.files("diffcompose.server"))) / "static"
#: Seconds of silence after which an SSE stream sends a keep-alive comment (it waits on the
#: job's events, it does not poll).
SSE_PING = 15.0
MAX_FORM_PARTS = 32
#: Requests decoding their uploads at once: each decode briefly holds the compressed bytes, the
#: decoded image and its array copies, so a burst of uploads just under --max-pixels must not
#: decode all together (the memory budget counts a job only once it is decoded).
DECODE_SLOTS = 2

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")



class BodyTimeout(InputError):
    """The client paused longer than ``--body-timeout`` while sending its body (HTTP 408)."""


class ReadTimeout:
    """ASGI middleware: a request body that stalls for ``seconds`` between two chunks ends in 408.

    (Headers are timed by the connection itself, :mod:`diffcompose.server.connections`.) Only
    reads of the body are timed: once it is complete, ``receive`` is the plain one again, since
    a streaming response waits on it for the client's disconnect for as long as it streams.
    """

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def timed() -> dict:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except asyncio.TimeoutError:
                raise BodyTimeout(f"the request body stalled for more than {self.seconds:g} s "
                                  "(--body-timeout); send it without pauses") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed, send)


class Gate:
    """ASGI middleware in front of everything: the token, the Host header, the Origin of writes.

    * With a token, every request must carry it (``Authorization: Bearer`` or ``?token=``).
    * Without one (loopback), the ``Host`` header must name this machine (``allowed_hosts``, by
      default localhost and any loopback IP literal):
      a web page on another site that points its own domain at 127.0.0.1 (DNS rebinding)
      gets 403 instead of the API.
    * A write whose ``Origin`` header names another site than ``Host``, or is ``null`` (a form
      another site posts to the local server) gets 403 before anything runs.
    * Every HTTP response, its refusals included, gets :data:`SECURITY_HEADERS`.
    """

    def __init__(self, app: Any, token: str | None, allowed_hosts: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts if allowed_hosts is not None else (() if token else LOOPBACK_NAMES)
        # the default names: any loopback address too (--host 127.0.0.2 is this machine; an IP
        # literal cannot be re-pointed by DNS, so rebinding protection is kept)
        self.any_loopback = allowed_hosts is None and not token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            send = _with_security_headers(send)
        headers = {k: v for k, v in scope.get("headers") or []}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            status, message = refusal
            body = json.dumps({"error": message, "field": None}).encode()
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), *extra]})
            await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: dict, headers: dict) -> tuple[int, str] | None:
        host = headers.get(b"host", b"").decode("latin-1")
        name = _hostname(host)
        if (self.allowed_hosts and name not in self.allowed_hosts
                and not (self.any_loopback and _is_loopback_ip(name))):
            return 403, (f"host {host!r} is not allowed: this server answers to {', '.join(self.allowed_hosts)} "
                         "only (serve others with --host and a --token)")
        origin = headers.get(b"origin")
        if origin is not None and scope.get("method", "GET") not in ("GET", "HEAD", "OPTIONS"):
            # "null" is refused too: it is the Origin of a sandboxed iframe, which any site can make
            netloc = origin.decode("latin-1").split("://", 1)[-1]
            if netloc != host:
                return 403, f"cross-origin request from {origin.decode('latin-1')!r} refused"
        if self.token and not self._has_token(scope, headers):
            return 401, ("missing or wrong access token: add ?token=TOKEN to the URL or send "
                         "'Authorization: Bearer TOKEN'")
        return None

    def _has_token(self, scope: dict, headers: dict) -> bool:
        want = self.token.encode()  # type: ignore[union-attr]
        value = headers.get(b"authorization", b"")
        if value[:7].lower() == b"bearer " and secrets.compare_digest(value[7:].strip(), want):
            return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(secrets.compare_digest(t.encode("utf-8", "replace"), want) for t in query.get("token", []))


def _with_security_headers(send: Any) -> Any:
    async def send_with_headers(message: dict) -> None:
        if message["type"] == "http.response.start":
            have = {k.lower() for k, _ in message.get("headers") or []}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in have]
            message = {**message, "headers": [*(message.get("headers") or []), *extra]}
        await send(message)

    return send_with_headers


def _is_loopback_ip(name: str) -> bool:
    """An IP literal of this machine (127.0.0.0/8, ::1); names other than ``localhost`` are not trusted."""
    return name != "localhost" and is_loopback(name)


def _hostname(host: str) -> str:
    """``127.0.0.1:7860`` -> ``127.0.0.1``; ``[::1]:7860`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _error(status: int, message: str, headers: dict[str, str] | None = None, field: str | None = None
           ) -> JSONResponse:
    """Every error body: its one line, and the request field or upload that caused it (or null)."""
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _status_of(kind: type[DiffComposeError]) -> int:
    if issubclass(kind, UploadTooLarge):
        return 413
    if issubclass(kind, BodyTimeout):
        return 408
    if issubclass(kind, (WeightsMissingError, MissingExtraError)):
        return 503
    if issubclass(kind, Cancelled):
        return 409
    return 400


def create_app(settings: Settings | None = None, *, engines: EngineManager | None = None,
               jobs: JobManager | None = None) -> FastAPI:
    """The ASGI app for ``settings`` (checked); ``engines``/``jobs`` may be passed in (tests)."""
    settings = (settings or Settings()).check()
    engines = engines or EngineManager(settings.memory_budget)
    jobs = jobs or JobManager(engines, workers=settings.workers, queue_size=settings.queue_size,
                              result_ttl=settings.result_ttl, max_finished=settings.max_results,
                              preview_interval=settings.preview_interval,
                              memory_budget=settings.job_memory_budget, allow_downloads=settings.allow_downloads)
    decode_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per event loop (uvicorn has one)
    streams = StreamCount(settings.max_streams)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        jobs.start()  # again, if an earlier lifespan stopped it
        yield
        await run_in_threadpool(jobs.shutdown)  # running jobs are cancelled, the results folder removed

    app = FastAPI(title="diffcompose", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Object-level image editing over HTTP: the guide below, then every endpoint "
                              "and schema.")
    app.state.settings, app.state.engines, app.state.jobs = settings, engines, jobs

    # ------------------------------------------------------------------ errors: one JSON line each

    @app.exception_handler(DiffComposeError)
    async def _user_error(request: Request, exc: DiffComposeError) -> JSONResponse:
        # a stalled body is never read to its end: the connection cannot carry another request
        closing = {"Connection": "close"} if isinstance(exc, BodyTimeout) else None
        return _error(_status_of(type(exc)), http_message(exc), closing, http_field(exc))

    @app.exception_handler(JobNotFound)
    async def _not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        return _error(429, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(TooBig)
    async def _too_big(request: Request, exc: TooBig) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}".strip(": "), field=where or None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])

    # ------------------------------------------------------------------ page, docs

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        index = STATIC / "index.html"
        if not index.is_file():
            return _error(404, "the page is not installed (diffcompose/server/static/index.html is missing)")
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    def with_token(request: Request, path: str) -> str:
        token = request.query_params.get("token")
        return path + (f"?token={quote(token, safe='')}" if settings.token and token else "")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        page = render_reference(app.openapi(), swagger_href=with_token(request, "/docs/swagger"),
                                openapi_href=with_token(request, "/openapi.json"))
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/docs/swagger", include_in_schema=False)
    async def swagger(request: Request) -> Response:
        return get_swagger_ui_html(openapi_url=with_token(request, "/openapi.json"), title="diffcompose API")

    # ------------------------------------------------------------------ catalogue

    @app.get("/api/health", summary="version and device")
    async def health() -> dict:
        # async, and no waiting request holds a pool thread (see run), so it is answered at once; the
        # engine list alone goes to a thread: the manager's lock is held while an engine module imports
        loaded = await run_in_threadpool(engines.loaded)
        return {"version": __version__, "device": settings.device or "auto", **jobs.counts(),
                "memory_budget": jobs.memory_budget, "streams": streams.open,
                "torch_loaded": "torch" in sys.modules, "engines_loaded": [e.name for e in loaded]}

    @app.get("/api/tasks", summary="tasks, their inputs and engines")
    def tasks() -> list:
        return schema.tasks()

    engines_cache: list = []
    engines_lock = threading.Lock()  # sync endpoints run on a thread pool: fill the cache once

    @app.get("/api/engines", summary="engines, their models and their options per task (from the registry)")
    def engine_list() -> list:
        with engines_lock:
            if not engines_cache:
                engines_cache.extend(schema.engines())
        # the models are looked up again each time: a model downloaded since is offered at once
        return [{**e, "models": schema.engine_models(get_engine_info(e["name"]), settings.model_dir)}
                for e in engines_cache]

    # ------------------------------------------------------------------ jobs

    async def read_submission(request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise InputError("send multipart/form-data: image files and a 'request' field holding JSON")
        try:
            form = await request.form(max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS)
        except InputError:
            raise  # the body limit, raised while reading
        except MultiPartException as exc:
            raise InputError(f"bad multipart body: {exc.message}") from None
        except (ValueError, KeyError, AssertionError) as exc:  # a body python-multipart cannot parse
            raise InputError(f"bad multipart body: {exc}") from None
        try:
            files: dict[str, bytes] = {}
            text: str | None = None
            for key, value in form.multi_items():
                if key in files or (key == "request" and text is not None):
                    raise InputError(f"field '{key}' is given twice")
                if key == "request":
                    if isinstance(value, UploadFile):
                        text = (await value.read()).decode("utf-8", "replace")
                    else:
                        text = value
                elif key in file_fields():
                    if not isinstance(value, UploadFile):
                        raise InputError(f"'{key}' must be an uploaded image file, not a text field")
                    files[key] = await value.read()
                else:
                    raise InputError(f"unknown form field '{key}'; fields: request, {', '.join(file_fields())}")
            req = parse_request(text)
        finally:
            await form.close()
        async with decode_slots.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(DECODE_SLOTS)):
            sub = await run_in_threadpool(build_submission, req, files, max_pixels=settings.max_pixels,
                                          model_dir=settings.model_dir, device=settings.device, dtype=settings.dtype)
        return sub

    @app.post("/api/jobs", status_code=202, summary="submit a job (multipart: images + 'request' JSON)",
              openapi_extra={"requestBody": _multipart_body()}, responses=_ERRORS)
    async def submit(request: Request) -> JSONResponse:
        sub = await read_submission(request)
        rec = jobs.submit(sub)
        return JSONResponse({"id": rec.id, "status": rec.status}, status_code=202)

    @app.post("/api/run", summary="run a job and wait for its PNG (quick engines)",
              openapi_extra={"requestBody": _multipart_body()},
              responses={200: {"content": {"image/png": {}}}, **_ERRORS})
    async def run(request: Request) -> Response:
        sub = await read_submission(request)
        rec = jobs.submit(sub, held=True)  # not swept while this request reads it
        try:
            await jobs.wait_async(rec)
            if rec.status == "cancelled":
                return _error(409, f"job {rec.id} was cancelled")
            if rec.status != "done":
                return _error(_job_error_status(rec.error_type), rec.error or rec.status, field=rec.error_field)
            return Response(rec.results[0].read_bytes(), media_type="image/png", headers=_result_headers(rec))
        finally:
            if rec.status in FINISHED:
                jobs.discard(rec.id)
            else:  # the request went away first: nobody reads it now, so it expires like any other job
                rec.held = False

    @app.get("/api/jobs/{job_id}", summary="job status", responses=_ERRORS)
    def job_status(job_id: str) -> dict:
        return jobs.get(job_id).public()

    @app.post("/api/jobs/{job_id}/cancel", summary="cancel a job (within one step)", responses=_ERRORS)
    def cancel(job_id: str) -> dict:
        rec = jobs.cancel(job_id)
        return {"id": rec.id, "status": rec.status}

    @app.get("/api/jobs/{job_id}/preview", summary="latest preview PNG",
             responses={200: {"content": {"image/png": {}}}, **_ERRORS})
    def preview(job_id: str) -> Response:
        rec = jobs.get(job_id)
        if rec.preview_png is None:
            return _error(404, f"job {job_id} has no preview (yet)")
        return Response(rec.preview_png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/jobs/{job_id}/result", summary="a result PNG (seed, engine, task in headers and PNG text)",
             responses={200: {"content": {"image/png": {}}}, **_ERRORS})
    def result(job_id: str, index: int = 0) -> Response:
        rec = jobs.get(job_id)
        if rec.status != "done":
            why = f": {rec.error}" if rec.error else ""
            return _error(409, f"job {job_id} is {rec.status}, not done{why}")
        if not 0 <= index < len(rec.results):
            n = len(rec.results)
            return _error(404, f"job {job_id} has {n} result(s); index must be 0..{n - 1}")
        try:
            data = rec.results[index].read_bytes()
        except FileNotFoundError:
            return _error(404, f"job {job_id} has expired")
        return Response(data, media_type="image/png", headers=_result_headers(rec))

    @app.get("/api/jobs/{job_id}/events", summary="progress as Server-Sent Events",
             responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS})
    async def events(job_id: str) -> StreamingResponse:
        rec = jobs.get(job_id)
        if streams.open >= streams.limit:
            return _error(503, f"too many open progress streams ({streams.limit}, --max-streams); "
                               f"poll GET /api/jobs/{job_id} instead, or retry later")
        return CountedStream(streams, _event_stream(rec), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    original_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = original_openapi()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schema.openapi_components())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # the last added runs first: the gate before anything is read, then the body limit
    app.add_middleware(ReadTimeout, seconds=settings.body_timeout)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(Gate, token=settings.token, allowed_hosts=settings.allowed_hosts)
    return app


def _job_error_status(kind: type[Exception] | None) -> int:
    if kind is not None and issubclass(kind, DiffComposeError):
        return _status_of(kind)
    return 500


def _result_headers(rec: Any) -> dict[str, str]:
    meta = result_metadata(rec.task, rec.engine, rec.seed)
    headers = {"X-Diffcompose-" + k.split(":", 1)[1].capitalize(): v for k, v in meta.items()}
    headers["X-Diffcompose-Results"] = str(len(rec.results))
    headers["Content-Disposition"] = f'inline; filename="{rec.task}-{rec.engine}-seed{rec.seed}.png"'
    headers["Cache-Control"] = "no-store"
    return headers


def _sse(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class StreamCount:
    """Open progress streams (one event loop: no lock needed) against ``--max-streams``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


class CountedStream(StreamingResponse):
    """A streaming response counted in ``count`` from its start to its end, however it ends."""

    def __init__(self, count: StreamCount, content: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.count = count
        count.open += 1  # counted from the endpoint on, so a burst cannot overshoot the cap

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.count.open -= 1


async def _event_stream(rec: Any) -> Any:
    """Current state first (a ``state`` event, the last progress, the last preview, the end if ended), then
    every new event (each status change is a ``state`` event) until the end.

    It sleeps on the job's watch event between events (no polling); a client that goes away
    ends it through the response's disconnect listener, and the job goes on.
    """
    async with rec.watch() as changed:
        seen = rec.seq
        yield _sse("state", rec.state())
        if rec.last_progress is not None:
            yield _sse("progress", rec.last_progress)
        if rec.preview_png is not None:
            yield _sse("preview", {"step": rec.preview_step, "url": f"/api/jobs/{rec.id}/preview"})
        end = rec.terminal_event()
        if end is not None:
            yield _sse(*end)
            return
        while True:
            changed.clear()  # before reading: an event emitted after this line wakes the wait below
            for seq, name, data in rec.events_after(seen):
                seen = seq
                yield _sse(name, data)
                if name in FINISHED:
                    return
            try:
                await asyncio.wait_for(changed.wait(), SSE_PING)
            except asyncio.TimeoutError:
                yield b": keep-alive\n\n"


_ERROR_BODY = {"application/json": {"schema": {
    "type": "object", "required": ["error", "field"],
    "properties": {"error": {"type": "string", "description": "one line, in the request's own names"},
                   "field": {"anyOf": [{"type": "string"}, {"type": "null"}],
                             "description": "the request field or upload that caused it (mask, box, model, "
                                            "steps, ...), or null"}}}}}
_ERRORS: dict[int | str, dict] = {code: {"description": why, "content": _ERROR_BODY} for code, why in (
    (400, "bad input (the CLI's one-line message)"), (401, "missing or wrong token"), (404, "no such job"),
    (408, "the body stalled (--body-timeout)"), (409, "not done"), (413, "upload too large"),
    (429, "queue full or memory budget in use; see Retry-After"),
    (503, ("weights or packages missing, a model not cached without --allow-downloads, a job larger than "
           "the memory budget, too many progress streams")))}


def _multipart_body() -> dict:
    props: dict[str, Any] = {"request": {"type": "string", "contentMediaType": "application/json",
                                         "description": "JSON, see the JobRequest schema"}}
    for name in file_fields():
        props[name] = {"type": "string", "format": "binary"}
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["request"], "properties": props, "additionalProperties": False}}}}
