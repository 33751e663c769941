"""Device and dtype: cuda (fp16, bf16 where fp16 is unsupported) > mps (fp32) > cpu (fp32).

torch is imported inside the functions: ``auto`` asks :func:`accelerator_available` without
making a base install (no torch) or ``--help`` import it.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

from diffcompose.errors import InputError

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def accelerator_available() -> str | None:
    """``"cuda"`` or ``"mps"`` when torch is installed and sees one, else ``None``."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return None


_DEVICE_NAME = re.compile(r"(cpu|mps|cuda)(:\d{1,4})?")


def check_device_name(name: Any) -> None:
    """Refuse a device that is not ``None``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, without importing torch
    (a batch or an evaluation checks its ``--device`` before any work, even when no engine needs torch)."""
    if name is not None and (not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name)):
        raise InputError(f"--device must be cpu, cuda, cuda:N or mps, got {name!r}")


def check_device(name: Any) -> None:
    """:func:`check_device_name`, then, when torch is installed and an accelerator is named, that it is here."""
    check_device_name(name)
    if name is not None and name != "cpu" and importlib.util.find_spec("torch") is not None:
        pick_device(name)


def pick_device(name: str | None = None) -> Any:
    """The requested ``torch.device``, or the best available one."""
    import torch

    if name is None:
        return torch.device(accelerator_available() or "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"--device must be cpu, cuda, cuda:N or mps, got {name!r}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device must be cpu, cuda, cuda:N or mps, got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"--device {name}: MPS is not available here (use --device cpu)")
    return dev


def pick_dtype(device: Any, name: str | None = None) -> Any:
    """The requested ``torch.dtype``, or fp16 on CUDA (bf16 if the GPU lacks fast fp16), fp32 elsewhere."""
    import torch

    if name is not None:
        if name not in _DTYPES:
            raise InputError(f"--dtype must be one of float32, float16, bfloat16, got {name!r}")
        dtype = getattr(torch, _DTYPES[name])
        if device.type == "cpu" and dtype == torch.float16:
            raise InputError("--dtype float16 is not supported on the CPU; use float32 or bfloat16")
        return dtype
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.float16 if major >= 7 or not torch.cuda.is_bf16_supported() else torch.bfloat16
    return torch.float32


def make_generator(seed: int) -> Any:
    """A generator every random draw of a run flows from (on CPU, so results match across devices)."""
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed))
