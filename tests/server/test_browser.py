"""The web page end to end in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright).

The server runs in a thread (uvicorn on a free loopback port, the real app). Test 1 does the
whole offline loop a user does: open a real photo, paint a stroke, run classical ``remove``,
watch the progress bar finish, download the result; the download must equal the API's result
for the very request the page sent, and pixels beyond the seam must be the photo's own.
Test 2 cancels a long tiny-model FreeCompose run from the page, on a server with an access
token (so the token travels with the page, its static files, the API calls and the event stream).

Screenshots go to ``test-artifacts/`` (git-ignored). Without Chromium or Playwright the module
skips; with ``DIFFCOMPOSE_REQUIRE_BROWSER=1`` (CI) it fails instead.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

import conftest

CHROMIUM = os.environ.get("DIFFCOMPOSE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = conftest.REPO / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _why_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright (Python) is not installed: pip install 'diffcompose[dev]'"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DIFFCOMPOSE_CHROMIUM)"
    for mod in ("fastapi", "uvicorn", "httpx"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed: pip install 'diffcompose[server,dev]'"
    return None


_MISSING = _why_missing()
if _MISSING and os.environ.get("DIFFCOMPOSE_REQUIRE_BROWSER", "") not in ("", "0"):
    raise RuntimeError(f"browser tests required (DIFFCOMPOSE_REQUIRE_BROWSER is set) but {_MISSING}")
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The real app on uvicorn in a background thread."""

    def __init__(self, token: str | None = None) -> None:
        import uvicorn

        from diffcompose.server.app import create_app
        from diffcompose.server.settings import Settings

        self.token = token
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        app = create_app(Settings(host="127.0.0.1", port=port, token=token))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _photo(tmp_path: Path) -> Path:
    """A real photo: the first removal case of ../shared/testdata, else scikit-image's astronaut
    (always installed), so the browser tests run (not skip) on a clone without the shared folder."""
    cases = conftest.testdata_cases("removal")
    if cases:
        return cases[0]["files"]["image"]
    from skimage import data

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def _open(page: Any, base: str, image: Path, token: str | None = None) -> None:
    page.goto(base + "/" + (f"?token={token}" if token else ""))
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    page.set_input_files("#image-input", str(image))
    w, h = Image.open(image).size
    page.wait_for_function(f"document.getElementById('image-info').textContent.includes('{w}×{h}')")


def _stroke(page: Any, frm: tuple[float, float], to: tuple[float, float], steps: int = 12) -> None:
    """Drag the brush across the canvas between two points given as fractions of its size."""
    box = page.locator("#overlay-canvas").bounding_box()
    at = lambda f: (box["x"] + f[0] * box["width"], box["y"] + f[1] * box["height"])  # noqa: E731
    page.mouse.move(*at(frm))
    page.mouse.down()
    for i in range(1, steps + 1):
        t = i / steps
        page.mouse.move(*at((frm[0] + t * (to[0] - frm[0]), frm[1] + t * (to[1] - frm[1]))))
    page.mouse.up()


