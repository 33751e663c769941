"""The public BrushNet code itself, loaded from the fetched repositories at test time (never committed).

TencentARC/BrushNet is a fork of diffusers: its ``models/brushnet.py`` (the branch), its changed
``models/unets/unet_2d_blocks.py`` and ``unet_2d_condition.py`` (the UNet that adds the
residuals) and ``pipelines/brushnet/pipeline_brushnet.py`` are read with ``git show`` from the
bare mirror, their relative imports pointed at today's diffusers in memory, and imported as
standalone modules. PowerPaint's ``BrushNet_CA.py`` (with its own copies of the two UNet files,
importing diffusers absolutely) is loaded the same way. Where a mirror is absent (CI), the
fixtures skip with the reason; the written-out references in the tests keep the pins there.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from conftest import mirror

BRUSHNET_REPO = mirror("TencentARC/BrushNet")
POWERPAINT_REPO = mirror("open-mmlab/PowerPaint")
PREFIX = "_public_brushnet_"


def _show(repo: Path, path: str) -> str | None:
    if not repo.is_dir():
        return None
    done = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def _import(name: str, source: str, folder: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


def _absolute(src: str, package: str) -> str:
    """The relative imports of a module of ``package`` (e.g. ``diffusers.models.unets``) made absolute,
    deepest first (``...x`` before ``..x`` before ``.x``)."""
    parts = package.split(".")
    for dots in range(len(parts), 0, -1):
        target = ".".join(parts[: len(parts) - dots + 1])
        src = re.sub(r"from " + r"\." * dots + r"(\w)", "from " + target + r".\1", src)
    return src


def load_brushnet_fork(folder: Path) -> ModuleType:
    """A namespace with the fork's ``BrushNetModel``, ``UNet2DConditionModel`` (with BrushNet's residual
    inputs) and ``StableDiffusionBrushNetPipeline``; raises ``LookupError`` when the mirror is absent."""
    files = {"blocks": "src/diffusers/models/unets/unet_2d_blocks.py",
             "unet": "src/diffusers/models/unets/unet_2d_condition.py",
             "model": "src/diffusers/models/brushnet.py",
             "pipe": "src/diffusers/pipelines/brushnet/pipeline_brushnet.py"}
    sources = {k: _show(BRUSHNET_REPO, v) for k, v in files.items()}
    missing = [files[k] for k, v in sources.items() if v is None]
    if missing:
        raise LookupError(f"the TencentARC/BrushNet mirror is not at {BRUSHNET_REPO} (or lacks {', '.join(missing)})")
    blocks, unet = PREFIX + "blocks", PREFIX + "unet"
    src = {
        "blocks": _absolute(sources["blocks"], "diffusers.models.unets"),
        "unet": _absolute(sources["unet"].replace("from .unet_2d_blocks import", f"from {blocks} import"),
                          "diffusers.models.unets"),
        "model": _absolute(sources["model"].replace("from .unets.unet_2d_blocks import", f"from {blocks} import")
                           .replace("from .unets.unet_2d_condition import", f"from {unet} import"), "diffusers.models"),
        "pipe": _absolute(sources["pipe"], "diffusers.pipelines.brushnet"),
    }
    src["pipe"] = src["pipe"].replace(
        "from diffusers.models import AutoencoderKL, BrushNetModel, ImageProjection, UNet2DConditionModel",
        f"from diffusers.models import AutoencoderKL, ImageProjection\nfrom {PREFIX}model import BrushNetModel\n"
        f"from {unet} import UNet2DConditionModel")
    # diffusers renamed the SD LoRA mixin since the fork was made (same behaviour for this use)
    src["pipe"] = re.sub(r"\bLoraLoaderMixin\b", "StableDiffusionLoraLoaderMixin", src["pipe"])
    folder.mkdir(parents=True, exist_ok=True)
    mods = {k: _import(PREFIX + k, src[k], folder) for k in ("blocks", "unet", "model", "pipe")}
    ns = ModuleType("public_brushnet")
    ns.BrushNetModel = mods["model"].BrushNetModel
    ns.UNet2DConditionModel = mods["unet"].UNet2DConditionModel
    ns.StableDiffusionBrushNetPipeline = mods["pipe"].StableDiffusionBrushNetPipeline
    return ns


def load_powerpaint_ca(folder: Path) -> ModuleType:
    """PowerPaint v2's ``BrushNetModel`` (``BrushNet_CA.py``) and its UNet; ``LookupError`` when absent."""
    files = {"ppblocks": "powerpaint/models/unet_2d_blocks.py", "ppunet": "powerpaint/models/unet_2d_condition.py",
             "ppca": "powerpaint/models/BrushNet_CA.py"}
    sources = {k: _show(POWERPAINT_REPO, v) for k, v in files.items()}
    missing = [files[k] for k, v in sources.items() if v is None]
    if missing:
        raise LookupError(f"the open-mmlab/PowerPaint mirror is not at {POWERPAINT_REPO} (or lacks "
                          f"{', '.join(missing)})")
    fix = {"from .unet_2d_blocks import": f"from {PREFIX}ppblocks import",
           "from .unet_2d_condition import": f"from {PREFIX}ppunet import"}
    folder.mkdir(parents=True, exist_ok=True)
    mods = {}
    for k in ("ppblocks", "ppunet", "ppca"):
        src = sources[k]
        for old, new in fix.items():
            src = src.replace(old, new)
        mods[k] = _import(PREFIX + k, src, folder)
    ns = ModuleType("public_powerpaint_ca")
    ns.BrushNetModel = mods["ppca"].BrushNetModel
    ns.UNet2DConditionModel = mods["ppunet"].UNet2DConditionModel
    return ns
