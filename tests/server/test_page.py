"""The page as a first-time user meets it (issue 22), in headless Chromium at 1366x768 and 390x844.

One test per promise of the page: job states shown honestly, everything in view on a laptop and
stacked on a phone, before/after for every result of the session, opening images (again, by drop,
by paste), errors once and by their control, zoom and pan with the brush at true size, the model
picker, task tabs and option controls from the registry, the keyboard, and axe-core with no
critical or serious violation in each state. One server and one browser for the module.

Where a test needs a server answer that a real run cannot produce on demand (a queue position, a
``field`` in an error body, a model already in the cache), it stubs that one HTTP response with
Playwright's ``page.route`` so the page's own logic is what is tested; the other tests run against
the real server with classical engines and tiny models on real photos. Screenshots go to
``test-artifacts/``; with ``DIFFCOMPOSE_WRITE_DOCS_SCREENSHOT=1`` the laptop one also replaces
``docs/images/page-1366x768.png`` (the README's).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import conftest
import numpy as np
import pytest
from browser_kit import (
    LAPTOP,
    PHONE,
    REQUIRE,
    Server,
    assert_accessible,
    drop,
    image_point,
    launch,
    open_image,
    shot,
    stroke,
)
from browser_kit import photo as real_photo
from PIL import Image

pytestmark = [REQUIRE, pytest.mark.slow]

DOCS_SHOT = conftest.REPO / "docs" / "images" / "page-1366x768.png"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _page(browser: Any, viewport: dict) -> Iterator[Any]:
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def laptop(browser: Any) -> Iterator[Any]:
    yield from _page(browser, LAPTOP)


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    yield from _page(browser, PHONE)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_photo(tmp_path_factory.mktemp("photos"))


# ------------------------------------------------------------------ helpers


def _in_view(page: Any, selector: str) -> bool:
    """Wholly inside the viewport, without scrolling anything."""
    return page.evaluate("""(sel) => {
        const r = document.querySelector(sel).getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 &&
               r.right <= innerWidth + 0.5 && r.bottom <= innerHeight + 0.5;
    }""", selector)


def _page_scrolls(page: Any) -> dict:
    return page.evaluate("""() => ({x: document.documentElement.scrollWidth > innerWidth,
                                    y: document.documentElement.scrollHeight > innerHeight})""")


def _set_range(page: Any, selector: str, value: float) -> None:
    """Move a slider as a user does (its value, then its input event)."""
    page.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                          value)


def _history(page: Any) -> list[list]:
    return page.evaluate("() => window.diffcompose.history")


def _paint_and_run_telea(page: Any, at: tuple[float, float] = (0.4, 0.5)) -> None:
    stroke(page, at, (at[0] + 0.15, at[1] + 0.05))
    page.select_option("#engine", "classical")
    page.select_option("#opt-method", "telea")
    n = page.locator("#results-strip figure").count()
    _run_until(page, "done")
    page.wait_for_function(f"document.querySelectorAll('#results-strip figure').length === {n + 1}")


def _png_bytes(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _stub_json(page: Any, pattern: str, change: Callable[[Any], Any]) -> None:
    """Answer GETs matching ``pattern`` with the real server's JSON as changed by ``change``."""
    def handle(route: Any) -> None:
        data = route.fetch().json()
        route.fulfill(status=200, content_type="application/json", body=json.dumps(change(data)))
    page.route(pattern, handle)


