"""Options dataclasses: how engines declare them, and how values become a validated instance.

Each engine declares, per task, a frozen dataclass whose fields are its options (default,
type, help in ``metadata``; range checks in ``__post_init__``). That one class is the
source of truth for the Python API, the CLI flags and their help. :func:`build_options`
turns values into an instance, by that engine's own rules: its types, its ``Literal``
choices, its checks. NaN and infinity are refused for every float option.

Where text is parsed: a command line (and a config file) can only say ``--radius 5`` as text,
so there ``"5"`` is read by the option's type (``from_text=True``). A Python caller (and a
JSON body or manifest, which have types) passes values of the option's type: ``radius="5"``,
``steps=2.0`` or ``radius=True`` is refused in one line naming the option, as the CLI
refuses ``--radius five``. Text itself must be valid Unicode (:func:`check_text`).

The options the diffusion samplers share (steps, guidance scale, scheduler, ...) have their
ranges here, once: an engine's class extends :class:`SamplerOptions` and declares them with
:func:`sampler_option`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from diffcompose.errors import SHOWN_CHARS, InputError, named, shown


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


def option_named(name: str) -> str:
    """Option ``name`` as a message names it: its flag on the CLI (``--steps``), its name over HTTP (``steps``)."""
    return named(flag(name), name)


class OptionRangeError(InputError):
    """An option value outside its range; the range itself rides along (``name``, ``lo``, ``hi``,
    ``lo_open``, ``hi_open``), so the HTTP schema can show the bounds the dataclass checks."""

    def __init__(self, message: str, name: str, lo: float | None, hi: float | None, lo_open: bool,
                 hi_open: bool) -> None:
        super().__init__(message)
        self.name, self.lo, self.hi, self.lo_open, self.hi_open = name, lo, hi, lo_open, hi_open


# --------------------------------------------------------------------------- text

def check_text(name: str, value: Any) -> str:
    """``value`` if it is text that is valid Unicode, else a one-line :class:`InputError` naming ``name``.

    The one rule for text from outside (prompts, text options): a ``str`` that UTF-8 can
    encode. ``bytes`` are refused (we do not guess their encoding), and so are lone
    surrogates: from Python or JSON (``"\\udcff"``), or what a shell argument holding invalid
    UTF-8 becomes (Python hands its bytes over as the surrogates U+DC80..U+DCFF). Refused
    here, before any model loads, rather than failing in a tokenizer after it.
    """
    if not isinstance(value, str):
        kind = "bytes" if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise InputError(f"{name} must be text (a str), got {kind} {shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(value[exc.start])
        what = f"the invalid UTF-8 byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else \
            f"a lone surrogate U+{char:04X}"
        raise InputError(f"{name} is not valid text: {what} at character {exc.start}; give UTF-8 text") from None
    return value


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
    raise OptionRangeError(f"{option_named(name)} must be {' and '.join(parts)}, got {shown(value)}", name, lo, hi,
                           lo_open, hi_open)


#: Seeds are 0 .. 2**63 - 1 (what every generator used here takes).
MAX_SEED = 2**63 - 1


def check_seed(seed: Any, name: str = named("--seed", "seed")) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"{name} must be a whole number from 0 to 2**63-1, got {shown(seed)}")
    return int(seed)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise InputError(f"{option_named(name)} must be one of {', '.join(map(str, choices))}, got {shown(value)}")


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


def coerce(name: str, tp: Any, value: Any, *, from_text: bool = False, label: Callable[[str], str] = flag) -> Any:
    """``value`` as type ``tp``, or a one-line :class:`InputError` naming the option as ``label(name)``
    (a flag by default).

    ``from_text``: the value may be text standing for another type (a command line, a config
    file): ``"5"`` for an int, ``"yes"`` for a bool, ``"1e-5"`` for a float. Otherwise (Python,
    JSON) only a value of the option's type is taken: an int for an int (never a bool or a
    float), any real number but a bool for a float, a bool for a bool, a ``str`` for text.
    """
    if label is not flag:
        try:
            return coerce(name, tp, value, from_text=from_text)
        except InputError as exc:
            raise InputError(str(exc).replace(flag(name), label(name), 1)) from None
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise InputError(f"{option_named(name)} needs a value")
    parse = from_text and isinstance(value, str)
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        if parse and not isinstance(choices[0], str):
            value = coerce(name, type(choices[0]), value, from_text=True)
        check_choice(name, value, choices)
        return value
    if inner is bool:
        return _as_bool(name, value, parse)
    if inner is int:
        return _as_int(name, value, parse, from_text)
    if inner is float:
        return _as_float(name, value, parse)
    if inner is str:
        return check_text(option_named(name), value)
    if inner is Path:
        if not isinstance(value, (str, Path)):
            raise InputError(f"{option_named(name)} must be a path, got {shown(value)}")
        return Path(value)
    if origin is tuple:
        elem = typing.get_args(inner)[0]
        if parse:
            items = value.replace(",", " ").split()
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise InputError(f"{option_named(name)} must be a list, got {shown(value)}")
        return tuple(coerce(name, elem, v, from_text=from_text) for v in items)
    raise TypeError(f"unsupported option type {tp!r} for {name}")


def _as_bool(name: str, value: Any, parse: bool) -> bool:
    if parse and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"{option_named(name)} must be true or false, got {shown(value)}")


def _as_int(name: str, value: Any, parse: bool, from_text: bool) -> int:
    """An int option's value; a float with no fraction passes only in a text source (a config's ``1.0e3``)."""
    if parse:
        try:
            return int(value.strip())
        except ValueError:
            raise InputError(f"{option_named(name)} must be an integer, got {shown(value)}") from None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if from_text and isinstance(value, float) and value.is_integer():
        return int(value)
    raise InputError(f"{option_named(name)} must be an integer, got {shown(value)}")


def _as_float(name: str, value: Any, parse: bool) -> float:
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not (parse or real):
        raise InputError(f"{option_named(name)} must be a number, got {shown(value)}")
    try:
        number = float(value.strip() if parse else value)
    except ValueError:
        raise InputError(f"{option_named(name)} must be a number, got {shown(value)}") from None
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"{option_named(name)} must be a finite number, got {shown(value)}")
    return number


def build_options(cls: type, values: dict[str, Any], *, engine: str, task: str, from_text: bool = False) -> Any:
    """An instance of options dataclass ``cls`` from ``values``, by its own types, choices and checks.

    ``from_text``: the values are text as typed on a command line, each parsed by its option's
    type; otherwise (Python keywords, JSON) each must already be of that type (:func:`coerce`).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in fields)
    if unknown:
        names = ", ".join(option_named(k) if k.isidentifier() and len(k) <= SHOWN_CHARS else shown(k)
                          for k in unknown[:10])
        raise InputError(f"engine '{engine}' does not use {names}{' ...' if len(unknown) > 10 else ''} for {task}",
                         field=unknown[0] if len(unknown[0]) <= SHOWN_CHARS else None)
    hints = field_types(cls)
    typed = {k: coerce(k, hints[k], v, from_text=from_text) for k, v in values.items()}
    try:
        return cls(**typed)
    except TypeError as exc:
        raise InputError(f"bad option for {engine} {task}: {exc}") from None


