"""The HTTP/1.1 server protocol: uvicorn's httptools protocol with limits on what a client may hold before auth.

Issue 8 item 6. uvicorn (0.54, httptools 0.9) bounds neither the time a client takes to send a request head nor
its size, and it accepts sockets until the process runs out of file descriptors. `BastionHttpProtocol` adds, per
connection: a deadline for every request head (408, then close), a cap on the head's bytes counted before they
reach the parser (431, then close), a connection cap checked at accept (a prebuilt 503, then close), and a 403 for
WebSocket upgrades (the gateway serves none; audited). uvicorn's own 400 for broken framing is replaced by ours; every
answer given here carries the security headers. (uvicorn's 503 for `limit_concurrency` is not used: the connection
cap replaces it. Its bare 500 is left: SecurityHeadersMiddleware answers exceptions itself, so uvicorn's is reached
only by a cancelled request or an app that returns without answering.)

The parser callbacks stay uvicorn's; this class only wraps `connection_made`, `data_received`, two callbacks and
`connection_lost`, so an upgrade of uvicorn touches this one module.

`GatewayServer` is uvicorn's Server, telling the application it is shutting down the moment a signal arrives (Issue 9
item 6): uvicorn itself only notices on its next tick, closes the listener, then waits for connections to close
before the lifespan's shutdown runs, so a stream left open would hold the process for the whole grace.
"""

import asyncio
import http
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mcp_bastion.audit import AuditLog
from mcp_bastion.middleware.headers import BASE_HEADERS, HSTS

log = logging.getLogger("mcp_bastion.http")

