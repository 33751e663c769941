"""The HTTP API in-process (FastAPI's TestClient): every endpoint, every error class, limits, token,
queue, cancellation, expiry. Messages are compared with what the Python API raises for the same
input, so "the same one-line message the CLI prints" is checked, not assumed.

A test engine (``server-test-gate``) whose steps wait on an event makes queue and cancel tests
deterministic; one test cancels the real FreeCompose engine with its tiny random model.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import sys
import threading
import time
import types
import zlib
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

import diffcompose as dc  # noqa: E402
from diffcompose.errors import InputError, http_message  # noqa: E402
from diffcompose.methods.engine import Engine  # noqa: E402
from diffcompose.methods.manager import EngineManager  # noqa: E402
from diffcompose.methods.options import check_range, flag, option  # noqa: E402
from diffcompose.methods.registry import (  # noqa: E402
    NO_DEFAULT_MODEL, EngineInfo, engines_for, get_engine_info, register, unregister,
)
from diffcompose.methods.tasks import TASK_SPECS  # noqa: E402
from diffcompose.server import Settings, create_app  # noqa: E402
from diffcompose.server.jobs import JobManager  # noqa: E402

TOKEN = "s3cret-token-for-tests"


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[100:196, 150:278])  # 128x96, a real photo
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[30:60, 40:80] = 255
    return {"image": img, "mask": mask}


def multipart(inputs: dict[str, np.ndarray], **request: Any) -> dict[str, Any]:
    files = {k: (f"{k}.png", png(v), "image/png") for k, v in inputs.items()}
    return {"files": files, "data": {"request": json.dumps(request)}}


class Server:
    """A TestClient on an app whose job manager the test can reach (and whose clock it can move)."""

    def __init__(self, **settings: Any) -> None:
        self.now = 1000.0
        clock = settings.pop("clock", None)
        s = Settings(**settings)
        self.jobs = JobManager(EngineManager(), workers=s.workers, queue_size=s.queue_size,
                               result_ttl=s.result_ttl, max_finished=s.max_results, preview_interval=s.preview_interval,
                               clock=clock or time.time)
        self.app = create_app(s, jobs=self.jobs)
        self.client = TestClient(self.app, base_url="http://127.0.0.1:7860")

    def wait(self, job_id: str, timeout: float = 60.0, until: tuple = ("done", "error", "cancelled")) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.client.get(f"/api/jobs/{job_id}").json()
            if state["status"] in until:
                return state
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} still {state}")


@pytest.fixture
def server() -> Any:
    made: list[Server] = []

    def make(**settings: Any) -> Server:
        made.append(Server(**settings))
        return made[-1]

    yield make
    for s in made:
        s.jobs.shutdown()


# --------------------------------------------------------------------------- a gated test engine

GATE_MODULE = "diffcompose_server_test_engines"
GATE = "server-test-gate"


@dataclass(frozen=True)
class GateOptions:
    steps: int = option(3, "steps, each waiting for the test's gate")
    hold_at_end: bool = option(False, "after the last step, wait for the test's end gate")

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 100000)


class GateEngine(Engine):
    """Fills the mask grey step by step; each step waits for ``GateEngine.gate`` (set = free running)."""

    name = GATE
    gate = threading.Event()
    started = threading.Event()
    end_gate = threading.Event()
    at_end = threading.Event()

    def _remove(self, *, image: np.ndarray, mask: np.ndarray, options: GateOptions, ctx: Any) -> np.ndarray:
        progress = ctx.progress("remove", options.steps)
        out = image.copy()
        out[mask] = 128
        for _ in range(options.steps):
            GateEngine.started.set()
            GateEngine.gate.wait(5.0)
            time.sleep(0.01)
            progress.step(preview=lambda o=out: o)
        if options.hold_at_end:  # after the last step, before the result is returned
            GateEngine.at_end.set()
            GateEngine.end_gate.wait(5.0)
        return out


@pytest.fixture
def gate_engine(monkeypatch: pytest.MonkeyPatch) -> Any:
    module = types.ModuleType(GATE_MODULE)
    module.GateEngine = GateEngine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, GATE_MODULE, module)
    register(EngineInfo(GATE, f"{GATE_MODULE}:GateEngine", tasks={"remove": GateOptions}, summary="test gate"))
    GateEngine.gate.clear()
    GateEngine.started.clear()
    GateEngine.end_gate.clear()
    GateEngine.at_end.clear()
    yield GateEngine
    GateEngine.gate.set()  # let any worker still inside a step finish
    GateEngine.end_gate.set()
    unregister(GATE)


# --------------------------------------------------------------------------- catalogue


def test_health_tasks_and_engines_come_from_the_registry(server) -> None:
    """Tasks list every task's inputs (required = no default in its prepare); engine options are the
    dataclasses' own fields, defaults, choices and the ranges their checks enforce."""
    c = server().client
    health = c.get("/api/health").json()
    assert health["version"] == dc.__version__ and health["device"] == "auto"
    tasks = {t["name"]: t for t in c.get("/api/tasks").json()}
    assert set(tasks) == {t for t in TASK_SPECS if engines_for(t)}  # a task without engines is not offered
    remove = {i["name"]: i for i in tasks["remove"]["inputs"]}
    assert remove == {"image": {"name": "image", "kind": "image", "required": True, "help": "the image to edit"},
                      "mask": {"name": "mask", "kind": "mask", "required": True,
                               "help": "white = the region to change"}}
    paste = {i["name"]: (i["kind"], i["required"]) for i in tasks["paste"]["inputs"]}
    assert paste == {"image": ("image", True), "object": ("image", True), "box": ("box", True),
                     "object_mask": ("mask", False)}
    assert "classical" in tasks["remove"]["engines"]
    assert {n: t["output"] for n, t in tasks.items()} == {n: TASK_SPECS[n].output for n in tasks}  # the page finds the mask task by it
    assert tasks["segment"]["output"] == "mask"

    engines = {e["name"]: e for e in c.get("/api/engines").json()}
    from diffcompose.methods.classical.options import RemoveOptions

    opts = {o["name"]: o for o in engines["classical"]["tasks"]["remove"]["options"]}
    assert opts["method"]["type"] == "choice" and opts["method"]["default"] == RemoveOptions().method
    assert "patchmatch" in opts["method"]["choices"]
    assert (opts["radius"]["type"], opts["radius"]["min"], opts["radius"]["max"]) == ("int", 1, 100)
    assert engines["classical"]["available"] and engines["classical"]["reason"] is None
    # every listed bound is the dataclass's own: the bound passes, one beyond it is refused
    from diffcompose.methods.registry import get_engine_info

    for e in engines.values():
        for task, spec in e["tasks"].items():
            cls = get_engine_info(e["name"]).tasks[task]
            for o in spec["options"]:
                if o["type"] != "int" or o["min"] is None:
                    continue
                try:
                    cls(**{o["name"]: o["min"]})
                except InputError as exc:  # another rule (t_min <= t_max) may refuse it, not its range
                    assert not str(exc).startswith(flag(o["name"]) + " must be >")
                with pytest.raises(InputError, match="^" + flag(o["name"]) + " must be >"):
                    cls(**{o["name"]: o["min"] - 1})


