"""Which engine implements which task, and with which options.

An engine registers, per task, an *options dataclass* (defaults, types, help, checks in
``__post_init__``) and the dotted path of the function that does the work. The function
is imported on first use, so ``--help`` and the classical engines never import torch. The
CLI builds its flags from the same dataclasses, so the Python API and the CLI cannot
drift apart.

Engine functions take keyword arguments: the validated inputs of the task (arrays in the
internal form of :mod:`diffcompose.inputs`), ``options`` (the dataclass instance) and
``runtime`` (:class:`Runtime`), and return an ``(H, W, 3)`` ``uint8`` array of the input's
size (or a list of them for tasks that make several outputs).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from diffcompose.errors import InputError

log = logging.getLogger(__name__)

#: Tasks the API and CLI know about (an engine implements a subset).
TASKS = ("remove", "paste", "harmonize", "segment", "compose", "paint")


@dataclass
class Runtime:
    """What is common to every engine call: randomness, placement, feedback."""

    seed: int = 0
    device: str | None = None  # None: best available (cuda > mps > cpu)
    dtype: str | None = None  # None: fp16 on cuda (bf16 where fp16 is unsupported), fp32 otherwise
    model: str | None = None  # hub id, local directory or "tiny"; None: the engine's default
    progress: bool = False
    callback: Callable[..., None] | None = None  # per-iteration hook, e.g. for previews


@dataclass(frozen=True)
class TaskImpl:
    engine: str
    task: str
    options: type
    target: str  # "package.module:function"
    needs_torch: bool = False
    summary: str = ""

    def load(self) -> Callable[..., Any]:
        module, _, func = self.target.partition(":")
        return getattr(importlib.import_module(module), func)


_REGISTRY: dict[tuple[str, str], TaskImpl] = {}
_ENGINE_ORDER: list[str] = []


def register(engine: str, task: str, options: type, target: str, *, needs_torch: bool = False, summary: str = "") -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if not dataclasses.is_dataclass(options):
        raise TypeError("options must be a dataclass")
    _REGISTRY[(engine, task)] = TaskImpl(engine, task, options, target, needs_torch, summary)
    if engine not in _ENGINE_ORDER:
        _ENGINE_ORDER.append(engine)


def engines_for(task: str) -> list[str]:
    """Engines implementing ``task``, in registration order (classical first)."""
    return [e for e in _ENGINE_ORDER if (e, task) in _REGISTRY]


def implementations(task: str) -> list[TaskImpl]:
    return [_REGISTRY[(e, task)] for e in engines_for(task)]


def accelerator_available() -> str | None:
    """``"cuda"`` or ``"mps"`` when torch is installed and sees one, else ``None``."""
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return None


def resolve_engine(name: str, task: str) -> tuple[str, str]:
    """Return ``(engine, reason)``; ``auto`` prefers a diffusion engine on CUDA/MPS."""
    available = engines_for(task)
    if not available:
        raise InputError(f"no engine implements '{task}'")
    if name != "auto":
        if (name, task) not in _REGISTRY:
            raise InputError(f"engine '{name}' cannot {task}; engines for {task}: {', '.join(available)}")
        return name, "chosen with --engine"
    diffusion = [e for e in available if _REGISTRY[(e, task)].needs_torch]
    classical = [e for e in available if not _REGISTRY[(e, task)].needs_torch]
    if diffusion and not classical:
        return diffusion[0], f"the only engine for {task}"
    accel = accelerator_available() if diffusion else None
    if accel and diffusion:
        return diffusion[0], f"a {accel.upper()} device is present"
    why = "no CUDA or MPS device" if diffusion else f"the only engine for {task}"
    hint = f"; --engine {diffusion[0]} forces it" if diffusion else ""
    return classical[0], why + hint


def get_task(engine: str, task: str) -> TaskImpl:
    try:
        return _REGISTRY[(engine, task)]
    except KeyError:
        raise InputError(f"engine '{engine}' cannot {task}; engines for {task}: {', '.join(engines_for(task))}") from None


def build_options(impl: TaskImpl, values: dict[str, Any]) -> Any:
    """Instantiate the options dataclass, refusing names the engine does not take."""
    names = {f.name for f in dataclasses.fields(impl.options)}
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise InputError(f"engine '{impl.engine}' does not use {flags} for {impl.task}")
    try:
        return impl.options(**values)
    except TypeError as exc:  # wrong type slipped through from Python callers
        raise InputError(f"bad option for {impl.engine} {impl.task}: {exc}") from None


# ----------------------------------------------------------------------------- option helpers

def option(default: Any, help: str, *, default_factory: Callable[[], Any] | None = None, **extra: Any) -> Any:
    """A dataclass field with help text for the CLI (``choices`` are read from ``Literal``)."""
    meta = {"help": help, **extra}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise a one-line :class:`InputError` for an out-of-range option value."""
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if not (too_low or too_high):
        return
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi}")
    raise InputError(f"--{name.replace('_', '-')} must be {' and '.join(parts)}, got {value}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise InputError(f"--{name.replace('_', '-')} must be one of {', '.join(map(str, choices))}, got {value!r}")
