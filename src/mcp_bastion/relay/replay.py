"""SSE resumability for Streamable HTTP sessions (Issue 11 item 7): event ids and a bounded replay buffer.

Every event a session writes on one of its SSE streams gets an id `STREAM-SEQ`: SEQ counts the session's events
(unique across all its streams, as the spec requires), STREAM names the stream (0: the GET stream, 1, 2 ...: the
POST answers streamed in this session). What was written is kept, newest first to go, within a count and a byte
budget, so a client whose connection dropped reconnects with GET + `Last-Event-ID` and gets what came after that id
on that stream only (and, for a POST stream still waiting for its answer, the rest of it as it comes). The buffer
is the session's: events expire with it, and no other session can name them.
Modelled on the official TypeScript SDK's `EventStore` (`storeEvent(streamId, message)` gives the id,
`replayEventsAfter(lastEventId)` replays that stream), kept in memory and bounded.
"""

import asyncio
import collections
from typing import NamedTuple

REPLAY_MAX_EVENTS = 256  # default events kept per session for replay (Settings.sse_replay_max_events; 0: off)
# Default bytes kept per session for replay (Settings.sse_replay_max_bytes): a few ordinary answers; a larger one
# is written but not kept (its stream cannot be resumed past it).
REPLAY_MAX_BYTES = 4 * 1024 * 1024
REPLAY_ENTRY_BYTES = 64  # what one kept event costs beyond its bytes (tuple, deque slot): tiny ones count
GET_STREAM = 0
EVENT_ID_MAX_CHARS = 40  # two decimal counters and a dash; a longer Last-Event-ID is not one of ours


class Event(NamedTuple):
    """One event written on a stream: its sequence number, its stream, the JSON-RPC message, whether it ended it."""

    seq: int
    stream: int
    body: bytes
    final: bool


class ReplayBuffer:
    """One session's event ids, open POST streams and kept events."""

    __slots__ = ("changed", "events", "held_bytes", "max_bytes", "max_events", "open", "seq", "streams")

    def __init__(self, max_events: int = REPLAY_MAX_EVENTS, max_bytes: int = REPLAY_MAX_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.events: collections.deque[Event] = collections.deque()
        self.held_bytes = 0
        self.seq = 0
        self.streams = 0  # POST streams opened so far (their numbers are 1..streams)
        self.open: set[int] = set()  # POST streams still owed their answer
        self.changed = asyncio.Event()  # set when an event is kept or a stream ends: resumed streams wait on it

    def open_stream(self) -> int:
        """A new POST stream's number."""
        self.streams += 1
        self.open.add(self.streams)
        return self.streams

    def close_stream(self, stream: int) -> None:
        """The POST stream ended (its answer written, or its request abandoned)."""
        self.open.discard(stream)
        self.changed.set()

    def head(self, stream: int, body: bytes, *, final: bool = False) -> bytes:
        """The id and event lines of the next event on `stream` (its data follows); keeps it for replay."""
        self.seq += 1
        self.keep(Event(self.seq, stream, body, final))
        return b"id: %d-%d\nevent: message\ndata: " % (stream, self.seq)

    def priming(self, stream: int) -> bytes:
        """An event with an id and no data: lets a client resume a POST stream before anything else is on it."""
        self.seq += 1
        return b"id: %d-%d\ndata: \n\n" % (stream, self.seq)

    def keep(self, event: Event) -> None:
        """Keep an event within the budget (the oldest go first; one larger than the whole budget is not kept)."""
        size = len(event.body) + REPLAY_ENTRY_BYTES
        if size <= self.max_bytes:
            events = self.events
            events.append(event)
            self.held_bytes += size
            while len(events) > self.max_events or self.held_bytes > self.max_bytes:
                self.held_bytes -= len(events.popleft().body) + REPLAY_ENTRY_BYTES
        self.changed.set()

    def after(self, stream: int, seq: int) -> list[Event]:
        """The kept events of `stream` written after event `seq`, oldest first."""
        return [event for event in self.events if event.stream == stream and event.seq > seq]

    def resumable(self, stream: int) -> bool:
        """Whether a client can resume `stream`: the GET stream always, a POST stream while open or its end is kept."""
        if stream == GET_STREAM or stream in self.open:
            return True
        return any(event.stream == stream and event.final for event in self.events)


def parse_event_id(value: str) -> tuple[int, int] | None:
    """(stream, seq) of a `Last-Event-ID` we issued, or None."""
    if len(value) > EVENT_ID_MAX_CHARS:
        return None
    stream, dash, seq = value.strip().partition("-")
    if not dash or not stream.isdigit() or not seq.isdigit():
        return None
    return int(stream), int(seq)


def frame(event: Event) -> list[bytes]:
    """A kept event as it is written again (the body is not copied to join it)."""
    return [b"id: %d-%d\nevent: message\ndata: " % (event.stream, event.seq), event.body, b"\n\n"]