def _model_folder(folder: Path, cls: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": cls}))
    return folder


def _cache_entry(hub: Path, repo_id: str, cls: str) -> None:
    _model_folder(hub / ("models--" + repo_id.replace("/", "--")) / "snapshots" / "abc123", cls)


def test_engines_offer_their_models_from_the_registry_the_cache_and_the_model_dir(server, tmp_path,
                                                                                   monkeypatch) -> None:
    """Each engine lists tiny, its default hub id (cached or not), and the models of its pipeline class
    already in the local HF cache or --model-dir; another engine's models are not offered; the list is
    looked at afresh on each request; engines without a model list none."""
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    inpaint, base = get_engine_info("sd-inpaint"), get_engine_info("freecompose")
    (cls,), (base_cls,) = inpaint.model_classes, base.model_classes
    _cache_entry(hub, "someone/my-inpaint", cls)
    _cache_entry(hub, "someone/other-kind", "SomethingElsePipeline")
    _cache_entry(hub, base.default_model, base_cls)
    _model_folder(tmp_path / "models" / "mine", cls)
    (tmp_path / "models" / "empty").mkdir()
    c = server(model_dir=tmp_path / "models").client
    engines = {e["name"]: e for e in c.get("/api/engines").json()}
    assert engines["sd-inpaint"]["models"] == [
        {"id": "tiny", "kind": "tiny"}, {"id": inpaint.default_model, "kind": "default", "cached": False},
        {"id": "someone/my-inpaint", "kind": "cached"}, {"id": "mine", "kind": "cached"}]
    assert engines["freecompose"]["models"] == [
        {"id": "tiny", "kind": "tiny"}, {"id": base.default_model, "kind": "default", "cached": True}]
    assert engines["classical"]["models"] == []  # takes no model
    for e in engines.values():
        assert isinstance(e["available"], bool) and (e["reason"] is None) == e["available"]
        if get_engine_info(e["name"]).default_model == NO_DEFAULT_MODEL:  # none published: no default entry
            assert all(m["kind"] != "default" for m in e["models"])
    _cache_entry(hub, inpaint.default_model, cls)  # downloaded since: offered as cached at once
    engines = {e["name"]: e for e in c.get("/api/engines").json()}
    assert engines["sd-inpaint"]["models"][1]["cached"] is True


def test_a_folder_written_for_one_engine_is_offered_to_that_engine_only(server, tmp_path, monkeypatch) -> None:
    """A SmartBrush folder keeps SD's pipeline class for its parts but names its engine: offered to
    smartbrush, not to the engines that run plain SD; a branch folder (config.json of one diffusers
    model) is offered to brushnet; a plain SD folder to every engine of that class."""
    from diffcompose.models.hub import ENGINE_KEY

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    models = tmp_path / "models"
    _model_folder(models / "my-smartbrush", "StableDiffusionPipeline")
    (models / "my-smartbrush" / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", ENGINE_KEY: "smartbrush"}))
    _model_folder(models / "plain-sd", "StableDiffusionPipeline")
    (models / "my-branch").mkdir()
    (models / "my-branch" / "config.json").write_text(json.dumps({"_class_name": "BrushNetModel"}))
    engines = {e["name"]: e for e in server(model_dir=models).client.get("/api/engines").json()}

    def cached(name: str) -> list[str]:
        return [m["id"] for m in engines[name]["models"] if m["kind"] == "cached"]

    assert cached("smartbrush") == ["my-smartbrush"]
    assert cached("freecompose") == cached("unipaint") == ["plain-sd"]
    assert cached("brushnet") == ["my-branch"]
    assert all(cached(name) == [] for name in ("powerpaint", "pbsketch", "objectstitch", "pbe"))


def test_an_engine_missing_its_packages_is_listed_unavailable_with_the_reason(server, monkeypatch) -> None:
    register(EngineInfo("needs-nothing-here", "nowhere:Engine", tasks={"remove": GateOptions},
                        requires=("no_such_package_xyz",), extra="someextra", default_model=NO_DEFAULT_MODEL))
    try:
        engines = {e["name"]: e for e in server().client.get("/api/engines").json()}
    finally:
        unregister("needs-nothing-here")
    e = engines["needs-nothing-here"]
    assert e["available"] is False and "no_such_package_xyz" in e["reason"] and "diffcompose[someextra]" in e["reason"]
    assert e["models"] == []  # no tiny builder, none published


def test_openapi_documents_every_options_dataclass(server) -> None:
    c = server().client
    doc = c.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    radius = schemas["Options_classical_remove"]["properties"]["radius"]
    assert (radius["type"], radius["minimum"], radius["maximum"], radius["default"]) == ("integer", 1, 100, 5)
    lr = schemas["Options_freecompose_remove"]["properties"]["lr"]
    assert lr["exclusiveMinimum"] == 0.0  # check_range(..., lo_open=True)
    body = doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["request"] and body["properties"]["mask"]["format"] == "binary"


def test_docs_is_the_whole_reference_offline_and_swagger_is_one_link_away(server) -> None:
    """/docs is rendered by the server from its own OpenAPI document: every endpoint and schema, option
    help and ranges, and nothing loaded from elsewhere (Swagger UI, at /docs/swagger, needs a CDN)."""
    c = server().client
    doc = c.get("/openapi.json").json()
    r = c.get("/docs")
    page = r.text
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for path, item in doc["paths"].items():
        for method in item:
            assert f'id="{method}{path}"' in page, (method, path)
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page, name
    help_text = doc["components"]["schemas"]["Options_classical_remove"]["properties"]["patch"]["description"]
    assert escape(help_text) in page and "&gt;= 1, &lt;= 15" in page
    assert '<a href="#schema-Options_classical_remove">' in page  # the job request's options link to each schema
    assert "swagger-ui" in c.get("/docs/swagger").text


def test_the_reference_escapes_what_it_shows() -> None:
    from diffcompose.server.reference import render_reference

    doc = {"openapi": "3.1.0", "info": {"title": "<t>", "version": "1"},
           "paths": {"/x/{id}": {"get": {"summary": "<script>alert(1)</script>",
                                         "parameters": [{"name": "id", "in": "path", "required": True,
                                                         "schema": {"type": "string"}}],
                                         "responses": {"200": {"description": "ok"}}}}},
           "components": {"schemas": {"S": {"properties": {"a": {"enum": ["<b>"], "default": "<b>"},
                                                           "r": {"$ref": '#/components/schemas/x"><i>'}}},
                                      'x"><i>': {"type": "string"}}}}
    page = render_reference(doc, swagger_href="/docs/swagger?token=a&b", openapi_href="/openapi.json")
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>" not in page and "<i>" not in page
    assert 'href="/docs/swagger?token=a&amp;b"' in page and "id *" in page


def test_page_and_static_files_are_served_when_present(server) -> None:
    from diffcompose.server.app import STATIC

    c = server().client
    r = c.get("/")
    if (STATIC / "index.html").is_file():
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    else:
        assert r.status_code == 404 and "not installed" in r.json()["error"]
    assert c.get("/static/../app.py").status_code == 404  # never a file outside static/


# --------------------------------------------------------------------------- jobs, results


def test_job_result_equals_the_python_api_with_seed_engine_task_in_headers_and_png(server, inputs) -> None:
    s = server()
    r = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="classical", seed=7,
                                               options={"method": "patchmatch"}))
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job = r.json()["id"]
    state = s.wait(job)
    assert state["status"] == "done" and state["results"] == 1 and state["step"] == state["total"] >= 1
    assert (state["task"], state["engine"], state["seed"]) == ("remove", "classical", 7)
    res = s.client.get(f"/api/jobs/{job}/result", params={"index": 0})
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert (res.headers["x-diffcompose-seed"], res.headers["x-diffcompose-engine"],
            res.headers["x-diffcompose-task"], res.headers["x-diffcompose-results"]) == ("7", "classical", "remove",
                                                                                 "1")
    got = Image.open(io.BytesIO(res.content))
    assert got.text["diffcompose:seed"] == "7" and got.text["diffcompose:engine"] == "classical"
    assert got.text["diffcompose:task"] == "remove"
    want = dc.remove(inputs["image"], inputs["mask"] > 0, engine="classical", seed=7, method="patchmatch")
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want))
    # results stay until expiry, however often they are fetched
    assert s.client.get(f"/api/jobs/{job}/result").content == res.content
    assert s.client.get(f"/api/jobs/{job}/result", params={"index": 1}).status_code == 404


