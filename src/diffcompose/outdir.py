"""Output folders that can never take a user's files with them.

Every command that writes a directory (``convert``, ``train``, ``batch``, ``evaluate``) puts
:data:`MARKER` in it, and replaces or writes into an existing folder only when that marker
is there. The working directory, its parents and any folder holding an input are refused
outright. A new folder is built beside its target and moved into place when complete
(:func:`building`, :func:`swap_in`), so an interrupted run leaves the old one intact.

The marker says which kind of folder it is (a batch run, an evaluation, a model, a training
run) and lists the files the tool wrote there. So ``--force`` replaces a folder only with one
of its own kind (an evaluation never deletes the batch it was pointed at), and never while
the folder holds a file the user added (notes, a retouched output): both are refused in one
line. A folder written into in place (a resumed batch, a training run) is refused while it
holds a symbolic link, which a write would follow out of the folder.
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

#: The kinds of folder this tool writes; the marker names one (``kind: ...``) and ``--force``
#: replaces a folder only with another of its kind: never an evaluation over a batch, or a model over a run.
BATCH, EVALUATION, MODEL, TRAINING = "batch run", "evaluation", "model", "training run"
_TRACKED = "tracked"  # marker line: the ``file:`` lines list every file the tool wrote there
#: The kind of a marker written before kinds were recorded, from its ``written by diffcompose WHAT`` line.
_LEGACY_KINDS = {"batch": BATCH, "evaluate": EVALUATION, "convert": MODEL, "tiny": MODEL}


def check_out_dir(out_dir: Path, inputs: list[Path], *, force: bool, reuse: bool = False,
                  kind: str | None = None) -> Path:
    """The resolved ``out_dir``, refused when writing there could harm anything this tool did not write.

    Refused: the working directory or one of its parents, a folder holding an input, a
    regular file, and an existing non-empty folder without :data:`MARKER` (even with
    ``force``). A marked one needs ``force`` to be replaced, or ``reuse`` (a training run
    adding checkpoints to its own folder). With ``kind`` (what the caller writes), a folder
    marked as another kind is refused even with ``force``; ``force`` is refused while the
    folder holds files the tool did not write (a user's notes), and ``reuse`` while it holds
    a symbolic link (a write would go through it, to wherever it points).
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
        _check_marked(target, out_dir, force=force, reuse=reuse, kind=kind)
    if not os.access(target.parent, os.W_OK) or (target.is_dir() and not os.access(target, os.W_OK | os.X_OK)):
        where = target if target.is_dir() and os.access(target.parent, os.W_OK) else target.parent
        raise InputError(f"cannot write in {where} (permission denied)")
    return target


def _check_marked(target: Path, out_dir: Path, *, force: bool, reuse: bool, kind: str | None) -> None:
    """The rules of :func:`check_out_dir` for a non-empty folder carrying :data:`MARKER`."""
    found = marked_kind(target)
    if kind is not None and found is not None and found != kind:
        raise InputError(f"output directory {out_dir} is {_a(found)} folder written by diffcompose, not {_a(kind)} "
                         f"folder; refusing to replace it even with --force: name a new folder")
    if not (force or reuse):
        raise OutputExistsError(f"output directory {out_dir} exists and is not empty; pass --force to replace it")
    if force:
        added = user_files(target)
        if added:
            shown = ", ".join(added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
            raise InputError(f"output directory {out_dir} holds files diffcompose did not write ({shown}); "
                             "--force would delete them: move them out, or name a new folder")
    else:
        link = _first_link(target)
        if link is not None:
            raise InputError(f"output directory {out_dir} holds a symbolic link {link.relative_to(target)}; "
                             "diffcompose never writes through links in its folders: remove it, or name a new folder")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _walk(folder: Path) -> Iterator[Path]:
    """Every entry under ``folder``, links reported but never followed."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            yield Path(root) / name


def _first_link(folder: Path) -> Path | None:
    return next((p for p in _walk(folder) if p.is_symlink()), None)


def _marker_lines(folder: Path) -> list[str]:
    marker = Path(folder) / MARKER
    if marker.is_symlink() or not marker.is_file():
        return []
    try:
        return marker.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def marked_kind(folder: Path) -> str | None:
    """The kind of folder (:data:`BATCH`, :data:`EVALUATION`, :data:`MODEL`, :data:`TRAINING`) its marker
    names; for an older marker, the kind its ``written by`` line implies; ``None`` when unknown."""
    lines = _marker_lines(folder)
    for line in lines:
        if line.startswith("kind: "):
            return line.removeprefix("kind: ").strip()
    what = lines[0].removeprefix("written by diffcompose ").split() if lines else []
    return _LEGACY_KINDS.get(what[0]) if what else None


def user_files(folder: Path) -> list[str]:
    """Files (and links) in a marked folder that the tool did not write there, sorted; none when its marker
    does not list the tool's files (an older folder: then all of it counts as the tool's). A folder
    inside it with a marker of its own (``evaluate``'s default ``OUT_DIR/evaluation``) answers for itself."""
    folder = Path(folder)
    lines = _marker_lines(folder)
    tracked = _TRACKED in lines
    ours = _recorded(lines)
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        for name in list(dirs):
            sub = here / name
            if not sub.is_symlink() and (sub / MARKER).is_file():
                dirs.remove(name)
                found += [f"{sub.relative_to(folder).as_posix()}/{f}" for f in user_files(sub)]
        if not tracked:
            continue
        for name in files + [d for d in dirs if (here / d).is_symlink()]:
            rel = (here / name).relative_to(folder).as_posix()
            if _transient(name) or rel == MARKER:
                continue
            if rel not in ours or (ours[rel] is not None and _stamp(here / name) != ours[rel]):
                found.append(rel)  # added by the user, or the tool's file edited since (a retouched output)
    return sorted(found)


def _stamp(path: Path) -> str | None:
    """Size and modification time of a file as the marker records them (``None``: a link, or gone)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return f"{st.st_size} {st.st_mtime_ns}" if not os.path.islink(path) else None


def _recorded(lines: list[str]) -> dict[str, str | None]:
    """The tool's files a marker lists: path -> its stamp when written (``None``: a file the tool itself
    keeps rewriting, such as ``results.jsonl``). The last line of a path wins (an output written again)."""
    ours: dict[str, str | None] = {}
    for line in lines:
        if line.startswith("file: "):
            path, _, stamp = line.removeprefix("file: ").partition("\t")
            ours[path] = stamp or None
    return ours


def _transient(name: str) -> bool:
    """A temporary file of an atomic write (``.NAME.XXXX.tmp``), the tool's even when a killed run left it."""
    return name.startswith(".") and name.endswith(".tmp")


def mark(folder: Path, what: str, kind: str | None = None, files: list[str] | None = None) -> None:
    """Mark ``folder`` as written by ``what`` (its kind: ``kind``, else the one ``what`` implies, a model
    for ``convert``/``train``/``tiny``). With ``files`` (relative paths), the marker lists the
    tool's files, so ``--force`` can tell a user's additions from them (:func:`record` adds more)."""
    if kind is None:
        kind = {"batch": BATCH, "evaluate": EVALUATION}.get(what, MODEL)
    text = f"written by diffcompose {what}\nkind: {kind}\n"
    if files is not None:
        text += f"{_TRACKED}\n" + _file_lines(Path(folder), files)
    _write_new(Path(folder) / MARKER, text.encode("utf-8", "backslashreplace"), append=False)


def record(folder: Path, *files: str) -> None:
    """Add ``files`` (relative to ``folder``) to the tool's files its marker lists, with their size and
    time when they exist (so a later edit shows); one append: lines of several processes never interleave."""
    _write_new(Path(folder) / MARKER, _file_lines(Path(folder), list(files)).encode("utf-8", "backslashreplace"),
               append=True)


def _file_lines(folder: Path, files: list[str]) -> str:
    """``file: PATH`` lines, with ``\\tSIZE MTIME`` for a file that exists now (written once by the tool)."""
    out = []
    for f in files:
        stamp = _stamp(folder / f) if (folder / f).is_file() else None
        out.append(f"file: {f}\t{stamp}\n" if stamp else f"file: {f}\n")
    return "".join(out)


def _write_new(path: Path, data: bytes, *, append: bool) -> None:
    """Write ``data`` to ``path`` with one ``write``, never through a symbolic link placed there."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in _walk(folder) if p.is_file() and p.name != MARKER)


def new_beside(target: Path) -> Path:
    """An empty folder next to ``target`` to build into (normal permissions)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


@contextmanager
def building(target: Path, what: str | None = None, kind: str | None = None) -> Iterator[Path]:
    """An empty folder beside ``target`` to write into; when the block ends cleanly it is marked as
    written by ``what`` (when given; of ``kind``, listing every file written) and swapped in at
    ``target`` (:func:`swap_in`). On an error it is removed and ``target`` stays as it was."""
    tmp = new_beside(target)
    try:
        yield tmp
        if what is not None:
            mark(tmp, what, kind, files=_files_in(tmp))
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