def _last_sent(page: Any) -> tuple[dict[str, Any], bytes]:
    """The request JSON and the mask PNG of the page's last submission (the very blob it uploaded)."""
    sent = page.evaluate("""async () => {
        const s = window.diffcompose.lastSent;
        const buf = new Uint8Array(await s.mask.arrayBuffer());
        let bin = "";
        for (let i = 0; i < buf.length; i++) bin += String.fromCharCode(buf[i]);
        return {request: s.request, mask: btoa(bin)};
    }""")
    return sent["request"], base64.b64decode(sent["mask"])


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.slow
def test_paint_remove_download_equals_api(page: Any, tmp_path: Path) -> None:
    from diffcompose.inputs import load_image
    from diffcompose.regions.pasteback import changed_region, default_margin

    photo = _photo(tmp_path)
    with Server() as srv:
        _open(page, srv.base, photo)
        _stroke(page, (0.35, 0.45), (0.6, 0.55))
        page.select_option("#engine", "classical")
        page.select_option("#opt-method", "telea")  # fast and exact
        page.fill("#seed", "3")
        _shot(page, "remove-painted")
        page.click("#run")
        page.wait_for_selector("#status[data-state='done']", timeout=60_000)
        assert page.eval_on_selector("#progress", "p => p.value === p.max && p.max >= 1")
        assert page.locator("#results-strip figure").count() == 1
        _shot(page, "remove-done")
        with page.expect_download() as dl:
            page.click("#download")
        downloaded = Path(dl.value.path()).read_bytes()
        assert dl.value.suggested_filename.endswith("-remove-classical-seed3.png")

        request, mask_png = _last_sent(page)
        assert request["task"] == "remove" and request["engine"] == "classical" and request["seed"] == 3
        mask = _png(mask_png) > 127
        mask = mask if mask.ndim == 2 else mask[..., 0]
        image = load_image(photo)
        assert mask.shape == image.shape[:2]  # sent at the image's full size, whatever the view's scale
        h, w = mask.shape
        assert mask[int(0.5 * h), int(0.47 * w)] and 0.005 < mask.mean() < 0.2  # the stroke, where it was drawn
        with page.expect_download() as dm:
            page.click("#download-mask")
        saved = _png(Path(dm.value.path()).read_bytes())
        assert np.array_equal((saved if saved.ndim == 2 else saved[..., 0]) > 127, mask)

        with srv.client() as client:
            r = client.post("/api/run", files={"image": ("photo.png", photo.read_bytes()), "mask": ("m.png", mask_png)},
                            data={"request": json.dumps(request)})
        assert r.status_code == 200, r.text
        ours, api = _png(downloaded), _png(r.content)
    assert np.array_equal(ours, api), "the page's download differs from the API's result for the same request"
    assert ours.shape == image.shape
    outside = ~changed_region(mask, default_margin(image.shape))
    assert np.array_equal(ours[outside], image[outside]), "pixels beyond the margin changed"
    assert not np.array_equal(ours[mask], image[mask]), "nothing was removed"


@pytest.mark.slow
def test_cancel_a_long_run_from_the_page(page: Any, tmp_path: Path) -> None:
    photo = _photo(tmp_path)
    token = "browser-test-token"
    with Server(token=token) as srv:
        with srv.client() as client:
            assert client.get("/api/health", headers={"Authorization": ""}).status_code == 401
        _open(page, srv.base, photo, token=token)
        _stroke(page, (0.4, 0.5), (0.55, 0.5))
        page.select_option("#engine", "freecompose")
        page.fill("#model", "tiny")
        page.fill("#opt-iterations", "5000")
        page.fill("#opt-resolution", "64")
        with page.expect_response(lambda r: r.url.split("?")[0].endswith("/api/jobs") and r.request.method == "POST") \
                as resp:
            page.click("#run")
        job = resp.value.json()["id"]
        page.wait_for_selector("#status[data-state='running']", timeout=120_000)
        page.wait_for_function("document.getElementById('progress').value >= 2", timeout=60_000)
        _shot(page, "freecompose-running")
        page.click("#cancel")
        page.wait_for_selector("#status[data-state='cancelled']", timeout=60_000)
        _shot(page, "freecompose-cancelled")
        assert page.is_enabled("#run") and not page.is_enabled("#cancel")
        with srv.client() as client:
            status = client.get(f"/api/jobs/{job}").json()
        assert status["status"] == "cancelled" and status["step"] < 5000, status
        assert page.locator("#results-strip figure").count() == 0


def _mask_bits(page: Any) -> np.ndarray:
    """The page's mask (image-sized) as a bool array."""
    packed = page.evaluate("""() => {
        const b = maskBits();
        let s = "";
        for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode.apply(null, b.subarray(i, i + 8192));
        return btoa(s);
    }""")
    w, h = page.evaluate("() => [window.diffcompose.W, window.diffcompose.H]")
    return np.frombuffer(base64.b64decode(packed), dtype=np.uint8).astype(bool).reshape(h, w)