def test_sync_run_returns_the_png_and_segment_returns_an_L_mask(server, inputs) -> None:
    s = server()
    r = s.client.post("/api/run", **multipart(inputs, task="remove", engine="classical", seed=3,
                                              options={"method": "telea"}))
    assert r.status_code == 200 and r.headers["x-diffcompose-seed"] == "3"
    want = dc.remove(inputs["image"], inputs["mask"] > 0, engine="classical", seed=3, method="telea")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")), np.asarray(want))
    box = [20, 10, 100, 80]
    r = s.client.post("/api/run", **multipart({"image": inputs["image"]}, task="segment", box=box))
    assert r.status_code == 200
    mask = Image.open(io.BytesIO(r.content))
    assert mask.mode == "L" and mask.size == (128, 96)
    want = dc.segment(inputs["image"], tuple(box))
    assert np.array_equal(np.asarray(mask), np.asarray(want))
    assert s.jobs.counts()["jobs"] == 0  # a synchronous run leaves nothing behind


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_events_stream_progress_previews_then_done_and_late_clients_get_the_state(server, inputs,
                                                                                  gate_engine) -> None:
    s = server(preview_interval=0.0)
    gate_engine.gate.set()
    job = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE,
                                                 options={"steps": 4})).json()["id"]
    with s.client.stream("GET", f"/api/jobs/{job}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = _events(stream.read().decode())
    names = [n for n, _ in events]
    assert names[-1] == "done" and names.count("done") == 1 and events[-1][1] == {"results": 1}
    steps = [d["step"] for n, d in events if n == "progress"]
    assert steps == sorted(steps) and steps[-1] == 4 and all(d["total"] == 4 for n, d in events if n == "progress")
    states = [d["status"] for n, d in events if n == "state"]
    assert states[-2:] == ["finishing", "done"] and "running" in states
    assert any(n == "preview" for n in names)
    preview = s.client.get(f"/api/jobs/{job}/preview")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(preview.content)).convert("RGB"))  # the engine's working window
    assert (shown == 128).all(axis=2).mean() > 0.2  # ... with the region it is filling
    # connecting after the end: the state, the last progress, the last preview, then the end
    late = _events(s.client.get(f"/api/jobs/{job}/events").text)
    assert [n for n, _ in late] == ["state", "progress", "preview", "done"] and late[1][1]["step"] == 4
    assert late[0][1] == {"status": "done"}


