"""uvicorn's httptools protocol, held to the ingress's bounds on slow, idle and surplus clients.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`) and nothing else: a client
may take forever over its headers or its body, and a connection past any number is accepted.
`guarded_protocol` adds, per connection:

- a header deadline, from the connection's start or the end of the previous request: a request
  line and headers not complete by then close the connection;
- a body deadline, from the end of the headers: a body not complete by then gets 408;
- a cap on open connections: one past it gets 503 as soon as it is accepted;
- a lingering close: when an answer that closes the connection (413, 408, 503) leaves part of
  the request unread, the connection stays open to read and discard it, bounded in bytes and
  time, since a socket closed with unread data is reset by the kernel, and a client still
  sending its body would lose the answer in the reset.

The header deadline costs a request one float stored: each connection has one timer for it,
which fires at most once a deadline and, finding the deadline moved on, sets itself to the new
one (a timer armed and cancelled per request measured some 20 % of a bare handler's
throughput). The body deadline's timer is armed only for a body that does not come whole with
its headers.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("distcount.ingress")

# what a lingering close reads and discards at most, and for how long
LINGER_MAX_BYTES: Final = 64 * 1024 * 1024
# after a 408 or a 503 the client is slow or surplus: a second to read its answer is enough
_SHORT_LINGER_S: Final = 1.0
_JSON_HEADERS: Final = b"content-type: application/json\r\nconnection: close\r\n"


def _answer(status: bytes, field: bytes, message: bytes) -> bytes:
    body = b'{"errors":{"' + field + b'":["' + message + b'"]}}'
    length = b"content-length: " + str(len(body)).encode() + b"\r\n"
    return b"HTTP/1.1 " + status + b"\r\n" + _JSON_HEADERS + length + b"\r\n" + body


REQUEST_TIMEOUT: Final = _answer(
    b"408 Request Timeout", b"body", b"not received in time: the connection is closed"
)
TOO_MANY_CONNECTIONS: Final = _answer(
    b"503 Service Unavailable", b"connections", b"too many open connections: retry later"
)


_last_warned = [float("-inf")]


def _warn_refused(now: float, max_connections: int) -> None:
    """A warning a minute at most: a flood of refused connections must not flood the log too."""
    if now - _last_warned[0] >= 60:
        _last_warned[0] = now
        log.warning(
            "refusing connections: %d are open already (DISTCOUNT_HTTP_MAX_CONNECTIONS)",
            max_connections,
        )


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the deadlines and the cap; `guarded_protocol` sets the bounds."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 2048

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_deadline = 0.0
        self._closing: _ClosingTransport | None = None  # made once the transport is known
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_deadline = 0.0
        # the request being parsed: its headers are not complete yet / its body is not
        self._headers_pending = True
        self._body_pending = False
        # lingering: what arrives is discarded, up to a number of bytes and a time
        self._discarding = False
        self._discard_left = 0
        self._linger_timer: asyncio.TimerHandle | None = None

    # --- the connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._closing = _ClosingTransport(transport, self)
        if len(self.connections) > self.max_connections:
            _warn_refused(self.loop.time(), self.max_connections)
            transport.write(TOO_MANY_CONNECTIONS)
            self._linger(_SHORT_LINGER_S)
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            self._discard_left -= len(data)
            if self._discard_left < 0:
                self.transport.close()
            return
        super().data_received(data)
        if self._body_pending and self._body_timer is None and not self._discarding:
            # armed only for a body that does not come whole with its headers
            self._body_timer = self.loop.call_at(self._body_deadline, self._body_timed_out)

    # --- parser callbacks ---------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._headers_pending = False
        # no header deadline while the request is handled: its answer sets the next one
        self._header_deadline = math.inf
        self._body_pending = True
        self._body_deadline = self.loop.time() + self.body_timeout_s
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = self._closing  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._headers_pending = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()
        if self.cycle.response_complete:  # answered before its body was in: the next request
            self._arm_header_timer()

    def on_response_complete(self) -> None:
        if self._discarding:  # closing: no next request, and no keep-alive timer to cut it short
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if self._headers_pending and not self.transport.is_closing():
            self._arm_header_timer()

    # --- deadlines ----------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_deadline = self.loop.time() + self.header_timeout_s
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(self._header_deadline, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if self._discarding or deadline == math.inf:
            return  # closing already, or a request under way (its answer re-arms the timer)
        if self.loop.time() < deadline:  # moved on by a later request: wait for that one
            self._header_timer = self.loop.call_at(deadline, self._header_timed_out)
        elif self._headers_pending:
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._body_pending or self._discarding:
            return
        cycle = self.cycle
        if not cycle.response_started:
            self.transport.write(REQUEST_TIMEOUT)
            # the app's wait for the body ends as if the client had gone; what it answers then
            # is not written
            cycle.response_started = cycle.response_complete = cycle.disconnected = True
            cycle.message_event.set()
        self._linger(_SHORT_LINGER_S)

    # --- lingering close ----------------------------------------------------------------------

    def close_after_answer(self) -> None:
        """The answer is written and closes the connection: close it, or linger first if the
        request's body is still coming."""
        if self._body_pending:
            self._linger(self._body_deadline - self.loop.time())
        else:
            self.transport.close()

    def _linger(self, duration_s: float) -> None:
        if self._discarding:
            return
        self._discarding = True
        self._discard_left = LINGER_MAX_BYTES
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client sees the answer end; its sends still land
        self._linger_timer = self.loop.call_later(max(duration_s, 0.0), self.transport.close)

    def eof_received(self) -> None:
        # the client is done sending; once lingering, nothing more is coming: close
        if self._discarding:
            self.transport.close()


class _ClosingTransport:
    """The transport as a request's cycle sees it: the same, except that the close which ends
    an answer lingers while the request's body is still arriving."""

    __slots__ = ("_protocol", "_transport", "get_extra_info", "is_closing", "write")

    def __init__(self, transport: asyncio.Transport, protocol: GuardedProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info

    def close(self) -> None:
        self._protocol.close_after_answer()


def guarded_protocol(
    header_timeout_s: float, body_timeout_s: float, max_connections: int
) -> type[GuardedProtocol]:
    """The protocol class to give uvicorn (`Config(http=...)`), with these bounds."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "max_connections": max_connections,
        },
    )
