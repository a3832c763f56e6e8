"""Legacy client sessions: one per HTTP+SSE stream or per Streamable HTTP `Mcp-Session-Id`.

A session is bound to the principal that opened it; an id is a capability only together with that principal.
"""

import asyncio
import collections
import secrets
import time
from typing import TYPE_CHECKING, Any

from mcp_bastion.errors import GatewayError
from mcp_bastion.jsonrpc import Message

if TYPE_CHECKING:
    from mcp_bastion.relay.backend import Backend

OUTBOX_MAX = 1000  # messages queued for a stream nobody reads; past it the oldest drop (a slow reader loses, not us)


class SessionGone(GatewayError):
    """The session id is unknown, ended, or belongs to another principal (all look the same: 404)."""

    http_status = 404


class ClientSession:
    """One client's legacy session with one server."""

    def __init__(self, *, server: str, era: str, principal: str | None, backend: "Backend", own_backend: bool) -> None:
        self.id = secrets.token_hex(16)
        self.server = server
        self.era = era
        self.principal = principal
        self.backend = backend
        self.own_backend = own_backend  # isolation: per-session; the child dies with the session
        self.protocol_version: str | None = None
        self.client_info: Any = None
        self.created = time.monotonic()
        self.last_seen = self.created
        self.outbox: collections.deque[Message] = collections.deque(maxlen=OUTBOX_MAX)  # full: the oldest drop
        self.wakeup = asyncio.Event()  # set by push() and close(); the stream writer waits on it alone
        self.inflight: dict[Any, int] = {}  # the client's request id → gateway id, for cancellation
        self.subscriptions: set[str] = set()
        self.streams = 0  # open GET / SSE streams reading the outbox
        self.closed = asyncio.Event()

    def close(self) -> None:
        """Mark the session ended and wake its stream so that it finishes."""
        self.closed.set()
        self.wakeup.set()

    def touch(self) -> None:
        """Mark activity (idle reaping counts from here)."""
        self.last_seen = time.monotonic()

    def deliver(self, message: Message) -> None:
        """Sink: a final response goes on the session's stream."""
        self.push(message)

    def notify(self, message: Message) -> None:
        """Sink: a related notification goes on the session's stream."""
        self.push(message)

    def cancelled(self, message: Message) -> None:
        """Sink: nothing is sent for a cancelled request on a stream (MCP cancellation rules)."""

    def push(self, message: Message) -> None:
        """Queue a message for the client's stream; drop the oldest if nobody reads."""
        if self.closed.is_set():
            return
        self.outbox.append(message)
        self.wakeup.set()
