"""Which engines exist, which tasks each serves with which options, and which one ``auto`` picks.

An engine registers one :class:`EngineInfo`: the dotted path of its class (imported on
first use, so ``--help`` and the classical engines never import torch), its options
dataclass per task, its ``auto`` priority, and the packages it needs (with the extra that
installs them, for a one-line error on a base install).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from diffcompose.errors import InputError, MissingExtraError
from diffcompose.methods.tasks import TASK_SPECS

#: The built-in tasks (an engine implements a subset); :func:`~.tasks.register_task` may add more.
TASKS = tuple(TASK_SPECS)

#: Packages of the ``diffusion`` extra, as importable names.
DIFFUSION = ("torch", "diffusers", "transformers", "safetensors")


@dataclass(frozen=True)
class EngineInfo:
    """An engine as the registry knows it, before its class is imported.

    ``priority``: ``auto`` tries engines from the highest. ``wants_accelerator``: ``auto``
    passes over it when no CUDA/MPS device is present (unless no other engine serves the
    task). ``default_model``: what ``--model`` means when not given (``None``: the engine
    takes no model).
    """

    name: str
    target: str  # "package.module:Class"
    tasks: dict[str, type] = field(default_factory=dict)
    priority: int = 0
    wants_accelerator: bool = False
    requires: tuple[str, ...] = ()
    extra: str | None = None
    default_model: str | None = None
    summary: str = ""

    def __post_init__(self) -> None:
        for task, options in self.tasks.items():
            if task not in TASK_SPECS:
                raise ValueError(f"unknown task {task!r}")
            if not dataclasses.is_dataclass(options):
                raise TypeError(f"options of {self.name} {task} must be a dataclass")

    @property
    def needs_torch(self) -> bool:
        return "torch" in self.requires

    def missing_packages(self) -> list[str]:
        return [p for p in self.requires if importlib.util.find_spec(p) is None]

    def check_installed(self) -> None:
        missing = self.missing_packages()
        if missing:
            how = f"pip install 'diffcompose[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
            raise MissingExtraError(f"engine '{self.name}' needs {', '.join(missing)}, which is not installed; "
                                    f"install it with: {how}")

    def load_class(self) -> type:
        """The engine class (imports its module: torch for diffusion engines)."""
        self.check_installed()
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


_ENGINES: dict[str, EngineInfo] = {}


def register(info: EngineInfo) -> EngineInfo:
    """Add (or replace) an engine; returns it."""
    _ENGINES[info.name] = info
    return info


def unregister(name: str) -> None:
    _ENGINES.pop(name, None)


def all_engines() -> list[EngineInfo]:
    return list(_ENGINES.values())


def get_engine_info(name: str) -> EngineInfo:
    try:
        return _ENGINES[name]
    except KeyError:
        raise InputError(f"unknown engine '{name}'; engines: {', '.join(_ENGINES)}") from None


def engines_for(task: str) -> list[str]:
    """Engines serving ``task``, in registration order (what ``--help`` lists)."""
    return [name for name, info in _ENGINES.items() if task in info.tasks]


def options_for(engine: str, task: str) -> type:
    info = get_engine_info(engine)
    if task not in info.tasks:
        raise InputError(f"engine '{engine}' cannot {task}; engines for {task}: {', '.join(engines_for(task))}")
    return info.tasks[task]


def resolve_engine(name: str, task: str) -> tuple[str, str]:
    """``(engine, why)``: ``name`` itself, or for ``auto`` the first engine by priority that suits this machine."""
    available = engines_for(task)
    if not available:
        raise InputError(f"no engine implements '{task}'")
    if name != "auto":
        options_for(name, task)
        return name, "chosen with --engine"
    if len(available) == 1:
        return available[0], f"the only engine for {task}"
    ranked = sorted((_ENGINES[e] for e in available), key=lambda i: -i.priority)  # stable: ties keep order
    from diffcompose.models.device import accelerator_available

    skipped = []
    for info in ranked:
        missing = info.missing_packages()
        if missing:
            skipped.append(f"{info.name} needs {', '.join(missing)}")
            continue
        if info.wants_accelerator:
            accel = accelerator_available()
            if not accel:
                skipped.append(f"{info.name} wants a CUDA or MPS device and none is present "
                               f"(--engine {info.name} forces it)")
                continue
            return info.name, f"highest priority for {task} ({info.priority}) and a {accel.upper()} device is present"
        lead = "highest priority" if not skipped else "next by priority"
        return info.name, f"{lead} for {task} ({info.priority})" + (f"; {'; '.join(skipped)}" if skipped else "")
    raise InputError(f"no engine for {task} can run here: {'; '.join(skipped)}")


def describe(task: str) -> dict[str, Any]:
    """Engines of ``task`` with their options classes (for the CLI and, later, the HTTP schema)."""
    return {e: _ENGINES[e].tasks[task] for e in engines_for(task)}
