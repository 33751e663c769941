"""Output folders that can never take a user's files with them.

Every command that writes a directory (``convert``, ``train``; later ``batch`` and
``evaluate``) puts :data:`MARKER` in it, and replaces or writes into an existing folder
only when that marker is there. The working directory, its parents and any folder holding
an input are refused outright. A new folder is built beside its target and moved into place
when complete (:func:`building`, :func:`swap_in`), so an interrupted run leaves the old one intact.
No torch here: commands check their output before importing it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from diffcompose.errors import InputError, OutputExistsError

#: A file in every folder this tool writes: only such a folder is ever replaced or reused.
MARKER = ".diffcompose-model"


def check_out_dir(out_dir: Path, inputs: list[Path], *, force: bool, reuse: bool = False) -> Path:
    """The resolved ``out_dir``, refused when writing there could harm anything this tool did not write.

    Refused: the working directory or one of its parents, a folder holding an input, a
    regular file, and an existing non-empty folder without :data:`MARKER` (even with
    ``force``). A marked one needs ``force`` to be replaced, or ``reuse`` (a training run
    adding checkpoints to its own folder).
    """
    target = Path(out_dir).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise InputError(f"output directory {out_dir} is the working directory or one of its parents; "
                         "name a new folder")
    for p in inputs:
        if target in Path(p).expanduser().resolve().parents:
            raise InputError(f"output directory {out_dir} contains the input {p}; name a new folder")
    if not target.parent.is_dir():
        raise InputError(f"output folder does not exist: {target.parent}")
    if target.exists() and not target.is_dir():
        raise InputError(f"output directory {out_dir} is a file; name a new folder")
    if target.is_dir() and any(target.iterdir()):
        if not (target / MARKER).is_file():
            raise InputError(f"output directory {out_dir} is not empty and was not written by diffcompose "
                             f"(no {MARKER}); refusing to write there even with --force: name a new folder")
        if not (force or reuse):
            raise OutputExistsError(f"output directory {out_dir} exists and is not empty; pass --force to replace it")
    if not os.access(target.parent, os.W_OK):
        raise InputError(f"cannot write in {target.parent} (permission denied)")
    return target


def mark(folder: Path, what: str) -> None:
    (Path(folder) / MARKER).write_text(f"written by diffcompose {what}\n")


def new_beside(target: Path) -> Path:
    """An empty folder next to ``target`` to build into (normal permissions)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


@contextmanager
def building(target: Path, what: str | None = None) -> Iterator[Path]:
    """An empty folder beside ``target`` to write into; when the block ends cleanly it is marked as
    written by ``what`` (when given) and swapped in at ``target`` (:func:`swap_in`). On an error it is
    removed and ``target`` stays as it was."""
    tmp = new_beside(target)
    try:
        yield tmp
        if what is not None:
            mark(tmp, what)
        swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already once swapped in


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (threads may be creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def swap_in(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` at ``target``; an old one (checked to be ours) goes once the new is in place."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / "replaced")
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old / "replaced", target)  # put the old one back
        old.rmdir()
        raise
    shutil.rmtree(old)
