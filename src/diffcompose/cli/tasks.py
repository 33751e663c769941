"""Every task command (``remove``, ``paste``, ... ``insert``), generated from its
:class:`~diffcompose.methods.tasks.TaskSpec`.

Each input becomes a positional argument or a flag with its help; a :class:`~.tasks.OneOf`
of single inputs becomes a required mutually exclusive group; then the flags every task
shares (:func:`~diffcompose.cli.common.add_task_flags`). Running one hands the inputs and
the engine options as typed to :func:`diffcompose.api.run_from_text` and writes what comes back. A task registered with
:func:`~diffcompose.methods.tasks.register_task` gets its command here without any edit,
as soon as an engine serves it.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from diffcompose.cli import common
from diffcompose.methods import all_engines, engines_for
from diffcompose.methods.tasks import TASK_SPECS, InputSpec, TaskSpec

#: Appended to the description of a task returning several images.
NUMBERED = " With --num-images N > 1 the outputs are OUT_0.png ... OUT_{N-1}.png."


def register(sub: argparse._SubParsersAction) -> None:
    for spec in TASK_SPECS.values():
        if engines_for(spec.name):  # a task no engine serves has no command
            add_task_command(sub, spec)


def _help(param: InputSpec, task: str) -> str | None:
    text = param.help
    if param.opt_in:  # named from the registry: the engines that declare it (the others refuse it)
        taking = [i.name for i in all_engines() if param.keyword in i.takes.get(task, ())]
        text += f" (only some engines take it: {', '.join(taking) or 'none yet'})"
    if param.kind == "box":  # a negative coordinate would read as a flag
        text += f" (end-exclusive; {param.flag}=... for a value starting with '-')"
    return text.replace("%", "%%") or None  # argparse formats help with %


def _add_input(parser: Any, param: InputSpec, default: Any, required: bool, task: str) -> None:
    kw: dict[str, Any] = {"help": _help(param, task)}
    if param.is_file:
        kw["type"] = Path
    if param.positional:
        if not required:
            kw.update(nargs="?", default=default)
        parser.add_argument(param.keyword, metavar=param.flag, **kw)
        return
    if param.choices:
        kw["choices"] = list(param.choices)
    elif param.flag != "--" + param.keyword.replace("_", "-"):  # --object for obj: OBJECT, not OBJ
        kw["metavar"] = param.flag.lstrip("-").upper().replace("-", "_")
    if required:
        kw["required"] = True
    else:
        kw["default"] = default
    parser.add_argument(param.flag, dest=param.keyword, **kw)


def add_task_command(sub: argparse._SubParsersAction, spec: TaskSpec) -> argparse.ArgumentParser:
    description = (spec.description or spec.summary) + (NUMBERED if spec.output == "images" else "")
    engines = engines_for(spec.name)  # named from the registry, so a new engine is listed without an edit here
    help_text = (spec.cli_help or spec.summary) + (f" ({', '.join(engines)})" if engines else "")
    p = sub.add_parser(spec.name, help=help_text, description=description)
    groups = [g for g in spec.one_of if g.single]  # argparse can say "exactly one" of single flags only
    made: dict[int, Any] = {}  # index in groups -> its argparse group, made with its first member
    defaults = spec.defaults()
    for param in spec.params:
        index = next((i for i, g in enumerate(groups) if param.keyword in g.keywords), None)
        if index is None:
            _add_input(p, param, defaults.get(param.keyword), param.required, spec.name)
            continue
        if index not in made:
            made[index] = p.add_mutually_exclusive_group(required=True)
        _add_input(made[index], param, defaults.get(param.keyword), False, spec.name)
    if spec.mask_output:
        heads = [i.name for i in all_engines() if i.predicts_mask and spec.name in i.tasks]
        p.add_argument("--mask-output", type=Path, default=None,
                       help=spec.mask_output + (f" (engines with a mask head: {', '.join(heads)})" if heads else ""))
    common.add_task_flags(p, spec.name, paste_back=spec.paste_back, runtime=spec.devices)
    p.set_defaults(func=functools.partial(run_task, spec.name))
    return p


def run_task(task: str, args: argparse.Namespace) -> None:
    """Check the outputs, run ``task`` on the inputs the command got, write the image(s) (and masks)."""
    import diffcompose.api as api
    from diffcompose.methods.engine import finish

    spec = TASK_SPECS[task]
    inputs = {p.keyword: getattr(args, p.keyword) for p in spec.params}
    files = tuple(inputs[p.keyword] for p in spec.params if p.is_file)
    mask_output = getattr(args, "mask_output", None)

    def call() -> Any:
        kw, options = common.run_kwargs(args), common.engine_options(args)
        if mask_output is None:
            return api.run_from_text(task, inputs, options, **kw)
        masks: list = []
        images = api.run_from_text(task, inputs, options, masks=masks, **kw)
        return images, finish(masks)

    common.write_batch(args, files, call, mask_output=mask_output, numbered=spec.output == "images")