def _stub_job(page: Any, events: list[tuple[str, dict]] | None, result: bytes | None = None,
              submit: tuple[int, dict] = (202, {"id": "stub", "status": "queued"})) -> list[str]:
    """A job the page submits and follows: POST /api/jobs answers ``submit``; the event stream sends
    ``events`` at once (or never answers when None: a job that runs on); the result is ``result``.
    Returns the list of API calls the page made to the job (method and path)."""
    calls: list[str] = []

    def jobs(route: Any) -> None:
        req = route.request
        path = req.url.split("?")[0].split("/api/", 1)[1]
        calls.append(f"{req.method} {path}")
        if req.method == "POST" and path == "jobs":
            route.fulfill(status=submit[0], content_type="application/json", body=json.dumps(submit[1]))
        elif path.endswith("/events"):
            if events is None:
                return  # never answered: the job is still running as far as the page can tell
            body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
            route.fulfill(status=200, content_type="text/event-stream", body=body)
        elif path.endswith("/result"):
            route.fulfill(status=200, content_type="image/png", body=result or b"",
                          headers={"X-Diffcompose-Engine": "classical", "X-Diffcompose-Seed": "0"})
        elif path.endswith("/cancel"):
            route.fulfill(status=200, content_type="application/json", body=json.dumps({"id": "stub", "status": "running"}))
        else:
            route.continue_()

    page.route("**/api/jobs**", jobs)
    return calls


def _server_has_s_features(server: Server) -> bool:
    """Whether this server lists models per engine (the issue-22 server side), to pin what it adds too."""
    with server.client() as c:
        return all("models" in e for e in c.get("/api/engines").json())


def _run_until(page: Any, state: str, timeout: float = 60_000) -> None:
    """Click Run and wait for the status line to reach ``state`` for this run (not an earlier one)."""
    n = len(_history(page))
    page.click("#run")
    page.wait_for_function("([n, state]) => { const h = window.diffcompose.history; "
                           "return h.length > n && h.slice(n).some(x => x[0] === state); }", arg=[n, state], timeout=timeout)


def _shown_once(page: Any, message: str) -> int:
    return page.evaluate("(m) => document.body.innerText.split(m).length - 1", message)


# ------------------------------------------------------------------ job states


def test_job_states_are_shown_honestly(laptop: Any, server: Server, photo: Path) -> None:
    """queued (position), loading, running (indeterminate for a one-pass engine, then step/total),
    finishing, done; then failed and cancelled: each one as the status line and bar show it."""
    page = laptop
    _stub_job(page, [
        ("state", {"status": "queued", "position": 2}),
        ("state", {"status": "loading", "model": "tiny"}),
        ("state", {"status": "running", "step": 0, "total": 0}),
        ("state", {"status": "running", "step": 0, "total": 10}),
        ("progress", {"task": "remove", "step": 3, "total": 10, "elapsed": 0.5}),
        ("state", {"status": "finishing"}),
        ("done", {"results": 1}),
    ], result=_png_bytes(photo))
    open_image(page, server.base, photo)
    stroke(page, (0.4, 0.5), (0.5, 0.5))
    page.click("#run")
    page.wait_for_selector("#status[data-state='done']")
    seen = [(s, t, counted) for s, t, counted in _history(page)]
    assert ("queued", "queued: number 2 in line", False) in seen
    assert ("loading", "loading the model tiny…", False) in seen
    assert ("running", "running…", False) in seen  # a one-pass engine: an indeterminate bar, not "queued"
    assert ("running", "running: step 3 of 10 · 0.5 s", True) in seen
    assert ("finishing", "finishing…", True) in seen
    order = [s for s, _, _ in seen]
    assert order.index("queued") < order.index("loading") < order.index("running") < order.index("finishing") \
        < order.index("done")
    assert page.eval_on_selector("#progress", "p => p.value === p.max")
    shot(page, "page-states-done", full_page=False)

    page.unroute("**/api/jobs**")
    _stub_job(page, [("state", {"status": "running", "step": 1, "total": 4}),
                     ("error", {"error": "the engine ran out of memory", "field": None})])
    _run_until(page, "error")
    assert page.text_content("#status") == "failed"
    assert page.text_content("#error") == "the engine ran out of memory"
    assert _shown_once(page, "the engine ran out of memory") == 1
    assert_accessible(page, "failed")

    page.unroute("**/api/jobs**")
    _stub_job(page, [("state", {"status": "running", "step": 1, "total": 4}), ("cancelled", {})])
    _run_until(page, "cancelled")
    assert page.text_content("#status") == "cancelled" and page.is_enabled("#run") and not page.is_enabled("#cancel")
    assert page.text_content("#error") == ""  # the old failure went with the new run