def _drop(page: Any, path: Path) -> None:
    """Drop an image file on the canvas area, as a user dragging it from a file manager."""
    page.evaluate("""([b64, name]) => {
        const bin = atob(b64);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: "image/png"}));
        document.getElementById("stage").dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [base64.b64encode(path.read_bytes()).decode(), path.name])


def _drag(page: Any, frm: tuple[float, float], to: tuple[float, float]) -> None:
    _stroke(page, frm, to, steps=5)


@pytest.mark.slow
def test_box_and_clicks_to_mask_then_edit_it(page: Any, tmp_path: Path) -> None:
    """A dropped photo larger than the view; box -> GrabCut mask; clicks -> SAM mask (tiny model);
    undo/redo, grow/shrink, invert, ``[``/``]``. Coordinates and masks are in image pixels."""
    photo = tmp_path / "large.png"
    Image.open(_photo(tmp_path)).convert("RGB").resize((1600, 1072), Image.Resampling.LANCZOS).save(photo)
    with Server() as srv:
        page.goto(srv.base + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=20_000)
        _drop(page, photo)
        page.wait_for_function("document.getElementById('image-info').textContent.includes('1600×1072')")
        shown = page.locator("#overlay-canvas").bounding_box()
        assert shown["width"] < 1600 * 0.75  # the view scales the image down
        page.click("#tool-box")
        _drag(page, (0.3, 0.3), (0.7, 0.8))
        box = page.evaluate("() => window.diffcompose.box")
        w, h = Image.open(photo).size
        assert abs(box[0] - 0.3 * w) <= 2 and abs(box[3] - 0.8 * h) <= 2  # image pixels, not screen pixels
        page.click("#segment")
        page.wait_for_function("document.getElementById('segment-info').textContent === 'mask from classical'")
        grabcut = _mask_bits(page)
        inside = np.zeros_like(grabcut)
        inside[box[1]:box[3], box[0]:box[2]] = True
        assert grabcut.any() and not grabcut[~inside].any()
        _shot(page, "segment-grabcut")

        page.click("#undo")
        assert not _mask_bits(page).any()
        page.keyboard.press("Control+y")
        assert np.array_equal(_mask_bits(page), grabcut)
        # grow/shrink by 5 px: dilation/erosion by an 11x11 square, as OpenCV does it
        import cv2

        square = np.ones((11, 11), np.uint8)
        page.fill("#grow-px", "5")
        page.click("#mask-grow")
        grown = _mask_bits(page)
        assert np.array_equal(grown, cv2.dilate(grabcut.astype(np.uint8), square).astype(bool))
        page.click("#mask-shrink")
        shrunk = _mask_bits(page)
        assert np.array_equal(shrunk, cv2.erode(grown.astype(np.uint8), square).astype(bool))
        assert shrunk.sum() < grown.sum()
        page.click("#mask-invert")
        assert np.array_equal(_mask_bits(page), ~shrunk)

        before = int(page.input_value("#brush-size"))
        page.locator("body").press("]")
        assert int(page.input_value("#brush-size")) > before
        page.locator("body").press("[")
        page.locator("body").press("[")
        assert int(page.input_value("#brush-size")) < before

        at = page.locator("#overlay-canvas").bounding_box()
        page.click("#tool-points")
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache("facebook/sam-vit-base", "config.json"), str):
            # SAM's weights are not here (offline): the click falls back to GrabCut with the box, same mask
            page.mouse.click(at["x"] + 0.45 * at["width"], at["y"] + 0.5 * at["height"])
            page.click("#segment")
            page.wait_for_function("document.getElementById('segment-info').textContent.startsWith('SAM unavailable')",
                                   timeout=60_000)
            page.wait_for_function("!document.getElementById('segment').disabled")
            assert page.text_content("#segment-info").startswith("SAM unavailable")  # the page still says why
            assert np.array_equal(_mask_bits(page), grabcut)

        # clicks go to SAM (the tiny random one here: its mask means nothing, but it comes back at full size)
        page.click("#prompts-clear")
        page.fill("#sam-model", "tiny")
        page.mouse.click(at["x"] + 0.5 * at["width"], at["y"] + 0.5 * at["height"])
        page.mouse.click(at["x"] + 0.1 * at["width"], at["y"] + 0.1 * at["height"], button="right")
        page.keyboard.down("Shift")
        page.mouse.click(at["x"] + 0.9 * at["width"], at["y"] + 0.1 * at["height"])
        page.keyboard.up("Shift")
        assert [p[2] for p in page.evaluate("() => window.diffcompose.points")] == [1, 0, 0]
        page.click("#segment")
        page.wait_for_function("document.getElementById('segment-info').textContent === 'mask from sam'",
                               timeout=60_000)
        assert _mask_bits(page).shape == (h, w)
        _shot(page, "segment-sam-clicks")
