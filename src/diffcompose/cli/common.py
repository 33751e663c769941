"""Argument plumbing shared by every command.

Engine options come from the engines' options dataclasses (see
:mod:`diffcompose.methods.options`). Several engines may serve one task with options of the
same name but different types, defaults and choices, so each option *name* is parsed once,
as raw text (``None`` when not given), and only the engine that runs converts and checks
it, by its own dataclass. ``--help`` shows one group per engine with that engine's own
defaults and choices (display-only entries: see :meth:`Parser.add_engine_group`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any, Literal

from diffcompose.errors import InputError, OutputExistsError, cut
from diffcompose.inputs.images import DEFAULT_MAX_PIXELS, check_output_name, output_format, save_image
from diffcompose.methods import engines_for, get_engine_info
from diffcompose.methods.engine import check_margin
from diffcompose.methods.options import default_of, field_types, flag, unwrap_optional
from diffcompose.progress import TqdmBar

OPT_PREFIX = "opt_"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit code 2)."""

    def error(self, message: str) -> typing.NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)

    def add_engine_group(self, title: str, entries: list[argparse.Action]) -> None:
        """A help section listing ``entries``; they are shown only (parsing uses the shared raw flags)."""
        group = self.add_argument_group(title)
        group._group_actions.extend(entries)


def _is_bool(tp: Any) -> bool:
    return unwrap_optional(tp)[0] is bool


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _help_entry(name: str, tp: Any, f: dataclasses.Field) -> argparse.Action:
    """A display-only action: this engine's help, default and choices for ``--name``."""
    inner, _ = unwrap_optional(tp)
    text = f.metadata.get("help", "")
    default = default_of(f)
    if default is not None:
        text += f" (default: {_shown(default)})"
    text = text.replace("%", "%%")  # argparse formats help with %
    if inner is bool:
        return argparse.BooleanOptionalAction([flag(name)], dest=name, help=text)
    choices = typing.get_args(inner) if typing.get_origin(inner) is Literal else None
    metavar = None if choices else ("A,B" if typing.get_origin(inner) is tuple else name.upper())
    return argparse.Action([flag(name)], dest=name, help=text, choices=choices, metavar=metavar)


def add_engine_options(parser: Parser, task: str, *, runtime: bool = True) -> None:
    """``--engine``, ``--seed``, one raw flag per engine option name, and one help group per engine."""
    engines = engines_for(task)
    choices = (["auto"] if len(engines) > 1 else []) + engines
    default = "auto" if len(engines) > 1 else engines[0]
    parser.add_argument("--engine", choices=choices, default=default,
                        help=f"which engine does the work (default: {default}; auto picks by priority and says why)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice (default: 0)")
    kinds: dict[str, set[bool]] = {}
    with_model = False
    for name in engines:
        info = get_engine_info(name)
        hints = field_types(info.tasks[task])
        entries = []
        if runtime and info.default_model is not None:
            with_model = True
            entries.append(argparse.Action(["--model"], dest="model", metavar="MODEL", help=(
                f"hub id, local directory, or 'tiny' (random weights, smoke tests) (default: {info.default_model})")))
        for f in dataclasses.fields(info.tasks[task]):
            kinds.setdefault(f.name, set()).add(_is_bool(hints[f.name]))
            entries.append(_help_entry(f.name, hints[f.name], f))
        parser.add_engine_group(f"{name} engine options" + (f" ({info.summary})" if info.summary else ""), entries)
    if with_model:
        parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    for opt, bools in kinds.items():
        if bools == {True}:  # a switch in every engine that has it: --x / --no-x
            parser.add_argument(flag(opt), dest=OPT_PREFIX + opt, default=None, action=argparse.BooleanOptionalAction,
                                help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag(opt), dest=OPT_PREFIX + opt, default=None, help=argparse.SUPPRESS)


def add_task_flags(parser: Parser, task: str, *, paste_back: bool = True, runtime: bool = True) -> None:
    """The flags every editing command shares: output, paste-back, engine options, runtime, limits."""
    add_output(parser)
    if paste_back:
        add_paste_back(parser)
    add_engine_options(parser, task, runtime=runtime)
    if runtime:
        add_runtime(parser)
    add_limits(parser)


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the user actually gave (raw; the chosen engine converts and checks them)."""
    return {k[len(OPT_PREFIX):]: v for k, v in vars(args).items() if k.startswith(OPT_PREFIX) and v is not None}


def run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keywords of :func:`diffcompose.api.run` from the shared flags (the engine options: :func:`engine_options`)."""
    kw: dict[str, Any] = dict(engine=args.engine, seed=args.seed, max_pixels=args.max_pixels,
                              on_progress=TqdmBar(args.progress))
    for name in ("paste_back", "margin", "device", "dtype", "model"):
        if hasattr(args, name):
            kw[name] = getattr(args, name)
    return kw


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
    """Where torch engines run (engines without torch ignore these)."""
    group = parser.add_argument_group("device (diffusion engines)")
    group.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    group.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                       help="compute dtype (default: float16 on CUDA, float32 elsewhere)")