def test_states_of_a_real_job_run_with_keys(laptop: Any, server: Server, photo: Path) -> None:
    """Against the real server: Ctrl+Enter runs a tiny FreeCompose job, the page shows it queued then
    counting steps (loading first, on a server that reports loading), and Esc cancels it."""
    page = laptop
    open_image(page, server.base, photo)
    stroke(page, (0.4, 0.5), (0.55, 0.5))
    page.select_option("#engine", "freecompose")
    page.select_option("#model-choice", "tiny")
    page.fill("#opt-iterations", "5000")
    page.fill("#opt-resolution", "64")
    page.locator("#overlay-canvas").hover()
    page.keyboard.press("Control+Enter")
    page.wait_for_function("document.getElementById('progress').value >= 2", timeout=60_000)
    assert _in_view(page, "#progress") and _in_view(page, "#status")
    page.keyboard.press("Escape")
    page.wait_for_selector("#status[data-state='cancelled']", timeout=60_000)
    seen = _history(page)
    states = [s for s, _, _ in seen]
    assert states[0] == "queued" and "running" in states and states[-1] == "cancelled", seen
    running = [t for s, t, counted in seen if s == "running" and counted]
    assert running and all(" of 5000" in t for t in running), seen
    if _server_has_s_features(server):
        assert "loading" in states and states.index("loading") < states.index("running"), seen
    assert page.locator("#results-strip figure").count() == 0


# ------------------------------------------------------------------ layout


def test_laptop_layout_everything_in_view(laptop: Any, server: Server, photo: Path) -> None:
    """At 1366x768 and 1920x1080: canvas, Run, progress, the result over the canvas and the session
    strip are in view and the page does not scroll; axe-core finds nothing serious in each state."""
    page = laptop
    from browser_kit import open_page

    open_page(page, server.base)
    assert_accessible(page, "idle, no image")
    open_image(page, None, photo)
    for sel in ("#image-canvas", "#run", "#progress", "#status", "#stage"):
        assert _in_view(page, sel), sel
    assert_accessible(page, "image open")
    _paint_and_run_telea(page)
    for sel in ("#run", "#progress", "#status", "#compare-frame", "#results-strip figure", "#download",
                "#compare-slider"):
        assert _in_view(page, sel), sel
    # the result sits over the canvas, not below it
    stage = page.locator("#stage").bounding_box()
    frame = page.locator("#compare-frame").bounding_box()
    assert stage["y"] <= frame["y"] and frame["y"] + frame["height"] <= stage["y"] + stage["height"]
    strip = page.locator("#session").bounding_box()
    assert strip["x"] >= stage["x"] + stage["width"]  # beside the stage
    assert _page_scrolls(page) == {"x": False, "y": False}
    path = shot(page, "page-1366x768", full_page=False)
    if os.environ.get("DIFFCOMPOSE_WRITE_DOCS_SCREENSHOT", "") not in ("", "0"):
        DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)  # 256 colours: a third of the size, for the README
        Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(DOCS_SHOT, optimize=True)
    # the controls scroll in their own column: the last option comes into view, the run bar stays
    page.locator("#options label").last.scroll_into_view_if_needed()
    assert _in_view(page, "#options label:last-child") and _in_view(page, "#run") and _in_view(page, "#compare-frame")
    assert_accessible(page, "done, before/after")
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.wait_for_timeout(100)
    for sel in ("#run", "#progress", "#compare-frame", "#results-strip figure", "#download"):
        assert _in_view(page, sel), sel
    assert _page_scrolls(page) == {"x": False, "y": False}
    shot(page, "page-1920x1080", full_page=False)
    page.set_viewport_size({"width": 820, "height": 640})  # a narrow window: the strip runs under the canvas
    page.wait_for_timeout(100)
    for sel in ("#run", "#progress", "#compare-frame", "#results-strip figure", "#download"):
        assert _in_view(page, sel), sel
    assert _page_scrolls(page) == {"x": False, "y": False}
    shot(page, "page-820x640", full_page=False)


