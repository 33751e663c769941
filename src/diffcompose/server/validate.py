"""A multipart request -> a :class:`~diffcompose.server.jobs.Submission`, or one-line ``InputError``.

Everything a run needs is checked here, before the job is queued, with the same functions
(and so the same messages) as the CLI and the Python API: the task's ``prepare`` for
images, masks and boxes, :func:`~diffcompose.methods.registry.resolve_engine` for the
engine, the engine's options dataclass for its options, ``check_seed``/``check_margin``.
A queued job can then only fail on what cannot be known in advance (missing weights, a
cancel).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Iterator

from diffcompose.errors import DiffComposeError, InputError
from diffcompose.methods.engine import check_margin
from diffcompose.methods.options import build_options, check_seed, field_types, unwrap_optional
from diffcompose.methods.registry import NO_DEFAULT_MODEL, get_engine_info, options_for, resolve_engine
from diffcompose.methods.tasks import TASK_SPECS, prepare
from diffcompose.models.hub import TINY
from diffcompose.server import schema
from diffcompose.server.jobs import Submission
from diffcompose.server.uploads import (
    REQUEST_KEYS, decode_image, in_model_dir, parse_box, resolve_model_name,
)


def _names_weights(cls: type, name: str) -> bool:
    """Options that name weights (``option(..., weights=True)``, or any path): they go through the model-name rule."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    inner, _ = unwrap_optional(field_types(cls)[name])
    return inner is Path or bool(f.metadata.get("weights"))


@contextlib.contextmanager
def blame(*fields: str, aliases: dict[str, str] | None = None) -> Iterator[None]:
    """An error raised inside without a ``field`` gets one: the only field given, or, of several
    (a task's inputs), the one whose name opens its message (the input readers name what they
    read first: "mask is 10x10 but the image is 20x20", "reference mask ..."). ``aliases``: other
    names of a field in messages (``background`` for ``paste``'s ``image``: its keyword)."""
    try:
        yield
    except DiffComposeError as exc:
        if exc.field is None:
            if len(fields) == 1:
                exc.field = fields[0]
            else:
                text = str(exc)
                names = {**{f: f for f in fields}, **(aliases or {})}
                hits = [n for n in names if text.startswith(n.replace("_", " ") + " ")]
                exc.field = names[max(hits, key=len)] if hits else None
        raise


def build_submission(req: dict[str, Any], files: dict[str, bytes], *, max_pixels: int | None,
                     model_dir: Path | None = None, device: str | None = None,
                     dtype: str | None = None) -> Submission:
    """Validate the ``request`` JSON and the uploaded ``files`` (field name -> bytes)."""
    task = req["task"]
    if task not in TASK_SPECS:
        raise InputError(f"unknown task '{task}'; tasks: {', '.join(TASK_SPECS)}")
    inputs = schema.task_inputs(task)
    task_keys = set(schema.value_fields())  # boxes, points and text of any task
    unknown = sorted(k for k in req if k not in REQUEST_KEYS and k not in task_keys)
    if unknown:
        raise InputError(f"unknown key(s) in the request: {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(set(REQUEST_KEYS) | task_keys))}")
    engine_name = req.get("engine", "auto")
    if not isinstance(engine_name, str):
        raise InputError(f"engine must be a name (see /api/engines), got {engine_name!r}", field="engine")
    opt_in = [i["keyword"] for i in inputs if i["keyword"] in TASK_SPECS[task].opt_in and i["name"] in files]
    with blame("engine"):
        if engine_name != "auto":
            get_engine_info(engine_name)  # unknown engine: its own message
        engine, _why = resolve_engine(engine_name, task, opt_in)
        info = get_engine_info(engine)
        info.check_installed()
    seed = check_seed(req.get("seed", 0))
    paste_back = req.get("paste_back", True)
    margin = req.get("margin")
    check_margin(margin, paste_back)

    model = req.get("model")
    if model is not None:
        if info.default_model is None:
            raise InputError(f"engine '{engine}' takes no model", field="model")
        with blame("model"):
            model = resolve_model_name(model, model_dir)
        if model == TINY and not info.tiny:
            raise InputError(f"engine '{engine}' has no tiny model; choose another model", field="model")
    elif info.default_model not in (None, NO_DEFAULT_MODEL) and (
            local := in_model_dir(info.default_model, model_dir)) is not None:
        model = str(local)  # the engine's default model, found in --model-dir

    values = req.get("options") or {}
    if not isinstance(values, dict):
        raise InputError(f"options must be a JSON object of option names and values, got {values!r}",
                         field="options")
    cls = options_for(engine, task)
    values = dict(values)
    for name, value in values.items():
        if name in {f.name for f in dataclasses.fields(cls)} and value is not None and _names_weights(cls, name):
            values[name] = resolve_model_name(value, model_dir, what=f"option {name}")
    options = build_options(cls, values, engine=engine, task=task)

    kwargs: dict[str, Any] = {}
    fields_of_task = {i["name"]: i for i in inputs}
    for field_name in files:
        i = fields_of_task.get(field_name)
        if i is None or i["kind"] not in ("image", "mask"):
            takes = ", ".join(n for n, i in fields_of_task.items() if i["kind"] in ("image", "mask"))
            raise InputError(f"task {task} takes no '{field_name}' upload (it takes: {takes})", field=field_name)
    for i in inputs:
        name, keyword, kind = i["name"], i["keyword"], i["kind"]
        if kind in ("image", "mask"):
            if name in files:
                with blame(name):
                    kwargs[keyword] = decode_image(files[name], name.replace("_", " "), max_pixels)
        elif kind == "box":
            with blame(name):
                box = parse_box(req.get(name))
            if box is not None:
                kwargs[keyword] = box
        elif kind == "points":  # the task parses them (its messages, its limits)
            if req.get(name) is not None:
                kwargs[keyword] = req[name]
        elif req.get(name) is not None:
            if not isinstance(req[name], str):
                raise InputError(f"{name} must be text, got {req[name]!r}", field=name)
            kwargs[keyword] = req[name]
        if i["required"] and keyword not in kwargs:
            where = "an uploaded file" if kind in ("image", "mask") else f"\"{name}\" in the request JSON"
            raise InputError(f"{task} needs '{name}' ({where})", field=name)
    for key in sorted(task_keys):
        if req.get(key) is not None and key not in fields_of_task:
            raise InputError(f"task {task} takes no {key}", field=key)
    with blame(*(i["name"] for i in inputs), aliases={i["keyword"]: i["name"] for i in inputs}):
        job = prepare(task, kwargs, max_pixels)
    return Submission(task=task, engine=engine, job=job, options=options, seed=seed, model=model, device=device,
                      dtype=dtype, paste_back=bool(paste_back), margin=margin)

