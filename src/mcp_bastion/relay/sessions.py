"""Legacy client sessions: one per HTTP+SSE stream or per Streamable HTTP `Mcp-Session-Id`.

A session is bound to the principal that opened it; an id is a capability only together with that principal.
Its outbox holds messages (bytes, serialized once when queued, framed as SSE events when written) under a byte
budget: a client that stops reading its stream loses the stream and the session instead of growing the gateway's
memory.
"""

import asyncio
import collections
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp_bastion.errors import SESSION_NOT_FOUND, GatewayError, ProtocolError, QuotaExceeded
from mcp_bastion.jsonrpc import Answer, Message, dumps
from mcp_bastion.relay.replay import GET_STREAM, ReplayBuffer
from mcp_bastion.relay.sinks import ResponseSlot
from mcp_bastion.security import token_hash

if TYPE_CHECKING:
    from mcp_bastion.relay.backend import Backend

OUTBOX_MAX_BYTES = 8 * 1024 * 1024  # default byte budget of one outbox (Settings.outbox_max_bytes overrides it)
OUTBOX_ENTRY_BYTES = 64  # what one queued event costs beyond its bytes (object header, deque slot): tiny ones count
MAX_INFLIGHT = 64  # default cap on one session's requests waiting on a child (Settings.max_inflight_per_session)
INFLIGHT_RETRY_AFTER_S = 1  # a request in flight ends within a call's time: a second is a fair pause
PUBLIC_ID_CHARS = 16  # audit lines name a session by a prefix of its id's hash, never by the id (a capability)
EVENT_HEAD = b"event: message\ndata: "
EVENT_TAIL = b"\n\n"  # orjson output has no newline, so one JSON-RPC message is one `data:` line
EVENT_FRAME_BYTES = len(EVENT_HEAD) + len(EVENT_TAIL)
# A queued message this large is written as its own bytes between its frame's head and tail, never copied into one
# chunk with them (Issue 11 item 1: an 8 MiB result was serialized, then copied again to frame it).
LARGE_EVENT_BYTES = 64 * 1024
SHUTDOWN_RETRY_AFTER_S = 5  # a restarted or replacement gateway is usually answering within a few seconds
# The last thing a long stream carries when the gateway shuts down (Issue 9 item 6): an SSE comment every client
# ignores but a person can read, and the reconnection delay in milliseconds for clients that reconnect on their own.
SHUTDOWN_EVENT = b": the gateway is shutting down; reconnect later\nretry: %d\n\n" % (SHUTDOWN_RETRY_AFTER_S * 1000)

Overflow = Callable[["ClientSession", int], None]


class SessionGone(GatewayError):
    """The session id is unknown, ended, or belongs to another principal (all look the same: 404).

    Answered as the official TypeScript SDK server answers an unknown Mcp-Session-Id (Issue 9 item 9): HTTP 404,
    `{"jsonrpc": "2.0", "error": {"code": -32001, "message": "Session not found"}, "id": null}`; a client starts a
    new session on 404, as the spec says.
    """

    http_status = 404
    jsonrpc_code = SESSION_NOT_FOUND


