"""What the HTTP API says about tasks, engines and options, generated from the registry.

One source of truth: every option the server lists (name, type, default, range, choices,
help) is read from the engines' options dataclasses (:mod:`diffcompose.methods.options`),
and every input (name, kind, required, help) from the task's spec
(:data:`~diffcompose.methods.tasks.TASK_SPECS`). Ranges are not written twice either: they
live in each dataclass's ``__post_init__`` (``check_range``); :func:`option_range` provokes
that check with an extreme value and reads the bounds off the
:class:`~diffcompose.methods.options.OptionRangeError` it raises.

No FastAPI here (plain dicts): the OpenAPI schema, ``/api/engines`` and the tests use it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path
from typing import Any, Literal

from diffcompose.errors import InputError
from diffcompose.methods import all_engines, engines_for, get_engine_info
from diffcompose.methods.options import OptionRangeError, default_of, field_types, unwrap_optional
from diffcompose.methods.tasks import TASK_SPECS, InputSpec, get_task


def input_kind(param: InputSpec) -> str:
    """The kind the page collects: image, mask, box, points, or text (a choice is text the task checks)."""
    return "text" if param.kind == "choice" else param.kind


def task_inputs(task: str) -> list[dict[str, Any]]:
    """Inputs of ``task`` in the order of its spec."""
    return [{"name": p.field_name, "keyword": p.keyword, "kind": input_kind(p), "required": p.required,
             "help": p.about, **({"engines": _taking(task, p.keyword)} if p.opt_in else {})}
            for p in get_task(task).params]


def _taking(task: str, keyword: str) -> list[str]:
    """The engines that take the opt-in input ``keyword`` of ``task`` (the others refuse it)."""
    return [e for e in engines_for(task) if keyword in get_engine_info(e).takes.get(task, ())]


def file_fields() -> tuple[str, ...]:
    """Upload fields a client may send: the image and mask inputs of every task (each is decoded as an
    image; nothing else is read from disk)."""
    return tuple(dict.fromkeys(p.field_name for s in TASK_SPECS.values() for p in s.params if p.is_file))


def value_fields() -> dict[str, InputSpec]:
    """The request JSON's task inputs (boxes, points, text) of every task, by name (the first task's spec of each)."""
    out: dict[str, InputSpec] = {}
    for spec in TASK_SPECS.values():
        for p in spec.params:
            if not p.is_file:
                out.setdefault(p.field_name, p)
    return out


def tasks() -> list[dict[str, Any]]:
    """``GET /api/tasks``: every task with its inputs and the engines that serve it."""
    return [{"name": name, "summary": spec.summary, "output": spec.output,
             "inputs": [{k: v for k, v in i.items() if k != "keyword"} for i in task_inputs(name)],
             "engines": engines_for(name)}
            for name, spec in TASK_SPECS.items() if engines_for(name)]


def _probe(cls: type, name: str, value: Any) -> OptionRangeError | None:
    """The range error the dataclass raises for ``name=value`` (``None``: accepted, or refused otherwise)."""
    try:
        cls(**{name: value})
    except OptionRangeError as exc:
        return exc if exc.name == name else None
    except (InputError, TypeError, ValueError):
        return None
    return None


@functools.lru_cache(maxsize=None)
def option_range(cls: type, name: str) -> tuple[Any, Any, bool, bool]:
    """``(min, max, min_exclusive, max_exclusive)`` of a numeric option as its dataclass checks
    it (``None``: unbounded).

    The check is the engine's own ``check_range`` in ``__post_init__``: a far-out value on
    each side makes it raise an :class:`OptionRangeError` that carries the bounds, so a range
    edited in the dataclass is what the schema shows.
    """
    tp, _ = unwrap_optional(field_types(cls)[name])
    if tp not in (int, float):
        return None, None, False, False
    lo = hi = None
    lo_open = hi_open = False
    big = 10**15 if tp is int else 1e30
    for value in (-big, big):
        err = _probe(cls, name, value)
        if err is None:
            continue
        if err.lo is not None:
            lo, lo_open = (int(err.lo) if tp is int else err.lo), err.lo_open
        if err.hi is not None:
            hi, hi_open = (int(err.hi) if tp is int else err.hi), err.hi_open
    return lo, hi, lo_open, hi_open


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def option_type(tp: Any) -> tuple[str, list[Any] | None]:
    """``(type name, choices)`` of an option type for the API: int, float, bool, str or choice."""
    inner, _ = unwrap_optional(tp)
    if typing.get_origin(inner) is Literal:
        return "choice", list(typing.get_args(inner))
    return {int: "int", float: "float", bool: "bool"}.get(inner, "str"), None


def options_of(cls: type) -> list[dict[str, Any]]:
    """The options of one dataclass as the API lists them."""
    hints = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, choices = option_type(hints[f.name])
        lo, hi, lo_open, hi_open = option_range(cls, f.name)
        out.append({"name": f.name, "type": kind, "default": _json(default_of(f)), "min": lo, "max": hi,
                    "min_exclusive": lo_open, "max_exclusive": hi_open, "choices": choices,
                    "nullable": unwrap_optional(hints[f.name])[1],
                    "help": f.metadata.get("help", "")})
    return out


def engine_models(info: Any, model_dir: Path | None = None) -> list[dict[str, Any]]:
    """The model picker's choices for one engine, from its registration (empty: it takes no model).

    ``tiny`` (when it has a tiny builder), its default hub id (``cached``: in the local
    Hugging Face cache or ``--model-dir``; absent when none is published), then the models
    already here that declare one of its ``model_classes`` or were written for it
    (:func:`~diffcompose.models.hub.engine_class`): hub ids in the cache, folder names of
    ``model_dir``. Files are read, the hub never: a fresh look at each call.
    """
    from diffcompose.methods.registry import NO_DEFAULT_MODEL
    from diffcompose.models.hub import TINY, cached_models, declared_classes, engine_class, in_hub_cache
    from diffcompose.server.uploads import in_model_dir

    if info.default_model is None:
        return []
    out: list[dict[str, Any]] = []
    if info.tiny:
        out.append({"id": TINY, "kind": "tiny"})
    default = None if info.default_model == NO_DEFAULT_MODEL else info.default_model
    if default is not None:
        out.append({"id": default, "kind": "default",
                    "cached": in_hub_cache(default) or in_model_dir(default, model_dir) is not None})
    wanted = {*info.model_classes, engine_class(info.name)}
    here = [m for m in cached_models(wanted) if m != default]
    if model_dir is not None:
        try:
            folders = sorted(p for p in Path(model_dir).iterdir() if p.is_dir())
        except OSError:
            folders = []
        here += [p.name for p in folders
                 if declared_classes(p) & wanted and p.name != (default or "").rsplit("/", 1)[-1]]
    out += [{"id": m, "kind": "cached"} for m in here]
    return out


def engines() -> list[dict[str, Any]]:
    """``GET /api/engines``: each engine, whether it can run here (packages), and its options per task
    (the model picker's ``models`` are added per request: :func:`engine_models`)."""
    out = []
    for info in all_engines():
        missing = info.missing_packages()
        reason = None
        if missing:
            reason = f"needs {', '.join(missing)}" + (f" (pip install 'diffcompose[{info.extra}]')"
                                                      if info.extra else "")
        out.append({"name": info.name, "summary": info.summary, "available": not missing, "reason": reason,
                    "default_model": info.default_model,
                    "tasks": {task: {"options": options_of(cls)} for task, cls in info.tasks.items()}})
    return out


_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}