def _states(rec: Any) -> list[dict]:
    """The ``state`` events a job emitted, from its first (what every stream relays, in order)."""
    return [data for _, name, data in rec.events_after(0) if name == "state"]


def test_every_state_is_streamed_queued_with_position_then_loading_running_finishing_done(
        server, inputs, gate_engine) -> None:
    """A job waits at its place in the queue (renumbered as jobs ahead leave), loads its engine,
    runs from the start event on and finishes; each change is one ``state`` event, none skipped,
    and GET /api/jobs/{id} says the same."""
    s = server(queue_size=4)
    first = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE,
                                                   options={"steps": 2})).json()["id"]
    assert GateEngine.started.wait(10)  # first is inside its first step: the engine is busy
    second, third = (s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE, options={
        "steps": 2, "hold_at_end": hold})).json()["id"] for hold in (False, True))
    shown = s.client.get(f"/api/jobs/{third}").json()
    assert (shown["status"], shown["position"]) == ("queued", 2)
    got: list = []
    opened = threading.Event()

    def read() -> None:
        with s.client.stream("GET", f"/api/jobs/{third}/events") as stream:
            for line in stream.iter_lines():
                opened.set()
                got.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert opened.wait(10)
    s.client.post(f"/api/jobs/{second}/cancel")  # third moves up
    assert s.client.get(f"/api/jobs/{third}").json()["position"] == 1
    gate_engine.gate.set()
    assert gate_engine.at_end.wait(10)  # third is past its last step, still inside the engine
    assert s.client.get(f"/api/jobs/{third}").json()["status"] == "finishing"
    gate_engine.end_gate.set()
    assert s.wait(third)["status"] == "done"
    reader.join(10)
    streamed = _events("\n".join(got))
    assert [d for n, d in streamed if n == "state"] == [
        {"status": "queued", "position": 2}, {"status": "queued", "position": 1},
        {"status": "running", "step": 0, "total": 0},  # its engine is loaded already: no loading
        {"status": "finishing", "step": 2, "total": 2}, {"status": "done"}]
    assert streamed[-1] == ("done", {"results": 1})
    assert _states(s.jobs.get(first)) == [
        {"status": "queued", "position": 1}, {"status": "loading", "model": None},
        {"status": "running", "step": 0, "total": 0}, {"status": "finishing", "step": 2, "total": 2},
        {"status": "done"}]
    assert _states(s.jobs.get(second)) == [{"status": "queued", "position": 1}, {"status": "cancelled"}]


def test_a_one_pass_engine_runs_from_its_start_event_with_no_total(server, inputs) -> None:
    """GrabCut reports no steps: the start event alone makes the job ``running`` (total 0: an
    indeterminate bar), then ``finishing`` and ``done``."""
    s = server()
    job = s.client.post("/api/jobs", **multipart({"image": inputs["image"]}, task="segment", engine="classical",
                                                 box=[10, 10, 40, 40])).json()["id"]
    assert s.wait(job)["status"] == "done"
    assert [d["status"] for d in _states(s.jobs.get(job))] == ["queued", "loading", "running", "finishing", "done"]
    assert _states(s.jobs.get(job))[2] == {"status": "running", "step": 0, "total": 0}


def test_cancel_stops_a_running_job_within_one_step_and_a_queued_job_at_once(server, inputs, gate_engine) -> None:
    s = server(queue_size=4)
    job = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE,
                                                 options={"steps": 1000})).json()["id"]
    queued = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE)).json()["id"]
    gate_engine.gate.set()
    s.wait(job, until=("running",))
    while s.client.get(f"/api/jobs/{job}").json()["step"] < 3:
        time.sleep(0.01)
    assert s.client.post(f"/api/jobs/{queued}/cancel").json() == {"id": queued, "status": "cancelled"}
    r = s.client.post(f"/api/jobs/{job}/cancel")
    at_cancel = s.client.get(f"/api/jobs/{job}").json()["step"]
    assert r.status_code == 200 and r.json()["id"] == job
    state = s.wait(job)
    assert state["status"] == "cancelled" and state["step"] <= at_cancel + 1
    assert s.client.get(f"/api/jobs/{job}/result").status_code == 409
    assert _events(s.client.get(f"/api/jobs/{job}/events").text)[-1] == ("cancelled", {})


@pytest.mark.slow
def test_cancel_a_tiny_freecompose_run_within_one_step(server, inputs) -> None:
    pytest.importorskip("torch")
    s = server(preview_interval=0.0)
    job = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="freecompose", model="tiny",
                                                 options={"iterations": 100000, "resolution": 64,
                                                          "band": 0.2})).json()["id"]
    deadline = time.monotonic() + 120
    while s.client.get(f"/api/jobs/{job}").json()["step"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.client.post(f"/api/jobs/{job}/cancel")
    at_cancel = s.client.get(f"/api/jobs/{job}").json()["step"]
    state = s.wait(job)
    assert state["status"] == "cancelled" and state["step"] <= at_cancel + 1 and state["total"] == 100000
    assert s.client.get(f"/api/jobs/{job}/preview").status_code == 200  # freecompose emits previews


def test_shutdown_ends_running_and_queued_jobs_so_no_waiter_hangs(server, inputs, gate_engine) -> None:
    """A sync request waiting on a queued job must get an answer when the server stops."""
    s = server()
    running = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE,
                                                     options={"steps": 100000})).json()["id"]
    assert gate_engine.started.wait(10)
    queued = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE)).json()["id"]
    records = [s.jobs.get(running), s.jobs.get(queued)]
    waited: list[str] = []
    waiter = threading.Thread(target=lambda: waited.append(s.jobs.wait(queued).status), daemon=True)
    waiter.start()
    gate_engine.gate.set()
    s.jobs.shutdown()
    waiter.join(10)
    assert waited == ["cancelled"]
    assert [r.status for r in records] == ["cancelled", "cancelled"]
    assert not s.jobs.root.exists()