class ClientSession:
    """One client's legacy session with one server."""

    def __init__(
        self,
        *,
        server: str,
        era: str,
        principal: str | None,
        backend: "Backend",
        own_backend: bool,
        outbox_max_bytes: int = OUTBOX_MAX_BYTES,
        max_inflight: int = MAX_INFLIGHT,
        replay: ReplayBuffer | None = None,
    ) -> None:
        self.id = secrets.token_hex(16)
        self.server = server
        self.era = era
        self.principal = principal
        self.credential: str | None = None  # hash of the token that opened it: revoking that token ends it
        self.backend = backend
        self.own_backend = own_backend  # isolation: per-session; the child dies with the session
        self.protocol_version: str | None = None
        self.client_info: Any = None
        self.created = time.monotonic()
        self.last_seen = self.created
        self.outbox: collections.deque[bytes] = collections.deque()  # messages (JSON), framed as SSE by take()
        self.outbox_bytes = 0
        self.outbox_max_bytes = outbox_max_bytes
        self.overflowed = 0  # the byte count that ended the session (0: it did not overflow)
        self.on_overflow: Overflow | None = None  # set by the gateway: audit, then end the session
        self.wakeup = asyncio.Event()  # set by push() and close(); the stream writer waits on it alone
        self.inflight: dict[Any, int] = {}  # the client's request id → gateway id, for cancellation
        self.max_inflight = max_inflight
        self.inflight_refused = False  # the first refusal is audited, not every one of a flood
        self.subscriptions: set[str] = set()  # URIs; the backend refcounts them across sessions (Issue 11 item 3)
        self.log_level: str | None = None  # its logging/setLevel (Issue 11 item 4); None: every level
        self.readers: set[asyncio.Task[Any]] = set()  # the tasks writing this session's open GET / SSE streams
        self.closed = asyncio.Event()
        self.farewell = b""  # set when the gateway shuts down: written last on the session's streams, which then end
        self.replay = replay  # event ids and replay (Issue 11 item 7): Streamable sessions only (None: no ids)
        self.post_streams: dict[Any, ResponseSlot] = {}  # client request id → its POST's streaming answer

    @property
    def streams(self) -> int:
        """Open GET / SSE streams reading the outbox."""
        return len(self.readers)

    @property
    def public_id(self) -> str:
        """What audit lines call this session."""
        return token_hash(self.id)[:PUBLIC_ID_CHARS]

    def close(self) -> None:
        """Mark the session ended and wake its stream so that it finishes (after writing what is queued)."""
        self.closed.set()
        self.wakeup.set()
        if self.replay is not None:
            self.replay.changed.set()  # resumed POST streams end too

    def end_streams(self, farewell: bytes) -> None:
        """Make the session's open streams write `farewell` and end (an HTTP+SSE one once its calls are answered)."""
        self.farewell = farewell
        self.wakeup.set()

    @property
    def streams_may_end(self) -> bool:
        """Whether a stream told to end may end now: an HTTP+SSE stream carries its session's answers, so it waits
        for the calls in flight (answered by the child, or failed when the shutdown grace ends)."""
        return bool(self.farewell) and not (self.era == "sse" and self.inflight)

    def touch(self) -> None:
        """Mark activity (idle reaping counts from here)."""
        self.last_seen = time.monotonic()

    def admit(self, request_id: Any) -> None:
        """Check a client request against the in-flight cap before it goes anywhere near the child.

        Raises:
            QuotaExceeded: `max_inflight` requests already wait on the child.
            ProtocolError: the id is already in flight (MCP forbids reusing it; it would also dodge the count).
        """
        inflight = self.inflight
        if len(inflight) < self.max_inflight and request_id not in inflight:
            return
        if request_id in inflight:
            raise ProtocolError("this request id is already in flight in this session")
        raise QuotaExceeded(
            f"too many requests in flight in this session (limit {self.max_inflight}); retry when some finish",
            quota="inflight_per_session",
            limit=self.max_inflight,
            retry_after_s=INFLIGHT_RETRY_AFTER_S,
        )

    def deliver(self, message: Answer) -> None:
        """Sink: a final response goes on the session's stream."""
        self.push(message)

    def notify(self, message: Message) -> None:
        """Sink: a related notification goes on the session's stream."""
        self.push(message)

    def cancelled(self, message: Message) -> None:
        """Sink: nothing is sent for a cancelled request on a stream (MCP cancellation rules)."""

    def server_request(self, message: Message) -> None:
        """Sink for a child→client request (Issue 11 item 6): on the stream of the call it belongs to, as the spec
        says SHOULD, else on the GET stream.

        A per-session child asks while handling a call (the MCP SDKs send it as part of that call), so with one call
        in flight it belongs to that call. With several it is ambiguous: the GET stream if one is open, else the
        newest streaming POST (a client that never opens GET would otherwise wait forever).
        """
        streams = self.post_streams
        target: ResponseSlot | None = None
        if len(self.inflight) == 1:
            target = streams.get(next(iter(self.inflight)))
        elif streams and not self.readers:
            target = next(reversed(streams.values()))
        if target is None:
            self.push(message)
        else:
            target.notify(message)

    def push(self, message: Answer) -> None:
        """Queue a message for the client's stream, within the byte budget.

        Over budget with a stream open, the client has stopped reading: the session overflows and ends. With no
        stream open (a Streamable client that never opened GET), the oldest queued events make room instead.
        """
        if self.closed.is_set():
            return
        event = dumps(message)  # framed when taken: a large answer is not copied once more to add 23 bytes
        size = len(event) + EVENT_FRAME_BYTES + OUTBOX_ENTRY_BYTES
        if self.outbox_bytes + size > self.outbox_max_bytes and self.outbox:
            if self.readers:
                self.overflow(self.outbox_bytes + size)
                return
            self._make_room(size)
        self.outbox.append(event)
        self.outbox_bytes += size
        self.wakeup.set()

    def take(self) -> list[bytes]:
        """Everything queued as SSE events, in the chunks to write (the budget is free again).

        Small events are framed and joined into one chunk (one write per wake-up under load); a large message is a
        chunk of its own, its frame's head and tail joined to its neighbours instead (Issue 11 item 1).
        """
        chunks: list[bytes] = []
        joining: list[bytes] = []
        replay = self.replay
        for body in self.outbox:  # with an id per event when the session is resumable (Issue 11 item 7)
            joining += (EVENT_HEAD if replay is None else replay.head(GET_STREAM, body), body, EVENT_TAIL)
            if len(body) >= LARGE_EVENT_BYTES:
                joining.pop()
                joining.pop()
                chunks += (b"".join(joining), body)
                joining = [EVENT_TAIL]
        chunks.append(b"".join(joining))
        self.outbox.clear()
        self.outbox_bytes = 0
        return chunks

    def overflow(self, size: int) -> None:
        """End the session: its reader stopped reading with `size` bytes owed; cut its streams off."""
        self.overflowed = size
        self.close()
        self.outbox.clear()  # nobody will read it
        self.outbox_bytes = 0
        for reader in list(self.readers):
            reader.cancel()
        if self.on_overflow is not None:
            self.on_overflow(self, size)

    def _make_room(self, size: int) -> None:
        outbox = self.outbox
        while outbox and self.outbox_bytes + size > self.outbox_max_bytes:
            self.outbox_bytes -= len(outbox.popleft()) + EVENT_FRAME_BYTES + OUTBOX_ENTRY_BYTES