# --------------------------------------------------------------------------- the sampler options engines share

#: The schedulers :func:`diffcompose.models.sampling.make_scheduler` builds; an engine offers some of them.
SCHEDULERS = ("plms", "ddim", "euler", "dpm")


@dataclasses.dataclass(frozen=True)
class SharedOption:
    """One option the diffusion samplers share: its type (``kind``), the default and help most
    engines give it (``help=None``: each engine says its own), and its range (``lo``..``hi``, or
    ``choices``)."""

    kind: type
    default: Any
    help: str | None
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None


#: The sampler options and their ranges, written once. The float ranges are written as floats and
#: the int ones as ints: the error message and the HTTP schema show them as written.
SAMPLER_OPTIONS: dict[str, SharedOption] = {
    "steps": SharedOption(int, 50, "denoising steps", 1, 1000),
    "guidance_scale": SharedOption(float, 7.5, "classifier-free guidance scale: how closely the fill follows the "
                                               "prompt (1 = no guidance)", 0.0, 50.0),
    "scheduler": SharedOption(str, "plms", None, choices=SCHEDULERS),
    "eta": SharedOption(float, 0.0, "DDIM noise (0 = deterministic; ddim only)", 0.0, 1.0),
    "num_images": SharedOption(int, 1, "how many results to make, in one batch", 1, 64),
    "context": SharedOption(float, 0.5, "context around the region in the window, as a share of its size", 0.0,
                            10.0),
    "resolution": SharedOption(int, None, "working size in pixels (default: the model's native size, 512 for SD "
                                          "1.5)", 64, 2048),
}