def options_json_schema(cls: type) -> dict[str, Any]:
    """A JSON schema (OpenAPI 3.1) of one options dataclass: what ``request.options`` may hold."""
    props = {}
    for opt in options_of(cls):
        if opt["type"] == "choice":
            prop: dict[str, Any] = {"enum": opt["choices"]}
        else:
            prop = {"type": _JSON_TYPES[opt["type"]]}
        if opt["min"] is not None:
            prop["exclusiveMinimum" if opt["min_exclusive"] else "minimum"] = opt["min"]
        if opt["max"] is not None:
            prop["exclusiveMaximum" if opt["max_exclusive"] else "maximum"] = opt["max"]
        if opt["nullable"]:
            prop = {"anyOf": [prop, {"type": "null"}]}
        prop["default"] = opt["default"]
        prop["description"] = opt["help"]
        props[opt["name"]] = prop
    return {"type": "object", "properties": props, "additionalProperties": False,
            "title": f"{_package(cls)}.{cls.__name__}"}


def _package(cls: type) -> str:
    """The engine package an options class lives in (``diffcompose.methods.pbe.options`` -> ``pbe``); the
    module itself for a class defined outside a package (a test's)."""
    parts = cls.__module__.split(".")
    return parts[-2] if len(parts) > 1 else parts[0]


#: JSON schema of each kind of value input in the request JSON (the task checks the values).
_VALUE_SCHEMAS: dict[str, Any] = {
    "box": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
    "points": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}},
    "text": {"type": "string"},
}


def openapi_components() -> dict[str, Any]:
    """Schemas added to the OpenAPI document: one per (engine, task) options class, and the job request."""
    schemas: dict[str, Any] = {}
    refs = []
    for info in all_engines():
        for task, cls in info.tasks.items():
            key = f"Options_{info.name.replace('-', '_')}_{task}"
            schemas[key] = options_json_schema(cls)
            refs.append({"$ref": f"#/components/schemas/{key}"})
    props: dict[str, Any] = {
        "task": {"enum": [t["name"] for t in tasks()]},
        "engine": {"type": "string", "default": "auto",
                   "enum": ["auto"] + [e.name for e in all_engines()]},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0},
        "model": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None,
                  "description": "'tiny', a subfolder name of the server's --model-dir, or a hub id (never a path)"},
        "options": {"anyOf": refs, "description": "options of the chosen engine for the task (see /api/engines)"},
        "paste_back": {"type": "boolean", "default": True},
        "margin": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}], "default": None},
    }
    for name, param in sorted(value_fields().items()):
        value = {"enum": list(param.choices)} if param.kind == "choice" else _VALUE_SCHEMAS[input_kind(param)]
        props[name] = {"anyOf": [value, {"type": "null"}], "default": None}
    schemas["JobRequest"] = {"type": "object", "required": ["task"], "properties": props,
                             "additionalProperties": False,
                             "description": "the JSON text of the multipart field 'request'"}
    return schemas