def test_phone_layout_stacks_without_sideways_scroll(phone: Any, server: Server, photo: Path) -> None:
    page = phone
    open_image(page, server.base, photo)
    assert not _page_scrolls(page)["x"]
    stage = page.locator("#stage").bounding_box()
    controls = page.locator("#controls").bounding_box()
    assert stage["width"] >= 340  # the canvas gets the width, not a squeezed column
    assert controls["y"] >= stage["y"] + stage["height"]  # the panels stack below it
    assert abs(controls["width"] - stage["width"]) < 20
    assert _in_view(page, "#run") and _in_view(page, "#image-canvas")
    assert_accessible(page, "phone, image open")
    _paint_and_run_telea(page)
    assert not _page_scrolls(page)["x"]
    assert _in_view(page, "#compare-frame")
    shot(page, "page-390x844")


# ------------------------------------------------------------------ results and images


def test_before_after_for_every_result_of_the_session(laptop: Any, server: Server, photo: Path) -> None:
    """Run, "Edit this result", run again, open another photo: each result in the strip still shows
    its own before and after (no revoked blob URL)."""
    page = laptop
    open_image(page, server.base, photo)
    _paint_and_run_telea(page, (0.3, 0.4))
    page.click("#use-result")
    page.wait_for_function("document.getElementById('compare').hidden")
    _paint_and_run_telea(page, (0.5, 0.6))
    other = real_photo(photo.parent, 1)
    open_image(page, None, other)
    _paint_and_run_telea(page, (0.4, 0.5))
    entries = page.evaluate("() => window.diffcompose.entries.map(e => e.before)")
    assert len(entries) == 3 and len(set(entries)) == 3
    sizes = [Image.open(photo).size, Image.open(photo).size, Image.open(other).size]
    for i, size in enumerate(sizes):
        page.locator("#results-strip figure button").nth(i).click()
        loaded = page.evaluate("""async () => {
            const out = [];
            for (const id of ["compare-before", "compare-after"]) {
                const img = document.getElementById(id);
                try { await img.decode(); out.push([img.naturalWidth, img.naturalHeight]); } catch (e) { out.push(null); }
            }
            return out;
        }""")
        assert loaded == [list(size), list(size)], (i, loaded)
        assert page.evaluate(f"() => document.getElementById('compare-before').src === window.diffcompose.entries[{i}].before")
    shot(page, "page-strip-first-again", full_page=False)


def test_opening_images_again_by_drop_and_by_paste(laptop: Any, server: Server, photo: Path, tmp_path: Path) -> None:
    page = laptop
    open_image(page, server.base, photo)
    stroke(page, (0.3, 0.5), (0.6, 0.5))
    assert page.evaluate("() => maskBits().some(v => v)")
    open_image(page, None, photo)  # the very same file again: it opens (a fresh, empty mask)
    page.wait_for_function("() => !maskBits().some(v => v)")

    other = tmp_path / "dropped-photo.png"
    Image.open(real_photo(tmp_path, 1)).convert("RGB").resize((300, 200)).save(other)
    drop(page, other)
    page.wait_for_function("document.getElementById('image-info').textContent === 'dropped-photo.png · 300×200'")

    pasted = tmp_path / "clip.png"
    Image.open(photo).convert("RGB").resize((160, 120)).save(pasted)
    page.evaluate("""(b64) => {
        const bin = atob(b64);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "image.png", {type: "image/png"}));
        document.body.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt, bubbles: true, cancelable: true}));
    }""", base64.b64encode(pasted.read_bytes()).decode())
    page.wait_for_function("document.getElementById('image-info').textContent === 'pasted.png · 160×120'")
    assert page.evaluate("() => [window.diffcompose.W, window.diffcompose.H]") == [160, 120]


