"""Options dataclasses: how engines declare them, and how values become a validated instance.

Each engine declares, per task, a frozen dataclass whose fields are its options (default,
type, help in ``metadata``; range checks in ``__post_init__``). That one class is the
source of truth for the Python API, the CLI flags and their help. :func:`build_options`
turns values (Python objects from the API, or strings from the CLI) into an instance, by
that engine's own rules: its types, its ``Literal`` choices, its checks. NaN and infinity
are refused for every float option.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from diffcompose.errors import InputError


def option(default: Any, help: str, *, default_factory: Callable[[], Any] | None = None, **extra: Any) -> Any:
    """A dataclass field with help text for the CLI (``choices`` are read from ``Literal``).

    ``extra`` goes into the field's metadata; ``weights=True`` marks an option that names
    weights (a hub id or a folder), which the HTTP server resolves by its model-name rule.
    """
    meta = {"help": help, **extra}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class OptionRangeError(InputError):
    """An option value outside its range; the range itself rides along (``name``, ``lo``, ``hi``,
    ``lo_open``, ``hi_open``), so the HTTP schema can show the bounds the dataclass checks."""

    def __init__(self, message: str, name: str, lo: float | None, hi: float | None, lo_open: bool,
                 hi_open: bool) -> None:
        super().__init__(message)
        self.name, self.lo, self.hi, self.lo_open, self.hi_open = name, lo, hi, lo_open, hi_open


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise a one-line :class:`OptionRangeError` for an out-of-range option value."""
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if not (too_low or too_high):
        return
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi}")
    raise OptionRangeError(f"{flag(name)} must be {' and '.join(parts)}, got {value}", name, lo, hi, lo_open,
                           hi_open)


#: Seeds are 0 .. 2**63 - 1 (what every generator used here takes).
MAX_SEED = 2**63 - 1


def check_seed(seed: Any, name: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"{name} must be a whole number from 0 to 2**63-1, got {seed!r}")
    return int(seed)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise InputError(f"{flag(name)} must be one of {', '.join(map(str, choices))}, got {value!r}")


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of an options dataclass, by field name."""
    return typing.get_type_hints(cls)


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def coerce(name: str, tp: Any, value: Any, *, label: Callable[[str], str] = flag) -> Any:
    """``value`` as type ``tp`` (strings from the CLI or a config file are parsed), or a one-line
    :class:`InputError` naming the option as ``label(name)`` (a flag by default)."""
    if label is not flag:
        try:
            return coerce(name, tp, value)
        except InputError as exc:
            raise InputError(str(exc).replace(flag(name), label(name), 1)) from None
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise InputError(f"{flag(name)} needs a value")
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        if isinstance(value, str) and not isinstance(choices[0], str):
            value = coerce(name, type(choices[0]), value)
        check_choice(name, value, choices)
        return value
    if inner is bool:
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, bool):
            return value
        raise InputError(f"{flag(name)} must be true or false, got {value!r}")
    if inner is int:
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise InputError(f"{flag(name)} must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise InputError(f"{flag(name)} must be an integer, got {value!r}")
        return int(value)
    if inner is float:
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise InputError(f"{flag(name)} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise InputError(f"{flag(name)} must be a finite number, got {value!r}")
        return number
    if inner is str:
        if not isinstance(value, str):
            raise InputError(f"{flag(name)} must be text, got {value!r}")
        return value
    if inner is Path:
        if not isinstance(value, (str, Path)):
            raise InputError(f"{flag(name)} must be a path, got {value!r}")
        return Path(value)
    if origin is tuple:
        elem = typing.get_args(inner)[0]
        items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
        return tuple(coerce(name, elem, v) for v in items)
    raise TypeError(f"unsupported option type {tp!r} for {name}")


def build_options(cls: type, values: dict[str, Any], *, engine: str, task: str) -> Any:
    """An instance of options dataclass ``cls`` from ``values``, by its own types, choices and checks."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in fields)
    if unknown:
        raise InputError(f"engine '{engine}' does not use {', '.join(flag(k) for k in unknown)} for {task}")
    hints = field_types(cls)
    typed = {k: coerce(k, hints[k], v) for k, v in values.items()}
    try:
        return cls(**typed)
    except TypeError as exc:
        raise InputError(f"bad option for {engine} {task}: {exc}") from None
