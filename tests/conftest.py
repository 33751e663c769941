"""Shared fixtures: real photos from ../shared/testdata (skipped when absent) and scikit-image."""

from __future__ import annotations

import json
import os
from pathlib import Path

# One OpenMP thread for the session and the processes its tests start, set before numpy or torch
# loads: the tests run tiny models, which gain nothing from intra-op threads, and on a shared 2-core
# machine spinning OpenMP threads made them 3-10x slower (a FreeCompose seed test: 14.2 s with 2
# threads, 2.6 s with 1). An OMP_NUM_THREADS already set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TESTS = Path(__file__).resolve().parent  # the tests mirror src/diffcompose/ in folders below this one
REPO = TESTS.parent
TESTDATA = Path(os.environ.get("DIFFCOMPOSE_TESTDATA", REPO.parent / "shared" / "testdata"))
CLIP_TOKENIZER = Path(os.environ.get("DIFFCOMPOSE_CLIP_TOKENIZER", REPO.parent / "shared" / "assets" / "clip_tokenizer"))
#: Bare git mirrors of the public repositories (``owner+name/repo``, as ``fetch`` writes them), read by
#: the parity tests that run the public code itself; those skip, saying so, where a mirror is absent.
MIRRORS = Path(os.environ.get("DIFFCOMPOSE_MIRRORS", "/work/.mirror"))


def mirror(repo: str) -> Path:
    """The bare mirror of public repository ``repo`` (``owner/name``), present or not."""
    return MIRRORS / repo.replace("/", "+") / "repo"

# Never touch the network from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def testdata_cases(task: str) -> list[dict]:
    """Manifest entries of one task with absolute file paths ([] when the folder is absent)."""
    manifest = TESTDATA / "manifest.json"
    if not manifest.exists():
        return []
    cases = []
    for case in json.loads(manifest.read_text()):
        if case["task"] == task:
            files = {k: TESTDATA / v for k, v in case["files"].items()}
            cases.append({**case, "files": files})
    return cases


@pytest.fixture
def testdata() -> Path:
    if not (TESTDATA / "manifest.json").exists():
        pytest.skip("../shared/testdata is not present")
    return TESTDATA


@pytest.fixture
def clip_tokenizer_dir() -> Path:
    if not (CLIP_TOKENIZER / "tokenizer.json").exists():
        pytest.skip("../shared/assets/clip_tokenizer is not present")
    return CLIP_TOKENIZER


@pytest.fixture
def photo() -> np.ndarray:
    """A real photo that ships with scikit-image (always available)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture
def ellipse_mask(photo: np.ndarray) -> np.ndarray:
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    return ((xx - w * 0.55) / (w * 0.12)) ** 2 + ((yy - h * 0.45) / (h * 0.18)) ** 2 <= 1.0


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core CPU train faster on one torch thread (more only adds contention).

    Module-scoped, so module-scoped fixtures that train (e.g. a model trained once for a file) can
    depend on it too; the thread count comes back after the module."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
