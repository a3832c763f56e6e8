"""Revocation everywhere, at once (Issue 12 item 4): a revocation on any instance (or by the CLI) is published on
Redis; every instance hears it and ends what the revoked credential or session opened, within milliseconds.

The message says only what to look at again ("sweep": a token or a login session was revoked; "mcp": one MCP
session, by its public id). Nothing secret travels: each instance re-checks its own credentials against the store.
The periodic sweep (REVOCATION_CHECK_S) stays as the backstop for a message lost while Redis was down.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mcp_bastion.cluster.bus import ClusterBus
from mcp_bastion.errors import DependencyUnavailable

log = logging.getLogger("mcp_bastion.cluster")

RESUBSCRIBE_S = 0.5  # after the channel is lost: Redis back within this is heard within this
SWEEP = "sweep"
MCP_SESSION = "mcp"

Handler = Callable[[dict[str, Any]], Awaitable[object]]


class RevocationChannel:
    """Publishes revocations and delivers everyone's to `handler` (one listener task per instance)."""

    def __init__(self, bus: ClusterBus, origin: str) -> None:
        self.bus = bus
        self.origin = origin
        self._task: asyncio.Task[None] | None = None

    async def publish(self, kind: str, **fields: Any) -> None:
        """Tell every instance; best effort (Redis down: the periodic sweep still ends it, and new requests fail
        closed on the store anyway)."""
        message = json.dumps({"kind": kind, "from": self.origin, **fields})
        with contextlib.suppress(DependencyUnavailable):
            await self.bus.publish(message)

    def start(self, handler: Handler) -> None:
        """Listen until closed, re-subscribing after an outage."""
        self._task = asyncio.get_running_loop().create_task(self._listen(handler), name="cluster-revocations")

    async def _listen(self, handler: Handler) -> None:
        while True:
            try:
                async for raw in self.bus.messages():
                    await self._deliver(handler, raw)
            except DependencyUnavailable:
                pass  # the heartbeat's breaker reports the outage
            except Exception:  # the top of a task: log it and listen again
                log.exception("revocation channel failed")
            await asyncio.sleep(RESUBSCRIBE_S)

    async def _deliver(self, handler: Handler, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if isinstance(message, dict) and isinstance(message.get("kind"), str):
            await handler(message)

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def announce(redis_url: str, kind: str = SWEEP, **fields: Any) -> None:
    """Publish one revocation from outside a running instance (the CLI), then close the connection."""
    bus = ClusterBus(redis_url)
    try:
        await RevocationChannel(bus, "cli").publish(kind, **fields)
    finally:
        await bus.close()