#: Metadata key of a field made by :func:`sampler_option` (its value: the shared option's name).
SAMPLER_KEY = "sampler"


def sampler_option(name: str, default: Any = dataclasses.MISSING, help: str | None = None) -> Any:
    """The field of shared sampler option ``name`` for an engine's options class (a
    :class:`SamplerOptions`), with the engine's own ``default`` and ``help`` where they differ
    from the shared ones. Its range is the shared one, checked by :class:`SamplerOptions`.

    A field rather than an inherited one, so that each engine keeps its options in its own
    order (the order of its CLI help and of its HTTP schema).
    """
    shared = SAMPLER_OPTIONS[name]
    default = shared.default if default is dataclasses.MISSING else default
    help = help if help is not None else shared.help
    if help is None:
        raise TypeError(f"sampler option {name!r} has no shared help: the engine gives its own")
    return option(default, help, **{SAMPLER_KEY: name})


@functools.lru_cache(maxsize=None)
def sampler_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...] | None, bool], ...]:
    """``(name, choices, nullable)`` of each shared sampler option ``cls`` declares, in field order
    (``choices``: those of the engine's own ``Literal``; ``None`` for a number).

    A declaration that does not fit the shared option (another field name, choices the sampler
    does not have, a number where choices are expected) is a programming error: ``TypeError``.
    """
    hints = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        if SAMPLER_KEY not in f.metadata:
            continue
        inner, nullable = unwrap_optional(hints[f.name])
        choices = typing.get_args(inner) if typing.get_origin(inner) is Literal else None
        if not _fits(f.name, f.metadata[SAMPLER_KEY], inner, choices):
            raise TypeError(f"{cls.__name__}.{f.name} does not fit sampler option {f.metadata[SAMPLER_KEY]!r}")
        out.append((f.name, choices, nullable))
    return tuple(out)


def _fits(field_name: str, shared_name: str, tp: Any, choices: tuple[Any, ...] | None) -> bool:
    """Whether a field (type ``tp``, ``choices`` of its ``Literal``) declared as shared option
    ``shared_name`` is that option: the same name and type, with some of the shared choices
    exactly where the shared option has them."""
    shared = SAMPLER_OPTIONS[shared_name]
    if field_name != shared_name or (choices is None) != (shared.choices is None):
        return False
    if choices is None:
        return tp is shared.kind
    return set(choices) <= set(shared.choices or ())


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
    """Base of a diffusion engine's options: it checks the shared sampler options (steps,
    guidance_scale, scheduler, eta, num_images, context, resolution) that the engine declares
    with :func:`sampler_option`, against their one range in :data:`SAMPLER_OPTIONS`.

    The engine's class extends it: it declares the shared options it has among its own, in its
    own order, with its defaults and help, and its ``__post_init__`` (for its own options) calls
    this one first. An engine whose range differs from the shared one declares that option with
    :func:`option` and checks it itself.
    """

    def __post_init__(self) -> None:
        for name, choices, nullable in sampler_fields(type(self)):
            value = getattr(self, name)
            if value is None and nullable:
                continue
            if choices is not None:
                check_choice(name, value, choices)
            else:
                shared = SAMPLER_OPTIONS[name]
                check_range(name, value, shared.lo, shared.hi)
