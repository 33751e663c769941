"""Entry point: ``diffcompose COMMAND ...`` (also ``python -m diffcompose``).

Each command lives in a module of this package exposing ``register(subparsers)``; the
parser it adds sets ``func`` to the function that runs it. User errors end in one line on
stderr and a non-zero exit; unexpected ones too, with the traceback behind
``DIFFCOMPOSE_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Iterator

from diffcompose import __version__
from diffcompose.cli.common import Parser
from diffcompose.errors import Cancelled, DiffComposeError, cut

#: Command modules, in the order ``--help`` lists them.
COMMAND_MODULES = ["tasks", "convert", "train", "batch", "demo", "evaluate", "serve"]


def build_parser() -> Parser:
    parser = Parser(
        prog="diffcompose",
        description="Object-level image editing: remove, paste, harmonize, segment, compose, paint, inpaint and "
                    "insert objects. Masks are white where the image should change; boxes are x0,y0,x1,y1 in pixels (end-exclusive).",
        epilog="Run 'diffcompose COMMAND --help' for a command's options. A path or value starting with '-' "
               "needs the = form (--box=-1,0,5,5) or a preceding '--' for positional paths.",
    )
    parser.add_argument("--version", action="version", version=f"diffcompose {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser, dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"diffcompose.cli.{name}").register(sub)
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While running a command, SIGTERM acts as Ctrl-C: temporary files are removed, exit 130.

    The previous handler comes back afterwards; outside the main thread (where handlers
    cannot be set) nothing changes.
    """
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="diffcompose: %(message)s", stream=sys.stderr)
    # Library warnings (Pillow's corrupt EXIF, torch and diffusers notes) are not the user's
    # business unless asked for with -v: a failure stays one line, a success stays quiet.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    args.progress = not args.quiet and sys.stderr.isatty()
    try:
        with _sigterm_as_interrupt():
            args.func(args)
    except (Cancelled, KeyboardInterrupt):
        sys.stderr.write("diffcompose: cancelled; nothing was written\n")
        return 130
    except DiffComposeError as exc:
        sys.stderr.write(f"diffcompose: error: {exc}\n")
        return exc.exit_code
    except Exception as exc:  # a bug, not a user error: still one line unless debugging
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:  # a path the user gave, past the limits
            where = f": {cut(exc.filename)}" if exc.filename else ""
            sys.stderr.write(f"diffcompose: error: a path is too long for the file system{where}\n")
            return 2
        if os.environ.get("DIFFCOMPOSE_DEBUG"):
            raise
        sys.stderr.write(f"diffcompose: internal error: {type(exc).__name__}: {exc} "
                         "(set DIFFCOMPOSE_DEBUG=1 for the traceback)\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