def test_queue_full_is_429_with_retry_after(server, inputs, gate_engine) -> None:
    s = server(queue_size=1)
    running = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE)).json()["id"]
    assert gate_engine.started.wait(10)  # the worker holds the first job: the queue is empty again
    waiting = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE))
    assert waiting.status_code == 202
    full = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE))
    assert full.status_code == 429 and "queue is full" in full.json()["error"]
    assert int(full.headers["retry-after"]) >= 1
    gate_engine.gate.set()
    assert s.wait(running)["status"] == "done" and s.wait(waiting.json()["id"])["status"] == "done"
    assert s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE)).status_code == 202


def test_jobs_on_different_engines_run_side_by_side_and_one_engine_runs_one_at_a_time(server, inputs,
                                                                                   gate_engine) -> None:
    s = server(workers=2)
    first = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE)).json()["id"]
    assert gate_engine.started.wait(10)
    second = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE)).json()["id"]
    other = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                                   options={"method": "telea"})).json()["id"]
    assert s.wait(other)["status"] == "done"  # a free worker took it although the gate engine is busy
    assert s.client.get(f"/api/jobs/{second}").json()["status"] == "queued"  # never two on one engine
    gate_engine.gate.set()
    assert s.wait(first)["status"] == s.wait(second)["status"] == "done"


def test_a_client_that_disconnects_mid_job_loses_nothing(server, inputs, gate_engine) -> None:
    s = server()
    job = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine=GATE,
                                                 options={"steps": 5})).json()["id"]
    gate_engine.gate.set()
    with s.client.stream("GET", f"/api/jobs/{job}/events") as stream:
        first = next(stream.iter_lines())
        assert first.startswith("event: ")
    assert s.wait(job)["status"] == "done"
    assert s.client.get(f"/api/jobs/{job}/result").status_code == 200


def test_results_live_in_a_private_folder_and_expire(server, inputs) -> None:
    now = [1000.0]
    s = server(result_ttl=60.0, clock=lambda: now[0])
    assert stat.S_IMODE(os.stat(s.jobs.root).st_mode) == 0o700
    job = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                                 options={"method": "telea"})).json()["id"]
    state = s.wait(job)
    assert state["expires"] == pytest.approx(now[0] + 60.0)
    files = list(s.jobs.root.glob(f"{job}-*.png"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) & 0o077 == 0
    now[0] += 59.0
    assert s.client.get(f"/api/jobs/{job}/result").status_code == 200
    now[0] += 2.0
    gone = s.client.get(f"/api/jobs/{job}")
    assert gone.status_code == 404 and "expired" in gone.json()["error"]
    assert not files[0].exists()
    assert s.client.get(f"/api/jobs/{job}/result").status_code == 404


def test_past_max_results_the_oldest_ended_job_goes_with_its_files(server, inputs) -> None:
    s = server(max_results=2)
    jobs = []
    for k in range(3):
        jobs.append(s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                                           options={"method": "telea"})).json()["id"])
        s.wait(jobs[-1])
        time.sleep(0.01)  # distinct end times
    gone = s.client.get(f"/api/jobs/{jobs[0]}")
    assert gone.status_code == 404 and not list(s.jobs.root.glob(f"{jobs[0]}-*.png"))
    for job in jobs[1:]:
        assert s.client.get(f"/api/jobs/{job}/result").status_code == 200
    assert s.jobs.counts()["jobs"] == 2
    # A job a synchronous /api/run still has to read is never swept; the others go in order.
    s.jobs.get(jobs[1]).held = True
    for _ in range(2):
        jobs.append(s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                                           options={"method": "telea"})).json()["id"])
        s.wait(jobs[-1])
        time.sleep(0.01)
    assert [s.client.get(f"/api/jobs/{j}").status_code for j in jobs[1:]] == [200, 404, 200, 200]


def test_missing_weights_end_the_job_with_the_one_line_error(server, inputs, monkeypatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = server()
    job = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="freecompose",
                                                 model="nobody-xyz/missing-model")).json()["id"]
    state = s.wait(job)
    assert state["status"] == "error" and "not in the local cache" in state["error"]
    assert "\n" not in state["error"]
    r = s.client.post("/api/run", **multipart(inputs, task="remove", engine="freecompose",
                                              model="nobody-xyz/missing-model"))
    assert r.status_code == 503 and r.json()["error"] == state["error"]


