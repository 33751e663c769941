"""LPIPS's learned channel weights (v0.1, VGG16), read as data from a package that ships them.

LPIPS (Zhang et al., 2018) weighs the unit-normalised VGG16 feature differences of each
layer with a learned non-negative vector (one 1x1 convolution per layer, no bias). Those five
small vectors (64, 128, 256, 512, 512 values; sums about 6.9, 8.9, 17.5, 51.5, 47.0) are the
difference between a perceptual term that holds an object's identity and one that is
numerically inert. They ship inside maintained PyPI packages (``torchmetrics``, ``lpips``):
the file is located without importing the package (so torchvision is never imported) and
read with ``weights_only``. A model folder may carry its own ``vgg/lpips.safetensors``
(``lin0`` .. ``lin4``), which is how the tiny test model provides heads of its widths.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from diffcompose.errors import InputError, WeightsMissingError

#: Where the v0.1 VGG heads sit inside packages that ship them.
PACKAGE_FILES = (("torchmetrics", "functional/image/lpips_models/vgg.pth"), ("lpips", "weights/v0.1/vgg.pth"))
LOCAL_FILE = "lpips.safetensors"


def _package_file(package: str, relative: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / relative
        if path.is_file():
            return path
    return None


def find_heads(vgg_dir: Path | None = None) -> Path:
    """The heads file: ``vgg_dir/lpips.safetensors`` if present, else the one an installed package ships."""
    if vgg_dir is not None and (Path(vgg_dir) / LOCAL_FILE).is_file():
        return Path(vgg_dir) / LOCAL_FILE
    for package, relative in PACKAGE_FILES:
        path = _package_file(package, relative)
        if path is not None:
            return path
    raise WeightsMissingError("LPIPS channel weights not found: install them with pip install torchmetrics "
                              "(or put lpips.safetensors with lin0..lin4 next to the VGG16 weights)")


def load_heads(path: Path, widths: tuple[int, ...]) -> list[torch.Tensor]:
    """Five float32 vectors of the VGG widths, from a ``.pth`` (read weights-only) or ``.safetensors`` file."""
    if path.suffix == ".safetensors":
        from diffcompose.models.hub import read_safetensors

        state = read_safetensors(path, "LPIPS weights")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise InputError(f"LPIPS weights {path} are not a weights-only checkpoint") from None
    heads = []
    for i, width in enumerate(widths):
        key = next((k for k in (f"lin{i}.model.1.weight", f"lin{i}.weight", f"lin{i}") if k in state), None)
        if key is None or state[key].numel() != width:
            raise InputError(f"LPIPS weights {path} do not fit VGG widths {widths} (layer {i})")
        heads.append(state[key].detach().float().reshape(width))
    return heads
