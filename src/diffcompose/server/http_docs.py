"""``python -m diffcompose.server.http_docs --markdown -o docs/http-api.md``: write the HTTP API
page of the repository from the app's own OpenAPI document and the guide (:mod:`.reference`).

A module of its own because it builds the app: :mod:`.reference` is imported by the app, so
it cannot import the app back.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

from diffcompose.server.reference import render_markdown


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of an app with default settings (its job manager is stopped again),
    less what the registries list (:func:`without_registries`)."""
    from diffcompose.server.app import create_app

    app = create_app()
    try:
        return without_registries(app.openapi())
    finally:
        app.state.jobs.shutdown()


def without_registries(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without the lists that grow with the registries: each engine's options schemas, the
    engine and task names, the tasks' inputs. The committed page then changes only when the API
    does, so adding an engine or a task leaves it as it is; a running server lists them at
    ``/api/engines`` and ``/api/tasks`` and shows them all on its own ``/docs`` page."""
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    for name in [n for n in schemas if n.startswith("Options_")]:
        del schemas[name]
    request = schemas["JobRequest"]["properties"]
    kept = {k: v for k, v in request.items() if k in REQUEST_FIELDS}
    kept["task"] = {"type": "string", "description": "a task name (GET /api/tasks lists the tasks and their inputs)"}
    kept["engine"] = {"type": "string", "default": "auto",
                      "description": "auto, or an engine that serves the task (GET /api/engines)"}
    kept["options"] = {"type": "object", "description": "the chosen engine's options for the task: GET /api/engines "
                                                        "lists them, each engine's page in docs/engines/ describes them"}
    kept["(task inputs)"] = {"description": "the task's box, points and text inputs, each under its own name, "
                                            "null when not given (GET /api/tasks)"}
    schemas["JobRequest"]["properties"] = kept
    for path in ("/api/jobs", "/api/run"):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        body["properties"] = {"request": body["properties"]["request"],
                              "(files)": {"type": "string", "format": "binary",
                                          "description": "one file per image or mask input of the task, under the "
                                                         "input's name (GET /api/tasks)"}}
    return doc


#: The request JSON's own fields (the rest are the tasks' inputs).
REQUEST_FIELDS = ("task", "engine", "seed", "model", "options", "paste_back", "margin")


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
