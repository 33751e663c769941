"""Engines. Each engine package registers itself in its light ``options`` module (its options
dataclasses and one :class:`~.registry.EngineInfo`); :data:`ENGINE_PACKAGES` is the one list
of them. The heavy engine class (torch, diffusers) is imported when the engine is first used.
"""

import importlib

from diffcompose.methods.registry import (
    TASKS, EngineInfo, all_engines, engines_for, get_engine_info, options_for, register, resolve_engine,
)

#: Engine packages, in the order ``--help`` lists them. Adding an engine = adding its name here.
ENGINE_PACKAGES = ("classical", "freecompose", "pbe", "sdinpaint", "smartbrush", "sam", "anydoor", "brushnet",
                   "powerpaint", "pbsketch", "objectstitch", "unipaint")

for _name in ENGINE_PACKAGES:
    importlib.import_module(f"diffcompose.methods.{_name}.options")

__all__ = ["TASKS", "ENGINE_PACKAGES", "EngineInfo", "all_engines", "engines_for", "get_engine_info", "options_for",
           "register", "resolve_engine"]