# The derived connection cap never exceeds this: past it a single process serves worse than a second instance.
MAX_CONNECTIONS_CEILING = 1000
# File descriptors kept out of the connection cap: the listening socket, the audit log and the store, and three
# pipes plus a log file per child. A quarter of the limit, at least this many.
FD_RESERVE_MIN = 64
# What a refused connection is told: the head deadline frees slots that quickly.
RETRY_AFTER_S = 10
# A full connection table is logged at most once per this many seconds (with the count), not once per socket.
CAP_WARNING_INTERVAL_S = 10.0
# How much of a refused WebSocket request's target the audit line keeps.
AUDIT_PATH_MAX_CHARS = 200


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may hold before its request reaches the application."""

    head_timeout_s: float
    max_header_bytes: int
    max_connections: int


def connection_cap(configured: int | None, soft_limit: int | None = None) -> int:
    """MAX_CONNECTIONS if set, else derived from RLIMIT_NOFILE so descriptors remain for children, logs and store."""
    if configured is not None:
        return configured
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CEILING
    reserve = max(FD_RESERVE_MIN, soft_limit // 4)
    return max(1, min(MAX_CONNECTIONS_CEILING, soft_limit - reserve))


def raw_response(status: int, message: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete `Connection: close` answer in the pipeline's `{"error", "message"}` shape, as bytes on the wire."""
    phrase = http.HTTPStatus(status).phrase
    body = orjson.dumps({"error": phrase, "message": message})
    head = [
        f"HTTP/1.1 {status} {phrase}".encode(),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
        *(name + b": " + value for name, value in headers),
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass
class Refusals:
    """The prebuilt answers of one server, built once from its security headers."""

    bad_request: bytes
    head_timeout: bytes
    head_too_large: bytes
    connections_full: bytes
    websocket: bytes

    @classmethod
    def build(cls, *, tls: bool) -> "Refusals":
        """Every answer carries the headers SecurityHeadersMiddleware puts on the application's responses."""
        headers = [*BASE_HEADERS, HSTS] if tls else list(BASE_HEADERS)
        busy = [*headers, (b"retry-after", str(RETRY_AFTER_S).encode())]
        return cls(
            bad_request=raw_response(400, "Invalid HTTP request", headers),
            head_timeout=raw_response(408, "The request head was not received in time", headers),
            head_too_large=raw_response(431, "The request head is too large", headers),
            connections_full=raw_response(503, "Too many open connections, try again later", busy),
            websocket=raw_response(403, "WebSocket is not served here", headers),
        )


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the answer to send is on the protocol."""


class BastionHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline, a head size cap, a connection cap and no WebSocket.

    A head is "awaited" from the connection's start, and again from the end of each request's body; the deadline
    runs from the connection's start, or from the first byte of a later head (an idle kept-alive connection is
    uvicorn's keep-alive timeout's business). Bytes are counted before the parser sees them, so at most one cap's
    worth of a head is ever buffered (plus one socket read when a pipelined head follows a body in one read).
    """

    limits: ClassVar[HttpLimits]
    refusals: ClassVar[Refusals]
    audit: ClassVar[AuditLog]
    cap_warning: ClassVar[list[float]]  # [last warning time, refusals since]; one per server class

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_bytes: int | None = 0  # bytes of the awaited head so far; None while a body is being read
        self.head_deadline: asyncio.TimerHandle | None = None
        self.refusal: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._warn_connections_full()
            self._answer_and_close(self.refusals.connections_full)
            return
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and not self.transport.is_closing():
            if self.head_bytes is None:
                self._feed(data)
                return
            room = self.limits.max_header_bytes - self.head_bytes
            if room <= 0:
                self._answer_and_close(self.refusals.head_too_large)
                return
            if self.head_deadline is None:
                self._arm_head_deadline()
            chunk, data = data[:room], data[room:]
            self.head_bytes += len(chunk)
            self._feed(chunk)

    def _feed(self, data: bytes) -> None:
        """uvicorn's data_received, with our answers for a parse error or a refusal from a callback."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._answer_and_close(self.refusal or self.refusals.bad_request)
        except httptools.HttpParserUpgrade:
            pass  # not a WebSocket (refused in on_headers_complete): served as plain HTTP, as uvicorn does

    def on_headers_complete(self) -> None:
        self._cancel_head_deadline()
        self.head_bytes = None
        if self._asks_websocket():
            self._audit_websocket()
            self.refusal = self.refusals.websocket
            raise _Refused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(self.refusals.bad_request)

    def _asks_websocket(self) -> bool:
        return any(name == b"upgrade" and b"websocket" in value.lower() for name, value in self.headers)

    def _audit_websocket(self) -> None:
        self.audit.record(
            "http.refused",
            outcome="denied",
            reason="websocket upgrade refused",
            ip=self.client[0] if self.client else None,
            path=self.url.split(b"?", 1)[0][:AUDIT_PATH_MAX_CHARS].decode("latin-1"),  # a query may hold a token
            status=403,
        )

    def _arm_head_deadline(self) -> None:
        self.head_deadline = self.loop.call_later(self.limits.head_timeout_s, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_deadline_passed(self) -> None:
        self.head_deadline = None
        log.debug("closing %s: no complete request head within %ss", self.client, self.limits.head_timeout_s)
        if self.cycle is None or self.cycle.response_complete:
            self._answer_and_close(self.refusals.head_timeout)
        else:  # a pipelined head stalled behind a response still being sent: nothing more may be written
            self.transport.close()

    def _answer_and_close(self, answer: bytes) -> None:
        self._cancel_head_deadline()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    def _warn_connections_full(self) -> None:
        now = time.monotonic()
        self.cap_warning[1] += 1
        if now - self.cap_warning[0] >= CAP_WARNING_INTERVAL_S:
            log.warning(
                "connection cap (%d) reached: refused %d connection(s) with 503",
                self.limits.max_connections,
                self.cap_warning[1],
            )
            self.cap_warning[:] = [now, 0]


def http_protocol(limits: HttpLimits, *, audit: AuditLog, tls: bool) -> type[BastionHttpProtocol]:
    """The protocol class to pass to uvicorn as `http=`, bound to one server's limits, answers and audit log."""

    class ConfiguredHttpProtocol(BastionHttpProtocol):
        pass

    ConfiguredHttpProtocol.limits = limits
    ConfiguredHttpProtocol.refusals = Refusals.build(tls=tls)
    ConfiguredHttpProtocol.audit = audit
    ConfiguredHttpProtocol.cap_warning = [float("-inf"), 0]
    return ConfiguredHttpProtocol


class GatewayServer(uvicorn.Server):
    """uvicorn's server, calling `on_shutdown` (in the event loop) as soon as SIGTERM or SIGINT arrives.

    Called again, harmlessly, when uvicorn begins its own shutdown, so a stop that did not come from a signal
    (`should_exit` set by code) takes the same path.
    """

    def __init__(self, config: uvicorn.Config, *, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the loop's own thread: schedule, never run, from here.
        if not self.should_exit and self.loop is not None:
            self.loop.call_soon_threadsafe(self.on_shutdown)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets)