def check_output_args(args: argparse.Namespace, *inputs: Path | None) -> None:
    """Fail before any work if the output could not be written."""
    out: Path = args.output
    output_format(out)
    check_writable(out)
    for p in inputs:
        if p is not None and Path(p).exists() and out.exists() and out.resolve() == Path(p).resolve():
            raise InputError(f"output {out} is one of the inputs; choose another output path")
    if out.exists() and not args.force:
        raise OutputExistsError(f"output {out} exists; pass --force to overwrite it")
    check_margin(getattr(args, "margin", None))


def check_writable(out: Path) -> None:
    """Refuse, before minutes of work, an output that could not be written (one line, exit 2)."""
    check_output_name(out)  # a name too long or not a file name: before touching the file system with it
    folder = out.parent
    if not folder.exists():
        raise InputError(f"output folder does not exist: {cut(folder)}")
    if not folder.is_dir():
        raise InputError(f"output folder {cut(folder)} is a file, not a folder")
    if out.is_dir():
        raise InputError(f"output {cut(out)} is a folder; give a file name such as {cut(out / 'out.png')}")
    try:  # the only reliable test (permissions, read-only mounts, quotas): create a file there
        fd, probe = tempfile.mkstemp(prefix=".diffcompose-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write in {cut(folder)}: {exc.strerror or exc}") from None


#: More outputs than any engine makes in one batch.
MAX_NAMED = 1000


def _count(raw: object) -> int:
    """How many outputs to name; a value the engine will refuse names one (the engine says why)."""
    try:
        n = int(str(raw))
    except ValueError:
        return 1
    return n if 1 <= n <= MAX_NAMED else 1


def _names(base: Path, n: int) -> list[Path]:
    return [base] if n == 1 else [base.with_name(f"{base.stem}_{i}{base.suffix}") for i in range(n)]


def write_batch(args: argparse.Namespace, inputs: tuple[Path | None, ...], call: Any,
                mask_output: Path | None = None, numbered: bool = True) -> None:
    """Run ``call`` and write OUT.png, or, for ``numbered`` tasks with --num-images N, OUT_0.png ... OUT_{N-1}.png.

    With ``mask_output``, ``call`` returns ``(images, masks)`` and the masks are written the
    same way. Every output is checked before any work, and written only once all are made;
    none of them may be one of ``inputs`` (the input files).
    """
    n = _count(engine_options(args).get("num_images", 1)) if numbered else 1
    outputs = _names(args.output, n)
    masks_out = _names(mask_output, n) if mask_output is not None else []
    if len({p.resolve() for p in outputs + masks_out}) < len(outputs + masks_out):
        raise InputError("--mask-output must differ from the output")
    for out in outputs + masks_out:
        args.output = out
        check_output_args(args, *inputs)
    result = call()
    images, masks = result if mask_output is not None else (result, [])
    as_list = (lambda r: r if isinstance(r, list) else [r])
    for out, image in zip(outputs + masks_out, as_list(images) + (as_list(masks) if masks_out else [])):
        args.output = out
        write(image, args, *inputs)


def write(image: Any, args: argparse.Namespace, *inputs: Path | None) -> None:
    path = save_image(image, args.output, force=args.force, protected=tuple(p for p in inputs if p is not None))
    print_path(path)


def print_path(path: Path) -> None:
    """Say a written file's path on stdout, as the bytes of its name.

    A name may hold bytes that are not UTF-8 (a shell hands them over as surrogates); a
    stdout that encodes strictly would fail on it *after* the file was written, so such a
    name goes out as its raw bytes, which is what a script reading stdout can open.
    """
    text = str(path)
    try:
        print(text)
    except UnicodeEncodeError:
        sys.stdout.flush()
        raw = getattr(sys.stdout, "buffer", None)
        if raw is None:
            print(text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace"))
            return
        raw.write(os.fsencode(text) + b"\n")
        raw.flush()