def test_a_model_neither_local_nor_cached_fails_within_a_second_without_the_network(server, inputs, tmp_path,
                                                                                    monkeypatch) -> None:
    """Without --allow-downloads a job whose model (named, or the engine's default) is not in the
    local cache ends in WeightsMissingError at once: 503 on /api/run, the job in error, the field
    named, and no network wait (hub access is made to fail loudly if anything tried it)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import socket

    tried: list = []

    class NoNetwork(socket.socket):  # a connection attempt is recorded and refused
        def connect(self, address: Any) -> None:
            tried.append(address)
            raise OSError("no network in this test")

        def connect_ex(self, address: Any) -> int:
            tried.append(address)
            return 111

    monkeypatch.setattr(socket, "socket", NoNetwork)
    s = server()
    for model in ("nobody-xyz/missing-model", None):  # None: the engine's default, not cached here
        request = {"task": "inpaint", "engine": "sd-inpaint", "prompt": "a chair",
                   **({"model": model} if model else {})}
        start = time.perf_counter()
        r = s.client.post("/api/run", **multipart(inputs, **request))
        took = time.perf_counter() - start
        assert r.status_code == 503 and took < 1.0, (r.status_code, took)
        body = r.json()
        assert body["field"] == "model" and "not in the local cache" in body["error"]
        assert "--allow-downloads" in body["error"]  # the server's own check, before any loader ran
        assert (model or get_engine_info("sd-inpaint").default_model) in body["error"]
    job = s.client.post("/api/jobs", **multipart(inputs, task="inpaint", engine="sd-inpaint", prompt="a chair",
                                                 model="nobody-xyz/missing-model")).json()["id"]
    state = s.wait(job, timeout=1.0)
    assert (state["status"], state["field"]) == ("error", "model")
    # an engine with no published model, and no model named: the same, at once
    start = time.perf_counter()
    r = s.client.post("/api/run", **multipart(inputs, task="inpaint", engine="smartbrush", prompt="a chair"))
    assert r.status_code == 503 and r.json()["field"] == "model" and "no published model" in r.json()["error"]
    assert time.perf_counter() - start < 1.0
    assert tried == []


def test_tiny_is_refused_up_front_for_an_engine_without_a_tiny_model(server, inputs) -> None:
    register(EngineInfo("no-tiny-here", "nowhere:Engine", tasks={"remove": GateOptions}, default_model="org/x"))
    try:
        r = server().client.post("/api/jobs", **multipart(inputs, task="remove", engine="no-tiny-here",
                                                          model="tiny"))
    finally:
        unregister("no-tiny-here")
    assert r.status_code == 400 and r.json() == {"error": "engine 'no-tiny-here' has no tiny model; choose another "
                                                          "model", "field": "model"}


# --------------------------------------------------------------------------- errors: 4xx, one line


def _api_message(call: Any) -> str:
    """The Python API's error for the same mistake, as the HTTP API words it (request names, not flags)."""
    with pytest.raises(InputError) as exc:
        call()
    return http_message(exc.value)


def _bomb_png(width: int, height: int) -> bytes:
    """A small valid-looking PNG whose header claims ``width`` x ``height`` (decoding it would explode)."""
    raw = png(np.zeros((4, 4, 3), np.uint8))
    ihdr = struct.pack(">II", width, height) + raw[24:29]
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def test_bad_inputs_get_400_with_the_cli_message(server, inputs) -> None:
    s = server()
    c = s.client
    img, mask = inputs["image"], inputs["mask"] > 0

    def err(r: Any, status: int = 400) -> str:
        assert r.status_code == status, r.text
        message = r.json()["error"]
        assert message and "\n" not in message
        return message

    files = {k: (f"{k}.png", png(v)) for k, v in inputs.items()}
    # not JSON, not an object, NaN
    assert "not valid JSON" in err(c.post("/api/jobs", files=files, data={"request": "{task"}))
    assert "JSON object" in err(c.post("/api/jobs", files=files, data={"request": "[1]"}))
    assert "finite" in err(c.post("/api/jobs", files=files,
                                  data={"request": '{"task": "remove", "options": {"radius": NaN}}'}))
    assert "missing the 'request' field" in err(c.post("/api/jobs", files=files))
    # unknown task, engine, option; option out of range or not a finite number: the API's own lines
    assert "unknown task 'frobnicate'" in err(c.post("/api/jobs", **multipart(inputs, task="frobnicate")))
    assert err(c.post("/api/jobs", **multipart(inputs, task="remove", engine="nope"))) == _api_message(
        lambda: dc.remove(img, mask, engine="nope"))
    assert err(c.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                               options={"bogus": 1}))) == _api_message(
        lambda: dc.remove(img, mask, engine="classical", bogus=1))
    assert err(c.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                               options={"radius": 0}))) == _api_message(
        lambda: dc.remove(img, mask, engine="classical", radius=0))
    assert err(c.post("/api/jobs", **multipart(inputs, task="harmonize", engine="classical",
                                               options={"strength": "nan"}))) == _api_message(
        lambda: dc.harmonize(img, mask, engine="classical", strength="nan"))
    assert "seed" in err(c.post("/api/jobs", **multipart(inputs, task="remove", seed=-1)))
    assert "margin must be" in err(c.post("/api/jobs", **multipart(inputs, task="remove", margin=-3)))
    # missing input, unknown upload, wrong kind of field
    assert "remove needs 'mask'" in err(c.post("/api/jobs", **multipart({"image": img}, task="remove")))
    assert "takes no 'reference'" in err(c.post("/api/jobs", **multipart(
        {**inputs, "reference": img}, task="remove")))
    assert "uploaded image file" in err(c.post("/api/jobs", files={"image": ("a.png", png(img))},
                                               data={"request": json.dumps({"task": "remove"}), "mask": "x"}))
    # an empty mask: the task's own check
    empty = {"image": img, "mask": np.zeros_like(inputs["mask"])}
    assert err(c.post("/api/jobs", **multipart(empty, task="remove", engine="classical"))) == _api_message(
        lambda: dc.remove(img, np.zeros(mask.shape, bool), engine="classical"))
    # content is decoded, not trusted by name or type
    fake = {"image": ("photo.png", b"GIF89a this is not an image", "image/png"), "mask": ("m.png", png(inputs["mask"]))}
    assert "cannot read image upload" in err(c.post("/api/jobs", files=fake,
                                                    data={"request": json.dumps({"task": "remove"})}))
    # formats Pillow reads but the server does not take from the network (EPS would run Ghostscript)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    ico = io.BytesIO()
    Image.fromarray(img[:32, :32]).save(ico, format="ICO")
    for data in (eps, ico.getvalue()):
        refused = c.post("/api/jobs", files={"image": ("photo.png", data), "mask": ("m.png", png(inputs["mask"]))},
                         data={"request": json.dumps({"task": "remove"})})
        assert "cannot read image upload" in err(refused) and "accepted: PNG, JPEG" in refused.json()["error"]
    jpeg = io.BytesIO()
    Image.fromarray(img).save(jpeg, format="JPEG")
    accepted = c.post("/api/jobs", files={"image": ("x.bin", jpeg.getvalue()), "mask": ("m", png(inputs["mask"]))},
                      data={"request": json.dumps({"task": "remove", "engine": "classical",
                                                   "options": {"method": "telea"}})})
    assert accepted.status_code == 202  # a JPEG named x.bin: the content decides
    # bad boxes: the task's parse_box, or not four whole numbers
    obj = {"image": img, "object": img[:40, :40]}
    assert err(c.post("/api/jobs", **multipart(obj, task="paste", box=[50, 50, 10, 10]))) == _api_message(
        lambda: dc.paste(img, img[:40, :40], (50, 50, 10, 10)))
    assert "box must be" in err(c.post("/api/jobs", **multipart(obj, task="paste", box=[1, 2, 3])))
    assert "box must be" in err(c.post("/api/jobs", **multipart(obj, task="paste", box=[0, 0, 1.5, 9])))
    assert "paste needs 'box'" in err(c.post("/api/jobs", **multipart(obj, task="paste")))
    assert "takes no box" in err(c.post("/api/jobs", **multipart(inputs, task="remove", box=[0, 0, 9, 9])))
    # points: the task's own parser and message
    if "points" in TASK_SPECS["segment"].inputs:
        from diffcompose.methods.tasks import prepare

        bad_points = [[1000, 5, 1]]
        assert err(c.post("/api/jobs", **multipart({"image": img}, task="segment", points=bad_points))) == \
            _api_message(lambda: prepare("segment", {"image": img, "points": bad_points}))
    # not multipart
    assert "multipart" in err(c.post("/api/jobs", json={"task": "remove"}))
    # unknown job
    assert "no job" in err(c.get("/api/jobs/nope"), 404)
    assert "no job" in err(c.post("/api/jobs/nope/cancel"), 404)


