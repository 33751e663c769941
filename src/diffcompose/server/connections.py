"""Connections of ``diffcompose serve``: a header timeout and a cap on open connections.

uvicorn times out a keep-alive connection between two requests, but not one that opens and
then sends its request line and headers slowly or never (a "slow loris"): each such socket
is kept forever, and enough of them exhaust the process's file descriptors, after which no
client is served at all. :func:`guarded_protocol` makes uvicorn's h11 protocol class with:

* a header timeout: a connection must deliver a complete request head within
  ``header_timeout`` seconds of connecting (or of sending the first byte of its next request
  on a kept-alive connection), or it gets 408 and is closed;
* a connection cap: past ``max_connections`` open sockets, the oldest connection that is
  idle or still sending its head is closed to make room (a flood of half-open sockets pushes
  out its own oldest members, not the clients being served); when every connection is busy
  with a request, the new one is closed at once.

Body reads are timed in the app (:class:`diffcompose.server.app.ReadTimeout`), where a
stalled body can be answered with a JSON error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

#: Sent with every response, refusals included (this module's own 408 too): no other site may frame
#: the page (clickjacking), browsers must not guess content types, and no URL (which may carry
#: ?token=) leaks as a Referer.
SECURITY_HEADERS = [(b"content-security-policy", b"frame-ancestors 'none'"), (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

_TIMEOUT_BODY = (b'{"error": "the request line and headers did not arrive in time (--header-timeout)", '
                 b'"field": null}')
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     + b"".join(k + b": " + v + b"\r\n" for k, v in SECURITY_HEADERS)
                     + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_TIMEOUT_BODY) + _TIMEOUT_BODY)


def guarded_protocol(header_timeout: float, max_connections: int) -> type:
    """uvicorn's ``H11Protocol`` with the header timeout and the connection cap (a class for ``Config(http=)``)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_timer: Any = None
            self._idle_since: float | None = time.monotonic()
            self._arm()
            if len(self.connections) > max_connections:
                self._make_room()

        def _make_room(self) -> None:
            idle = [c for c in self.connections if c is not self and getattr(c, "_idle_since", None) is not None]
            victim = min(idle, key=lambda c: c._idle_since) if idle else self
            log.debug("connection cap %d reached: closing %s", max_connections,
                      "the oldest idle connection" if idle else "the new connection")
            victim._drop(b"")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
                if self._head_timer is None:  # the next request on a kept-alive connection has begun
                    self._arm()
            else:  # a complete request head arrived: the app reads the rest (its own timeout)
                self._disarm()
                self._idle_since = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle_since = time.monotonic()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._idle_since = None
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._head_timer = self.loop.call_later(header_timeout, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
                self._drop(_TIMEOUT_RESPONSE)

        def _drop(self, answer: bytes) -> None:
            self._disarm()
            self._idle_since = None
            if not self.transport.is_closing():
                if answer:
                    self.transport.write(answer)
                self.transport.close()

    return GuardedH11Protocol
