"""A property-based run of the server's own OpenAPI document (schemathesis): whatever the generated
requests hold (bad JSON, odd multipart bodies, unknown ids, out-of-range query values), the server
answers 2xx/4xx, never 5xx. Bounded: a few examples per operation, no deadline, well under a minute.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
import io  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from diffcompose.server import Settings, create_app  # noqa: E402

#: Examples per API operation (10 operations); enough to hit each error path, bounded in time.
EXAMPLES = 25
#: Job requests drawn around the JobRequest schema.
REQUESTS = 120


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def app():
    application = create_app(Settings(max_upload_mb=1.0, queue_size=64, allowed_hosts=("testserver",)))
    yield application
    application.state.jobs.shutdown()


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error(app) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case) -> None:
            response = case.call_and_validate(checks=[not_a_server_error])
            assert response.status_code < 500, (operation.label, response.text)
            if response.status_code >= 400:  # every error is one JSON line
                body = response.json()
                assert isinstance(body.get("error"), str) and "\n" not in body["error"], body

        check()


# --------------------------------------------------------------------------- the job request itself

def _mostly(draw: st.DrawFn, good: st.SearchStrategy, bad: st.SearchStrategy) -> object:
    """A value of ``good`` nine times in ten, else of ``bad``."""
    return draw(bad) if draw(st.integers(0, 9)) == 0 else draw(good)


#: Values of the wrong type, and non-finite numbers (as JSON strings: JSON itself has no NaN).
ANYTHING = st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                     st.sampled_from(["nan", "inf", "-inf", "1e400"]))


def _in_range(opt: dict) -> st.SearchStrategy:
    if opt["type"] == "choice":
        return st.sampled_from(opt["choices"])
    if opt["type"] in ("int", "float"):
        lo = opt["min"] if opt["min"] is not None else -1000
        hi = opt["max"] if opt["max"] is not None else 1000
        edges = st.sampled_from([lo, hi, lo - 1, hi + 1])  # at and just beyond the documented bounds
        inside = st.integers(int(lo), int(min(hi, lo + 20))) if opt["type"] == "int" else \
            st.floats(lo, hi, allow_nan=False)
        return st.one_of(inside, edges)
    if opt["type"] == "bool":
        return st.booleans()
    return st.text(max_size=12)


def job_requests(engines: list[dict]) -> st.SearchStrategy:
    """JSON job requests: mostly well formed (a task an engine serves, a few of its real options
    around their documented ranges), each field sometimes drawn outside its documented shape."""
    pairs = [(e["name"], t, spec["options"]) for e in engines for t, spec in e["tasks"].items()]

    @st.composite
    def build(draw: st.DrawFn) -> dict:
        engine, task, options = draw(st.sampled_from(pairs))
        chosen = draw(st.lists(st.sampled_from(options), max_size=2, unique_by=lambda o: o["name"])) if options \
            else []
        req: dict = {"task": _mostly(draw, st.just(task), st.text(max_size=6)),
                     "engine": _mostly(draw, st.just(engine), st.text(max_size=6)),
                     "options": {o["name"]: _mostly(draw, _in_range(o), ANYTHING) for o in chosen}}
        optional = {
            "seed": (st.integers(0, 2**63 - 1), st.one_of(st.integers(-5, -1), st.just(2**64), ANYTHING)),
            "box": (st.just([4, 4, 40, 30]), st.one_of(st.lists(st.integers(-10, 80), min_size=3, max_size=5),
                                                      ANYTHING)),
            "prompt": (st.text(min_size=1, max_size=10), ANYTHING),
            "paste_back": (st.booleans(), ANYTHING),
            "margin": (st.integers(0, 20), st.one_of(st.integers(-3, -1), st.floats(allow_nan=False), ANYTHING)),
            "model": (st.sampled_from(["org/name", "x"]), st.one_of(st.sampled_from(["/etc", "../x", "a/b/c"]),
                                                                   ANYTHING)),
            "points": (st.just([[10, 10, 1]]), st.lists(st.lists(st.integers(-5, 70), min_size=2, max_size=4),
                                                      max_size=3)),
            "bogus": (st.integers(), st.integers()),
        }
        for key in draw(st.lists(st.sampled_from(sorted(optional)), max_size=3, unique=True)):
            if key == "bogus" and draw(st.integers(0, 4)):
                continue
            req[key] = _mostly(draw, *optional[key])
        return req

    return build()


@pytest.mark.slow
def test_any_job_request_is_accepted_or_refused_in_one_line_and_accepted_jobs_run(app) -> None:
    """Requests drawn around the documented JobRequest schema, with real images for every upload
    field a task takes: each is 202 or a 4xx JSON line, never 5xx; every accepted job then ends
    without an internal error (validation let nothing through that the run trips on)."""
    from fastapi.testclient import TestClient

    client = TestClient(app)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    uploads = {"image": png(image), "mask": png(mask), "object": png(image[:20, :20]), "reference": png(image),
               "object_mask": png(mask[:20, :20]), "reference_mask": png(mask), "condition": png(mask),
               "edited_condition": png(mask)}
    tasks = {t["name"]: [i["name"] for i in t["inputs"]] for t in client.get("/api/tasks").json()}
    accepted: list[str] = []

    @given(req=job_requests(client.get("/api/engines").json()), drop=st.integers(0, 20))
    @settings(max_examples=REQUESTS, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def check(req: dict, drop: int) -> None:
        names = [n for n in tasks.get(req["task"], ["image", "mask"]) if n in uploads]
        files = {n: (f"{n}.png", uploads[n], "image/png") for i, n in enumerate(names) if i != drop}
        r = client.post("/api/jobs", files=files, data={"request": json.dumps(req)})
        assert r.status_code in (202, 400, 503), (req, r.text)
        if r.status_code == 202:
            accepted.append(r.json()["id"])
        else:
            assert "\n" not in r.json()["error"]

    check()
    jobs = app.state.jobs
    for job in accepted:
        rec = jobs.wait(job, timeout=120)
        assert rec.status in ("done", "error"), rec.public()
        assert not (rec.error or "").startswith("internal error"), rec.public()


def test_the_schema_lists_every_endpoint_of_the_contract(app) -> None:
    paths = set(app.openapi()["paths"])
    assert {"/api/health", "/api/tasks", "/api/engines", "/api/jobs", "/api/run", "/api/jobs/{job_id}",
            "/api/jobs/{job_id}/events", "/api/jobs/{job_id}/preview", "/api/jobs/{job_id}/cancel",
            "/api/jobs/{job_id}/result"} <= paths