def test_errors_name_the_request_field_in_the_request_s_words_and_the_cli_keeps_its_flags(server, inputs) -> None:
    """Each error body says which field or upload caused it, and says it with the request's names
    (never a CLI flag); the CLI and the Python API keep their flags for the same mistakes."""
    c = server().client
    img, mask = inputs["image"], inputs["mask"]

    def body(r: Any, status: int = 400) -> tuple[str, Any]:
        assert r.status_code == status, r.text
        return r.json()["error"], r.json()["field"]

    message, field = body(c.post("/api/jobs", **multipart({"image": img}, task="harmonize", engine="classical")))
    assert (message, field) == ("harmonize needs mask (the pasted object in image) or object and box", "mask")
    with pytest.raises(InputError, match=r"^harmonize needs --mask \(the pasted object in IMAGE\) or --object "
                                         r"and --box$"):
        dc.harmonize(img, engine="classical")
    message, field = body(c.post("/api/jobs", **multipart({"image": img}, task="harmonize", engine="classical",
                                                          box=[1, 1, 9, 9])))
    assert (message, field) == ("box needs object (the object photo to paste into image)", "object")
    message, field = body(c.post("/api/jobs", **multipart(inputs, task="inpaint", engine="sd-inpaint",
                                                          box=[1, 1, 9, 9], prompt="a chair")))
    assert field == "mask" and "exactly one of mask (the region's shape) or box" in message and "--" not in message
    message, field = body(c.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                                          options={"radius": 0})))
    assert field == "radius" and message.startswith("radius must be >= 1")
    with pytest.raises(InputError, match="^--radius must be >= 1"):
        dc.remove(img, mask > 0, engine="classical", radius=0)
    assert body(c.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                                options={"bogus": 1})))[1] == "bogus"
    assert body(c.post("/api/jobs", **multipart(inputs, task="remove", engine="classical", seed=-1)))[1] == "seed"
    assert body(c.post("/api/jobs", **multipart(inputs, task="remove", engine="classical", margin=-3)))[1] == \
        "margin"
    assert body(c.post("/api/jobs", **multipart(inputs, task="remove", engine="nope")))[1] == "engine"
    assert body(c.post("/api/jobs", **multipart({"image": img}, task="remove", engine="classical")))[1] == "mask"
    # what the input readers refuse: the upload they were reading
    small = {"image": img, "mask": np.zeros((5, 5), np.uint8) + 255}
    message, field = body(c.post("/api/jobs", **multipart(small, task="remove", engine="classical")))
    assert field == "mask" and message.startswith("mask ")
    bad = {"image": ("a.png", b"not an image"), "mask": ("m.png", png(mask))}
    assert body(c.post("/api/jobs", files=bad, data={"request": json.dumps({"task": "remove",
                                                                             "engine": "classical"})}))[1] == "image"
    obj = {"image": img, "object": img[:40, :40]}
    assert body(c.post("/api/jobs", **multipart(obj, task="paste", engine="classical",
                                                box=[50, 50, 10, 10])))[1] == "box"
    # a reader that names the input by its keyword (paste reads its "image" upload as "background")
    from diffcompose.server.validate import blame

    for message, want in (("background is empty (0x0 pixels)", "image"), ("reference mask is 4x4 but ...",
                                                                          "reference_mask"), ("no name here", None)):
        with pytest.raises(InputError) as exc, blame("image", "reference", "reference_mask",
                                                      aliases={"background": "image"}):
            raise InputError(message)
        assert exc.value.field == want, message
    # no field to blame: null, and still one line
    assert body(c.get("/api/jobs/nope"), 404)[1] is None
    assert body(c.post("/api/jobs", json={"task": "remove"}))[1] is None


