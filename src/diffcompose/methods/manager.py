"""The engine manager: owns loaded engines, shares them between requests, keeps memory in budget.

Engines are keyed by ``(name, device, dtype, model)``. :meth:`EngineManager.get` returns a
loaded engine (loading it on first use); when the loaded engines together hold more than
``memory_budget`` bytes, the least recently used ones that are not busy are unloaded.
Each engine has its own lock (requests on one engine never interleave on its modules);
requests on different engines run in parallel. The functional API (``dc.remove(...)``),
the CLI and, later, the server and batch runner all go through :func:`default_manager`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

from diffcompose.errors import InputError
from diffcompose.methods.engine import Engine
from diffcompose.methods.registry import get_engine_info

log = logging.getLogger(__name__)

Key = tuple[str, str | None, str | None, str | None]
BUDGET_ENV = "DIFFCOMPOSE_MEMORY_BUDGET"


def parse_bytes(text: str) -> int:
    """``"8GB"``, ``"512MiB"``, ``"1e9"`` -> bytes."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    s = text.strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    try:
        value = float(num) * units[s[len(num):]]
    except (KeyError, ValueError):
        raise InputError(f"memory budget must look like 8GB or 512MiB, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise InputError(f"memory budget must be positive, got {text!r}")
    return int(value)


class EngineManager:
    """Loaded engines, least recently used first; ``memory_budget`` in bytes (``None``: no limit)."""

    def __init__(self, memory_budget: int | None = None) -> None:
        if memory_budget is None and os.environ.get(BUDGET_ENV):
            memory_budget = parse_bytes(os.environ[BUDGET_ENV])
        if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                          or memory_budget <= 0):
            raise InputError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        self.memory_budget = memory_budget
        self._engines: OrderedDict[Key, Engine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, *, device: str | None = None, dtype: str | None = None,
            model: str | None = None) -> Engine:
        """The engine ``name`` for this device, dtype and model, loaded."""
        info = get_engine_info(name)
        info.check_installed()
        key = self._key(name, device, dtype, model)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = info.load_class()(device=device, dtype=dtype, model=model)
                self._engines[key] = engine
            self._engines.move_to_end(key)
        engine.load()  # under the engine's own lock: other engines stay usable meanwhile
        self._evict(keep=engine)
        return engine

    @staticmethod
    def _key(name: str, device: str | None, dtype: str | None, model: str | None) -> Key:
        """One engine per name, device, dtype and model (naming the default model is not naming another)."""
        info = get_engine_info(name)
        return (name, device, dtype, model if info.default_model is None or model != info.default_model else None)

    def is_loaded(self, name: str, *, device: str | None = None, dtype: str | None = None,
                  model: str | None = None) -> bool:
        """Whether :meth:`get` would find that engine loaded (no load, no wait: a job's ``loading`` state)."""
        with self._lock:
            engine = self._engines.get(self._key(name, device, dtype, model))
        return engine is not None and engine.loaded

    def loaded(self) -> list[Engine]:
        with self._lock:
            return [e for e in self._engines.values() if e.loaded]

    def memory_bytes(self) -> int:
        return sum(e.memory_bytes() for e in self.loaded())

    def unload(self, engine: Engine | None = None) -> None:
        """Unload one engine (or all) and forget it."""
        with self._lock:
            victims = [k for k, e in self._engines.items() if engine is None or e is engine]
            engines = [self._engines.pop(k) for k in victims]
        for e in engines:
            e.unload()

    def _evict(self, keep: Engine) -> None:
        if self.memory_budget is None:
            return
        with self._lock:
            candidates = [(k, e) for k, e in self._engines.items() if e is not keep and e.loaded]
        for key, engine in candidates:  # least recently used first
            if self.memory_bytes() <= self.memory_budget:
                return
            if not engine.lock.acquire(blocking=False):
                continue  # busy: a request is running on it
            try:
                log.info("unloading engine %s (memory budget %.1f GB)", engine.name, self.memory_budget / 1e9)
                engine.unload()
            finally:
                engine.lock.release()
            with self._lock:
                self._engines.pop(key, None)


_DEFAULT: EngineManager | None = None
_DEFAULT_LOCK = threading.Lock()


def default_manager() -> EngineManager:
    """The process's manager (what ``dc.remove(...)`` and the CLI use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = EngineManager()
        return _DEFAULT
