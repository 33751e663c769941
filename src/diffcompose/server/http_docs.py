"""``python -m diffcompose.server.http_docs --markdown -o docs/http-api.md``: write the HTTP API
page of the repository from the app's own OpenAPI document and the guide (:mod:`.reference`).

A module of its own because it builds the app: :mod:`.reference` is imported by the app, so
it cannot import the app back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diffcompose.server.reference import render_markdown


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of an app with default settings (its job manager is stopped again)."""
    from diffcompose.server.app import create_app

    app = create_app()
    try:
        return app.openapi()
    finally:
        app.state.jobs.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffcompose.server.http_docs",
                                     description="Write the HTTP API documentation (guide + OpenAPI reference).")
    parser.add_argument("--markdown", action="store_true", required=True,
                        help="write Markdown (docs/http-api.md is this output)")
    parser.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    text = render_markdown(openapi_document())
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