def test_uploads_are_bounded_in_bytes_and_in_pixels_before_decoding(server, inputs) -> None:
    img = inputs["image"]
    s = server(max_upload_mb=0.05, max_pixels=5000)
    big = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)  # ~120 kB of noise
    r = s.client.post("/api/jobs", **multipart({"image": big, "mask": np.zeros((200, 200), np.uint8)},
                                               task="remove"))
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["error"]
    # too many pixels: the message of the Python API with the same limit
    r = s.client.post("/api/jobs", **multipart(inputs, task="remove"))
    assert r.status_code == 400
    assert r.json()["error"] == _api_message(lambda: dc.remove(img, inputs["mask"] > 0, max_pixels=5000))
    # a bomb: a header claiming 50000x50000 pixels is refused from the header, in well under a second
    t = time.perf_counter()
    r = s.client.post("/api/jobs", files={"image": ("b.png", _bomb_png(50000, 50000)),
                                          "mask": ("m.png", png(inputs["mask"]))},
                      data={"request": json.dumps({"task": "remove"})})
    assert r.status_code == 400 and "50000x50000" in r.json()["error"] and time.perf_counter() - t < 1.0


def test_a_streamed_body_over_the_limit_is_cut_off(server) -> None:
    s = server(max_upload_mb=0.01)

    def chunks() -> Any:  # no Content-Length: the limit applies while reading
        yield b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(100):
            yield b"x" * 1024

    r = s.client.post("/api/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413


def test_the_server_never_opens_a_path_a_client_names(server, inputs, tmp_path) -> None:
    pytest.importorskip("torch")
    s = server(model_dir=tmp_path)
    for model in ("/etc", "../etc", "./src", "a/b/c", "~/.cache"):
        r = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="freecompose", model=model))
        assert r.status_code == 400 and "model must be" in r.json()["error"], model
    r = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="freecompose",
                                               options={"perceptual_model": "/etc/passwd"}))
    assert r.status_code == 400 and "perceptual_model" in r.json()["error"]
    r = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="classical", model="tiny"))
    assert r.status_code == 400 and "takes no model" in r.json()["error"]
    # a name inside --model-dir resolves there (and only there)
    from diffcompose.server.uploads import resolve_model_name

    (tmp_path / "mine").mkdir()
    assert resolve_model_name("mine", tmp_path) == str((tmp_path / "mine").resolve())
    assert resolve_model_name("org/model", tmp_path) == "org/model"


# --------------------------------------------------------------------------- token


def test_token_required_off_loopback_and_not_on_loopback(server, inputs) -> None:
    with pytest.raises(InputError, match="needs an access token"):
        Settings(host="0.0.0.0").check()
    assert server().client.get("/api/health").status_code == 200  # loopback: no token
    c = server(host="0.0.0.0", token=TOKEN).client
    c.base_url = "http://192.168.1.20:7860"  # any host name once a token guards the server
    for path in ("/", "/api/health", "/api/tasks", "/static/app.js", "/docs", "/openapi.json", "/api/jobs/x/events"):
        r = c.get(path)
        assert r.status_code == 401 and "token" in r.json()["error"], path
    assert c.get("/api/health", headers={"Authorization": "Bearer wrong-token-123"}).status_code == 401
    assert c.get("/api/health", params={"token": "wrong"}).status_code == 401
    assert c.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get("/api/health", params={"token": TOKEN}).status_code == 200
    docs = c.get("/docs", params={"token": TOKEN}).text  # its links carry the token on
    assert f'href="/openapi.json?token={TOKEN}"' in docs and f'href="/docs/swagger?token={TOKEN}"' in docs
    r = c.post("/api/run", params={"token": TOKEN}, **multipart(inputs, task="remove", engine="classical",
                                                                options={"method": "telea"}))
    assert r.status_code == 200
    assert c.post("/api/run", **multipart(inputs, task="remove")).status_code == 401


def test_without_a_token_only_this_machine_s_host_names_and_same_origin_writes_pass(server, inputs) -> None:
    """DNS rebinding (another site's name resolving to 127.0.0.1) and cross-site form posts are refused."""
    c = server().client
    assert c.get("/api/health", headers={"host": "localhost:7860"}).status_code == 200
    assert c.get("/api/health", headers={"host": "[::1]:7860"}).status_code == 200
    r = c.get("/api/health", headers={"host": "evil.example:7860"})
    assert r.status_code == 403 and "not allowed" in r.json()["error"]
    r = c.post("/api/jobs", headers={"origin": "http://evil.example"}, **multipart(inputs, task="remove"))
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    r = c.post("/api/jobs", headers={"origin": "null"}, **multipart(inputs, task="remove"))  # a sandboxed iframe
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    ok = c.post("/api/run", headers={"origin": "http://127.0.0.1:7860"},
                **multipart(inputs, task="remove", engine="classical", options={"method": "telea"}))
    assert ok.status_code == 200


def test_model_dir_serves_request_and_default_models_from_its_folders(server, inputs, tmp_path) -> None:
    """A request's model NAME (and an engine's default model) load from --model-dir when that folder exists."""
    from diffcompose.methods.registry import get_engine_info
    from diffcompose.server.validate import build_submission

    files = {k: png(v) for k, v in inputs.items()}
    default = get_engine_info("freecompose").default_model
    (tmp_path / default.rsplit("/", 1)[-1]).mkdir()
    (tmp_path / "mine").mkdir()
    sub = build_submission({"task": "remove", "engine": "freecompose"}, files, max_pixels=None, model_dir=tmp_path)
    assert sub.model == str((tmp_path / default.rsplit("/", 1)[-1]).resolve())
    sub = build_submission({"task": "remove", "engine": "freecompose", "model": "mine"}, files, max_pixels=None,
                           model_dir=tmp_path)
    assert sub.model == str((tmp_path / "mine").resolve())
    sub = build_submission({"task": "remove", "engine": "freecompose"}, files, max_pixels=None, model_dir=None)
    assert sub.model is None


def test_expired_results_are_swept_without_any_request(server, inputs) -> None:
    s = server(result_ttl=0.2)
    job = s.client.post("/api/jobs", **multipart(inputs, task="remove", engine="classical",
                                                 options={"method": "telea"})).json()["id"]
    s.wait(job)
    files = list(s.jobs.root.glob(f"{job}-*.png"))
    assert files
    deadline = time.monotonic() + 5
    while files[0].exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not files[0].exists()
