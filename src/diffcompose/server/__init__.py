"""``diffcompose serve``: the HTTP API, its job manager and the page (see :mod:`diffcompose.server.app`).

Importing this package is light (no FastAPI, no torch): :func:`create_app` imports the app
module on call.
"""

from __future__ import annotations

from typing import Any

from diffcompose.server.settings import Settings


def create_app(settings: Settings | None = None, **kwargs: Any) -> Any:
    """The ASGI app (FastAPI) for ``settings``; see :func:`diffcompose.server.app.create_app`."""
    from diffcompose.server.app import create_app as _create

    return _create(settings, **kwargs)


__all__ = ["Settings", "create_app"]
