"""Device and dtype: cuda (fp16, bf16 where fp16 is unsupported) > mps (fp32) > cpu (fp32)."""

from __future__ import annotations

import torch

from diffcompose.errors import InputError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_device(name: str | None = None) -> torch.device:
    """The requested device, or the best available one."""
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device must be cpu, cuda, cuda:N or mps, got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"--device {name}: MPS is not available here (use --device cpu)")
    return dev


def pick_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    """The requested dtype, or fp16 on CUDA (bf16 if the GPU lacks fast fp16), fp32 elsewhere."""
    if name is not None:
        try:
            dtype = _DTYPES[name]
        except KeyError:
            raise InputError(f"--dtype must be one of float32, float16, bfloat16, got {name!r}") from None
        if device.type == "cpu" and dtype == torch.float16:
            raise InputError("--dtype float16 is not supported on the CPU; use float32 or bfloat16")
        return dtype
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.float16 if major >= 7 or not torch.cuda.is_bf16_supported() else torch.bfloat16
    return torch.float32


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator every random draw of a run flows from (on CPU, so results match across devices)."""
    return torch.Generator(device="cpu").manual_seed(int(seed))
