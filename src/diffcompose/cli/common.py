"""Argument plumbing shared by every command.

Engine options come from the engines' options dataclasses (see
:mod:`diffcompose.methods.registry`): one flag per field, grouped by engine in ``--help``,
defaulting to ``None`` so only what the user typed reaches the engine (which then applies
its own defaults and refuses flags it does not use).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from diffcompose.errors import InputError, OutputExistsError
from diffcompose.inputs.images import DEFAULT_MAX_PIXELS, output_format, save_image
from diffcompose.methods import engines_for, implementations

OPT_PREFIX = "opt_"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit code 2)."""

    def error(self, message: str) -> typing.NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _tuple_parser(elem: type) -> Any:
    def parse(text: str) -> tuple:
        try:
            return tuple(elem(p) for p in text.replace(",", " ").split())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {elem.__name__} values, got {text!r}") from None
    parse.__name__ = f"{elem.__name__} list"
    return parse


def _argument_kwargs(tp: Any) -> dict[str, Any]:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        return {"choices": choices, "type": type(choices[0])}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is tuple:
        return {"type": _tuple_parser(typing.get_args(tp)[0]), "metavar": "A,B"}
    if tp in (int, float, str):
        return {"type": tp}
    if tp is Path:
        return {"type": Path}
    raise TypeError(f"unsupported option type {tp!r}")


def add_engine_options(parser: argparse.ArgumentParser, task: str) -> None:
    """``--engine`` and one flag per field of every engine's options for ``task``."""
    engines = engines_for(task)
    choices = (["auto"] if len(engines) > 1 else []) + engines
    default = "auto" if len(engines) > 1 else engines[0]
    parser.add_argument("--engine", choices=choices, default=default,
                        help=f"which engine does the work (default: {default})")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice (default: 0)")
    seen: set[str] = set()
    for impl in implementations(task):
        group = parser.add_argument_group(f"{impl.engine} engine options" + (f" ({impl.summary})" if impl.summary else ""))
        hints = typing.get_type_hints(impl.options)
        for f in dataclasses.fields(impl.options):
            if f.name in seen:
                continue
            seen.add(f.name)
            shown = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            help_text = f.metadata.get("help", "")
            if shown is not None:
                help_text += f" (default: {','.join(map(str, shown)) if isinstance(shown, tuple) else shown})"
            kwargs = _argument_kwargs(hints[f.name])
            if "choices" not in kwargs and "action" not in kwargs:
                kwargs.setdefault("metavar", f.name.upper())
            group.add_argument("--" + f.name.replace("_", "-"), dest=OPT_PREFIX + f.name, default=None,
                               help=help_text, **kwargs)


def add_task_flags(parser: argparse.ArgumentParser, task: str, *, paste_back: bool = True,
                   runtime: bool = True) -> None:
    """The flags every editing command shares: output, paste-back, engine options, runtime, limits."""
    add_output(parser)
    if paste_back:
        add_paste_back(parser)
    add_engine_options(parser, task)
    if runtime:
        add_runtime(parser)
    add_limits(parser)


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the user actually gave."""
    return {k[len(OPT_PREFIX):]: v for k, v in vars(args).items() if k.startswith(OPT_PREFIX) and v is not None}


def add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output file; the format follows its extension (.png, .jpg, .webp, .bmp, .tiff)")
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")


def add_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images with more pixels than this (default: {DEFAULT_MAX_PIXELS})")


def add_paste_back(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-paste-back", dest="paste_back", action="store_false",
                        help="return the engine's whole output instead of restoring original pixels outside the region")
    parser.add_argument("--margin", type=int, default=None,
                        help="width in pixels of the feathered seam around the region (default: 1%% of the long side)")


def add_runtime(parser: argparse.ArgumentParser) -> None:
    """Flags of the diffusion engines (ignored by the classical one)."""
    parser.add_argument("--model", default=None,
                        help="diffusion model: hub id, local diffusers directory, or 'tiny' (random weights, smoke tests)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="compute dtype (default: float16 on CUDA, float32 elsewhere)")


def check_output_args(args: argparse.Namespace, *inputs: Path | None) -> None:
    """Fail before any work if the output could not be written."""
    out: Path = args.output
    output_format(out)
    if not out.parent.exists():
        raise InputError(f"output folder does not exist: {out.parent}")
    for p in inputs:
        if p is not None and Path(p).exists() and out.exists() and out.resolve() == Path(p).resolve():
            raise InputError(f"output {out} is one of the inputs; choose another output path")
    if out.exists() and not args.force:
        raise OutputExistsError(f"output {out} exists; pass --force to overwrite it")
    if getattr(args, "margin", None) is not None and args.margin < 0:
        raise InputError(f"--margin must be >= 0, got {args.margin}")


def write(image: Any, args: argparse.Namespace, *inputs: Path | None) -> None:
    path = save_image(image, args.output, force=args.force, protected=tuple(p for p in inputs if p is not None))
    print(path)
