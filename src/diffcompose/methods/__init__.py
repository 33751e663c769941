"""Engines: each registers the tasks it implements (see :mod:`.registry`).

Importing this package imports only the light ``options`` modules of each engine; the
heavy implementation (torch, diffusers) is imported when a task runs.
"""

from diffcompose.methods.registry import (
    TASKS, Runtime, TaskImpl, build_options, engines_for, get_task, implementations, register, resolve_engine,
)
from diffcompose.methods.classical import options as _classical  # noqa: F401  (registers)
from diffcompose.methods.freecompose import options as _freecompose  # noqa: F401  (registers; after classical)
from diffcompose.methods.pbe import options as _pbe  # noqa: F401  (registers)

__all__ = ["TASKS", "Runtime", "TaskImpl", "build_options", "engines_for", "get_task", "implementations",
           "register", "resolve_engine"]
