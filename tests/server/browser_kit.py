"""What the browser tests share: the real server in a thread, Chromium, photos, strokes, screenshots, axe-core.

Without Chromium or Playwright the browser test modules skip (``REQUIRE`` below); with
``DIFFCOMPOSE_REQUIRE_BROWSER=1`` (CI) importing this module fails instead, so a CI without a
browser cannot pass by skipping.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import conftest
import pytest
from PIL import Image

CHROMIUM = os.environ.get("DIFFCOMPOSE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = conftest.REPO / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def _why_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright (Python) is not installed: pip install 'diffcompose[dev]'"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DIFFCOMPOSE_CHROMIUM)"
    for mod in ("fastapi", "uvicorn", "httpx", "axe_playwright_python"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed: pip install 'diffcompose[server,dev]'"
    return None


MISSING = _why_missing()
if MISSING and os.environ.get("DIFFCOMPOSE_REQUIRE_BROWSER", "") not in ("", "0"):
    raise RuntimeError(f"browser tests required (DIFFCOMPOSE_REQUIRE_BROWSER is set) but {MISSING}")
REQUIRE = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def free_port() -> int:
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
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        app = create_app(Settings(host="127.0.0.1", port=port, token=token))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=120)


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)


def shot(page: Any, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def photo(tmp_path: Path, index: int = 0) -> Path:
    """A real photo: a removal case of ../shared/testdata, else scikit-image's astronaut
    (always installed), so the browser tests run (not skip) on a clone without the shared folder."""
    cases = conftest.testdata_cases("removal")
    if cases:
        return cases[index % len(cases)]["files"]["image"]
    from skimage import data

    path = tmp_path / f"astronaut{index}.png"
    img = data.astronaut() if index % 2 == 0 else data.chelsea()
    Image.fromarray(img).save(path)
    return path


def open_page(page: Any, base: str, token: str | None = None) -> None:
    page.goto(base + "/" + (f"?token={token}" if token else ""))
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)


def open_image(page: Any, base: str | None, image: Path, token: str | None = None) -> None:
    """Load the page (unless ``base`` is None) and open ``image`` through the file input."""
    if base is not None:
        open_page(page, base, token)
    page.set_input_files("#image-input", str(image))
    w, h = Image.open(image).size
    page.wait_for_function(f"document.getElementById('image-info').textContent.includes('{w}×{h}')")


def stroke(page: Any, frm: tuple[float, float], to: tuple[float, float], steps: int = 12) -> None:
    """Drag the mouse across the shown image between two points given as fractions of its size."""
    at = image_point(page)
    page.mouse.move(*at(frm))
    page.mouse.down()
    for i in range(1, steps + 1):
        t = i / steps
        page.mouse.move(*at((frm[0] + t * (to[0] - frm[0]), frm[1] + t * (to[1] - frm[1]))))
    page.mouse.up()


def image_point(page: Any) -> Any:
    """A function from fractions of the shown image to page coordinates (the image canvas as displayed)."""
    box = page.locator("#image-canvas").bounding_box()
    return lambda f: (box["x"] + f[0] * box["width"], box["y"] + f[1] * box["height"])


def drop(page: Any, path: Path, mime: str = "image/png") -> None:
    """Drop an image file on the canvas area, as a user dragging it from a file manager."""
    page.evaluate("""([b64, name, mime]) => {
        const bin = atob(b64);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: mime}));
        document.getElementById("stage").dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [base64.b64encode(path.read_bytes()).decode(), path.name, mime])


def axe_violations(page: Any) -> list[dict]:
    """axe-core's critical and serious violations on the page as it is now (the copy the PyPI package ships)."""
    import axe_playwright_python

    script = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()
    if not page.evaluate("() => !!window.axe"):
        page.evaluate(script)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("critical", "serious")]


def assert_accessible(page: Any, state: str) -> None:
    bad = axe_violations(page)
    assert not bad, f"axe-core, state '{state}': {bad}"
