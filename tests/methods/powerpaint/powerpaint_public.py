"""Shared pieces of the PowerPaint tests: the tiny model, and the public code loaded from the mirror.

A helper module, not a ``conftest.py`` (the suite keeps one, at its root, importable as ``conftest``):
the test modules import its fixtures by name.

The public code (open-mmlab/PowerPaint) is read from a fetched bare git repository at test time
(``conftest.mirror``: ``$DIFFCOMPOSE_MIRRORS``, default ``/work/.mirror``): its ``powerpaint`` package is extracted to a
temporary folder and imported as it is, with two in-memory changes for today's libraries (its
logging helper ``mmengine.print_log`` is a no-op stub, and ``powerpaint/pipelines/__init__.py``
is emptied so the ControlNet pipeline, unused here, is not imported). Without the mirror the tests
that need it skip, saying so; the written-out references in ``test_powerpaint_prompts.py`` keep
the prompt pins in CI.
"""

from __future__ import annotations

import ast
import io
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import mirror

MIRROR = mirror("open-mmlab/PowerPaint")


@pytest.fixture(scope="session")
def tiny_root() -> Path:
    from diffcompose.methods.powerpaint.tiny import ensure_tiny_powerpaint

    return ensure_tiny_powerpaint()


@pytest.fixture(scope="session")
def engine(tiny_root) -> Any:
    """The engine on the tiny model (CPU), both versions loaded once for the session."""
    from diffcompose.methods.powerpaint.engine import PowerPaintEngine

    eng = PowerPaintEngine(device="cpu", model=str(tiny_root))
    eng.load()
    yield eng
    eng.unload()


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(MIRROR), *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="session")
def public(tmp_path_factory) -> Any:
    """The public ``powerpaint`` package and the demo's ``add_task`` (from ``app.py``), or a skip."""
    if not MIRROR.is_dir() or shutil.which("git") is None:
        pytest.skip(f"the public PowerPaint code is not mirrored at {MIRROR} (set DIFFCOMPOSE_MIRRORS): "
                    "the written-out references still run")
    root = tmp_path_factory.mktemp("powerpaint-public")
    tarfile.open(fileobj=io.BytesIO(_git("archive", "HEAD", "powerpaint")), mode="r").extractall(root, filter="data")
    (root / "powerpaint" / "pipelines" / "__init__.py").write_text("")
    app = _git("show", "HEAD:app.py").decode()
    fn = next(n for n in ast.parse(app).body if isinstance(n, ast.FunctionDef) and n.name == "add_task")
    ns: dict[str, Any] = {}
    exec(compile(ast.Module([fn], []), "app.py", "exec"), ns)

    added = [m for m in ("mmengine",) if m not in sys.modules]
    stub = types.ModuleType("mmengine")
    stub.print_log = lambda *a, **k: None
    sys.modules.setdefault("mmengine", stub)
    sys.path.insert(0, str(root))
    try:
        import importlib

        pub = types.SimpleNamespace(
            utils=importlib.import_module("powerpaint.utils.utils"),
            v1=importlib.import_module("powerpaint.pipelines.pipeline_PowerPaint"),
            models=importlib.import_module("powerpaint.models"),
            v2=importlib.import_module("powerpaint.pipelines.pipeline_PowerPaint_Brushnet_CA"),
            add_task=ns["add_task"])
        yield pub
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "powerpaint" or m.startswith("powerpaint.")] + added:
            sys.modules.pop(name, None)


def plain_tokenizer(folder: Path, out: Path) -> Path:
    """``folder``'s CLIP tokenizer without the task words (what the public code starts from)."""
    import json

    from transformers import CLIPTokenizer

    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split(" ")) for line in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
              if line]
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tok.save_pretrained(str(out))
    return out


def public_text_encoder(pub: Any, ours: Any, tokenizer_dir: Path) -> tuple[Any, Any]:
    """The public (wrapped tokenizer, wrapped text encoder) holding our text encoder's weights: the
    public ``add_tokens`` on the plain vocabulary, then its learned vectors set from our extra rows
    (what loading the public ``text_encoder.safetensors`` does)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffcompose.methods.powerpaint.prompts import TASK_TOKENS, VECTORS_PER_TOKEN

    weight = ours.get_input_embeddings().weight.detach()
    vocab = weight.shape[0] - len(TASK_TOKENS) * VECTORS_PER_TOKEN
    cfg = CLIPTextConfig(**{**ours.config.to_dict(), "vocab_size": vocab})
    text = CLIPTextModel(cfg).eval()
    state = {k: (weight[:vocab].clone() if k.endswith("embeddings.token_embedding.weight") else v)
             for k, v in ours.state_dict().items()}
    text.load_state_dict(state)
    if not hasattr(text, "text_model"):  # transformers 5 flattened CLIPTextModel; the public code reaches in
        text.__dict__["text_model"] = text
    tok = pub.utils.TokenizerWrapper(from_pretrained=str(tokenizer_dir))
    pub.utils.add_tokens(tokenizer=tok, text_encoder=text, placeholder_tokens=list(TASK_TOKENS),
                         initialize_tokens=["a"] * len(TASK_TOKENS), num_vectors_per_token=VECTORS_PER_TOKEN)
    layer = text.text_model.embeddings.token_embedding
    with torch.no_grad():
        for i, name in enumerate(TASK_TOKENS):
            layer.trainable_embeddings[name].copy_(weight[vocab + i * VECTORS_PER_TOKEN: vocab + (i + 1) *
                                                          VECTORS_PER_TOKEN])
    return tok, text


def scene(w: int = 64, h: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A small smooth photo-like image and an elliptic hole."""
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 3) % 256], -1).astype(np.uint8)
    hole = ((xx - w * 0.55) / (w * 0.22)) ** 2 + ((yy - h * 0.45) / (h * 0.3)) ** 2 <= 1
    return img, hole