# ------------------------------------------------------------------ errors


def test_errors_once_next_to_their_control(laptop: Any, server: Server, photo: Path) -> None:
    page = laptop
    open_image(page, server.base, photo)
    page.click("#run")  # no mask painted
    msg = "remove needs a mask: paint the region to change"
    assert page.text_content("[data-error-for=mask]") == msg and _shown_once(page, msg) == 1
    assert page.text_content("#status") == "idle"
    assert_accessible(page, "error by the mask tools")

    stroke(page, (0.4, 0.5), (0.5, 0.5))
    page.select_option("#engine", "freecompose")
    for field, control, message in [("iterations", "#opt-iterations", "iterations must be at most 100000"),
                                    ("model", "#model-choice", "no weights for model 'x/y' here (offline)"),
                                    ("options", "#options-box", "unknown option 'strenght' for freecompose"),
                                    (None, "#run", "the server is busy")]:
        page.unroute("**/api/jobs**")
        _stub_job(page, None, submit=(400, {"error": message, "field": field}))
        _run_until(page, "error")
        assert _shown_once(page, message) == 1, message
        # the message is the next thing after the control's label (or in the run bar)
        where = page.evaluate("""(sel) => {
            const c = document.querySelector(sel);
            const err = [...document.querySelectorAll('.field-error')].find(e => e.textContent);
            const anchor = c.closest('label') || c;
            return {after: anchor.nextElementSibling === err || c.parentElement.contains(err),
                    invalid: c.getAttribute('aria-invalid')};
        }""", control)
        assert where["after"], (field, where)
        if field in ("iterations", "model"):  # one control is at fault: it is marked invalid too
            assert where["invalid"] == "true"
        assert page.evaluate("""() => {  // the message itself is on screen
            const r = [...document.querySelectorAll('.field-error')].find(e => e.textContent).getBoundingClientRect();
            return r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth;
        }"""), field
    shot(page, "page-error-by-run", full_page=False)

    # the real server: a model that is not here fails fast, once, by the model picker when the server says so
    page.unroute("**/api/jobs**")
    page.select_option("#model-choice", "__other__")
    page.fill("#model", "no-such-org/no-such-model")
    start = time.monotonic()
    _run_until(page, "error")
    took = time.monotonic() - start
    message = page.evaluate("() => [...document.querySelectorAll('.field-error')].map(e => e.textContent).join('')")
    assert message and _shown_once(page, message) == 1
    if _server_has_s_features(server):
        assert took < 2.0, took
        assert page.get_attribute("#model", "aria-invalid") == "true"
        # the request's field in the page's words, not the CLI's flag (the server's own start options,
        # --allow-downloads and --model-dir, may be named: they are what its operator can change)
        assert not re.search(r"--model(?![-\w])", message), message
    shot(page, "page-error-missing-model", full_page=False)


# ------------------------------------------------------------------ zoom, pan, brush


def _overlay_alpha_row(page: Any, y: float) -> np.ndarray:
    data = page.evaluate("""(y) => {
        const c = document.getElementById('overlay-canvas');
        const row = c.getContext('2d').getImageData(0, Math.round(y), c.width, 1).data;
        const a = [];
        for (let i = 3; i < row.length; i += 4) a.push(row[i]);
        return a;
    }""", y)
    return np.array(data)


