"""Where messages for a client go. A sink never blocks the child's reader."""

import asyncio
from typing import Protocol

from mcp_bastion.jsonrpc import Answer, Message

SLOT_NOTIFICATIONS_MAX = 1024  # progress updates buffered for one streaming response before the oldest drop


class Sink(Protocol):
    """Receives the final answer to a request, and notifications related to it."""

    def deliver(self, message: Answer) -> None:
        """The final response (id already restored to the client's); a large result may come as its bytes."""

    def notify(self, message: Message) -> None:
        """A notification related to the request (progress)."""

    def cancelled(self, message: Message) -> None:
        """The request was cancelled; `message` is the error an HTTP response still owed an answer may carry."""


class ResponseSlot:
    """One HTTP request waiting for its answer; optionally streaming related notifications."""

    __slots__ = ("future", "stream")

    def __init__(self, *, streaming: bool = False) -> None:
        self.future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.stream: asyncio.Queue[Message] | None = asyncio.Queue(SLOT_NOTIFICATIONS_MAX) if streaming else None

    def deliver(self, message: Answer) -> None:
        """Resolve the slot (first answer wins)."""
        if not self.future.done():
            self.future.set_result(message)

    def cancelled(self, message: Message) -> None:
        """An HTTP response is still open and owed an answer: end it with the cancellation error."""
        self.deliver(message)

    def notify(self, message: Message) -> None:
        """Queue a related notification if the response streams; else drop it (JSON responses carry none)."""
        if self.stream is None:
            return
        if self.stream.full():
            self.stream.get_nowait()
        self.stream.put_nowait(message)


class Listening(Protocol):
    """A 2026-07-28 `subscriptions/listen` stream, as the relay sees it (Issue 11 item 5).

    `uris` are its `resourceSubscriptions` (already authorized): they count in the same per-URI refcount as the
    legacy sessions' `resources/subscribe`, so the child is subscribed while any session or stream holds a URI.
    """

    uris: set[str]

    def push(self, message: Message) -> None:
        """A broadcast notification (list changed, resource updated); the stream keeps what it asked for."""