def test_zoom_pan_and_the_brush_at_true_size(laptop: Any, server: Server, photo: Path) -> None:
    page = laptop
    open_image(page, server.base, photo)
    v0 = page.evaluate("() => ({...window.diffcompose.view})")
    ov = page.locator("#overlay-canvas").bounding_box()
    at = image_point(page)
    mx, my = at((0.3, 0.4))
    under = lambda v: ((mx - ov["x"] - v["tx"]) / v["s"], (my - ov["y"] - v["ty"]) / v["s"])
    before = under(v0)
    page.mouse.move(mx, my)
    page.mouse.wheel(0, -400)  # zoom in at the pointer
    page.wait_for_function(f"window.diffcompose.view.s > {v0['s'] * 1.5}")
    v1 = page.evaluate("() => ({...window.diffcompose.view})")
    assert np.allclose(under(v1), before, atol=0.5)  # the point under the pointer stays put
    assert page.text_content("#zoom-info") == f"{round(v1['s'] * 100)}%"

    # the brush cursor: a ring of radius brush/2 at this zoom, in screen pixels
    _set_range(page, "#brush-size", 40)
    page.mouse.move(mx + 1, my)
    page.mouse.move(mx, my)
    cx, cy = mx - ov["x"], my - ov["y"]
    alpha = _overlay_alpha_row(page, cy)
    r = 20 * v1["s"]
    assert alpha[round(cx + r)] > 0 and alpha[round(cx - r)] > 0
    assert alpha[int(cx + r * 0.6)] == 0 and alpha[int(cx + r * 1.4)] == 0

    # a stroke at this zoom is 40 image pixels wide
    page.mouse.down()
    page.mouse.move(mx + 60, my, steps=6)
    page.mouse.up()
    bits = page.evaluate("""(x0) => { const b = maskBits(); const W = window.diffcompose.W;
        const col = Math.round(x0 + 20 / window.diffcompose.view.s);
        let n = 0; for (let y = 0; y < window.diffcompose.H; y++) n += b[y * W + col]; return n; }""", before[0])
    assert 38 <= bits <= 42, bits

    # space-drag pans, and paints nothing
    painted = page.evaluate("() => maskBits().reduce((a, b) => a + b, 0)")
    page.mouse.move(mx, my)
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(mx + 100, my + 50, steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    v2 = page.evaluate("() => ({...window.diffcompose.view})")
    assert abs(v2["tx"] - v1["tx"] - 100) < 1 and abs(v2["ty"] - v1["ty"] - 50) < 1 and v2["s"] == v1["s"]
    assert page.evaluate("() => maskBits().reduce((a, b) => a + b, 0)") == painted
    shot(page, "page-zoomed", full_page=False)

    page.keyboard.press("0")  # back to the whole image
    v3 = page.evaluate("() => ({...window.diffcompose.view})")
    assert v3 == v0


# ------------------------------------------------------------------ generated from the registry


def test_model_picker_from_the_engines(laptop: Any, server: Server, photo: Path) -> None:
    page = laptop

    def engines(data: list) -> list:
        for e in data:
            if e["name"] == "freecompose":
                e["models"] = [{"id": "tiny", "kind": "tiny"},
                               {"id": e["default_model"], "kind": "default", "cached": False},
                               {"id": "someone/cached-model", "kind": "cached"}]
                e["available"] = True
            elif e["name"] == "pbe":
                e["available"], e["reason"] = False, "needs the diffusion extra: pip install 'diffcompose[diffusion]'"
        return data

    _stub_json(page, "**/api/engines*", engines)
    open_image(page, server.base, photo)
    page.select_option("#engine", "freecompose")
    options = page.eval_on_selector_all("#model-choice option", "os => os.map(o => [o.value, o.textContent])")
    values = [v for v, _ in options]
    assert values[:3] == ["tiny", "stable-diffusion-v1-5/stable-diffusion-v1-5", "someone/cached-model"]
    assert values[-1] == "__other__" and "not downloaded" in options[1][1] and "cached" in options[2][1]
    assert page.input_value("#model-choice") == "someone/cached-model"  # one that is here, not the missing default
    page.select_option("#engine", "classical")
    assert page.is_disabled("#model-choice")

    page.click("#task-tab-paint")
    assert page.eval_on_selector("#engine option[value=pbe]", "o => o.disabled")
    assert "needs the diffusion extra" in page.text_content("#engine-info")
    assert_accessible(page, "model picker, an engine unavailable")

    page.click("#task-tab-remove")
    page.select_option("#engine", "freecompose")
    assert page.is_hidden("#model")
    page.select_option("#model-choice", "__other__")
    page.fill("#model", "/models/my-freecompose")
    stroke(page, (0.4, 0.5), (0.5, 0.5))
    _stub_job(page, None)
    page.click("#run")
    page.wait_for_selector("#status[data-state='queued']")
    assert page.evaluate("() => window.diffcompose.lastSent.request.model") == "/models/my-freecompose"


def test_task_tabs_and_option_controls_from_the_registry(laptop: Any, server: Server, photo: Path) -> None:
    """A task and an option the page has never heard of (``reframe``, a 0..1 ``fitting_degree``) appear
    from /api/tasks and /api/engines alone: a tab, and a slider that sends its value once moved."""
    page = laptop
    with server.client() as c:
        real_tasks = [t["name"] for t in c.get("/api/tasks").json()]

    def tasks(data: list) -> list:
        return data + [{"name": "reframe", "summary": "grow the canvas and fill the new area",
                        "inputs": [{"name": "image", "kind": "image", "required": True, "help": "the image"},
                                   {"name": "extend", "kind": "text", "required": False, "help": "L,T,R,B"}],
                        "engines": ["classical"]}]

    def engines(data: list) -> list:
        for e in data:
            if e["name"] == "classical":
                e["tasks"]["reframe"] = {"options": [
                    {"name": "fitting_degree", "type": "float", "default": None, "min": 0.0, "max": 1.0,
                     "choices": None, "nullable": True, "help": "how closely the fill follows the shape"},
                    {"name": "steps", "type": "int", "default": 20, "min": 1, "max": 1000, "choices": None,
                     "nullable": False, "help": "steps"}]}
        return data

    _stub_json(page, "**/api/tasks*", tasks)
    _stub_json(page, "**/api/engines*", engines)
    open_image(page, server.base, photo)
    tabs = page.eval_on_selector_all("#task-tabs [role=tab]", "ts => ts.map(t => t.textContent)")
    assert tabs == real_tasks + ["reframe"]
    page.click("#task-tab-reframe")
    assert page.get_attribute("#task-tab-reframe", "aria-selected") == "true"
    assert page.get_attribute("#opt-fitting_degree", "type") == "range"
    assert page.get_attribute("#opt-steps", "type") == "number"  # not a 0..1 float: a number field
    assert page.is_visible("#input-extend")
    assert page.evaluate("() => collectOptions()") == {"steps": 20}  # the slider says "default" until moved
    _set_range(page, "#opt-fitting_degree", 0.7)
    assert page.evaluate("() => collectOptions()") == {"fitting_degree": 0.7, "steps": 20}
    assert "0.70" in page.text_content("#options")
    assert_accessible(page, "generated task and options")
    page.locator("#task-tab-reframe").press("ArrowLeft")
    assert page.get_attribute(f"#task-tab-{real_tasks[-1]}", "aria-selected") == "true"


def test_the_registrys_own_tasks_options_and_engine_inputs(laptop: Any, server: Server, photo: Path) -> None:
    """No stubs: outpaint's tab and text inputs, PowerPaint's fitting degree as a slider, and a sketch
    field shown only for the engine that takes one (and for auto), never sent for another."""
    page = laptop
    open_image(page, server.base, photo)
    page.click("#task-tab-outpaint")
    assert page.is_visible("#input-extend") and page.is_visible("#input-aspect")
    page.click("#task-tab-inpaint")
    page.select_option("#engine", "powerpaint")
    assert page.get_attribute("#opt-fitting_degree", "type") == "range"
    page.click("#task-tab-paint")
    page.select_option("#engine", "auto")
    assert page.is_visible("#input-sketch")  # auto: an engine that takes it may be chosen
    page.select_option("#engine", "pbe")
    assert page.is_hidden("#input-sketch")
    page.select_option("#engine", "pbsketch")
    assert page.is_visible("#input-sketch")
    assert_accessible(page, "engine-specific input")


#: The engines of issues 23-24 through the page with their tiny models: (task, engine, file inputs, text inputs).
NEW_ENGINES = [
    ("paint", "pbsketch", ("reference", "sketch"), {}),
    ("insert", "objectstitch", ("reference",), {}),
    ("remove", "unipaint", (), {}),
    ("outpaint", "powerpaint", (), {"extend": "0,0,16,0"}),
    ("inpaint", "brushnet", (), {"prompt": "a red ball"}),
]


@pytest.mark.parametrize("task, engine, files, texts", NEW_ENGINES, ids=[e for _, e, _, _ in NEW_ENGINES])
def test_the_new_engines_run_from_the_page(laptop: Any, server: Server, photo: Path, tmp_path: Path,
                                           task: str, engine: str, files: tuple, texts: dict) -> None:
    """Each engine runs a real job from the page (its tiny model, 2 steps at 64 px) and lands in the strip."""
    page = laptop
    open_image(page, server.base, photo)
    page.click(f"#task-tab-{task}")
    if task != "outpaint":
        stroke(page, (0.4, 0.5), (0.55, 0.5))
    page.select_option("#engine", engine)
    page.select_option("#model-choice", "tiny")
    sketch = tmp_path / "sketch.png"
    w, h = Image.open(photo).size  # a sketch has the image's size
    lines = np.zeros((h, w), np.uint8)
    lines[h // 3:2 * h // 3, w // 2:w // 2 + 4] = 255
    Image.fromarray(lines).save(sketch)
    for name in files:
        page.set_input_files(f"#input-{name}", str(sketch if name == "sketch" else photo))
    for name, value in texts.items():
        page.fill(f"#input-{name}", value)
    for name, value in {"steps": "2", "resolution": "64", "tune_steps": "1"}.items():
        if page.locator(f"#opt-{name}").count():
            page.fill(f"#opt-{name}", value)
    n = len(_history(page))
    page.click("#run")
    page.wait_for_function("n => window.diffcompose.history.slice(n).some(x => ['done', 'failed', 'error', "
                           "'cancelled'].includes(x[0]))", arg=n, timeout=120_000)
    shown = _history(page)[n:]
    errors = page.eval_on_selector_all(".error, [role=alert]", "es => es.map(e => e.textContent).filter(t => t)")
    assert shown[-1][0] == "done", (shown, errors)
    page.wait_for_function("document.querySelectorAll('#results-strip figure').length === 1")
    assert page.evaluate("() => window.diffcompose.lastSent.request.engine") == engine


# ------------------------------------------------------------------ keyboard, favicon


def test_keyboard_help_run_and_escape(laptop: Any, server: Server, photo: Path) -> None:
    page = laptop
    open_image(page, server.base, photo)
    page.locator("body").press("?")
    assert page.evaluate("() => document.getElementById('help').open")
    assert "Ctrl" in page.text_content("#help")
    assert_accessible(page, "help dialog open")
    shot(page, "page-help", full_page=False)
    page.keyboard.press("Escape")
    assert not page.evaluate("() => document.getElementById('help').open")

    stroke(page, (0.4, 0.5), (0.5, 0.5))
    calls = _stub_job(page, None)
    page.fill("#seed", "5")
    page.focus("#seed")  # Ctrl+Enter runs from inside a field too
    page.keyboard.press("Control+Enter")
    page.wait_for_function("document.getElementById('status').dataset.state === 'queued'")
    assert calls[0] == "POST jobs"
    assert_accessible(page, "a job queued")
    page.keyboard.press("Control+Enter")  # a second press while it runs starts nothing
    page.locator("body").press("Escape")
    page.wait_for_function("document.getElementById('status').dataset.state === 'cancelling'")
    assert calls.count("POST jobs") == 1 and "POST jobs/stub/cancel" in calls


def test_favicon(laptop: Any, server: Server) -> None:
    page = laptop
    from browser_kit import open_page

    open_page(page, server.base)
    href = page.eval_on_selector("link[rel=icon]", "l => l.href")
    r = page.request.get(href)
    assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in r.body()
