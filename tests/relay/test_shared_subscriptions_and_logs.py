"""Two official Python SDK sessions on one shared child (Issue 11 items 3 and 4), real processes, real HTTP.

Each scenario also runs directly over stdio against the same server (tests/fixtures/toolbox.py), to show the
gateway adds no failure. "Nothing arrived" is proven with markers: a later event the client must see first.
"""

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters

from tests.harness import TOOLBOX, RunningGateway, run_gateway, spec

# resources/subscribe and logging/setLevel are legacy-era methods (removed in 2026-07-28): the SDK warns on each use.
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")]

WAIT_S = 20
SHARED = "toolbox://shared"


class Seen:
    """What one client received: resource updates (URIs) and log lines (data), in order."""

    def __init__(self) -> None:
        self.updates: list[str] = []
        self.logs: list[Any] = []
        self.changed = anyio.Event()

    async def on_message(self, message: Any) -> None:
        note = getattr(message, "root", message)
        if getattr(note, "method", None) == "notifications/resources/updated":
            self.updates.append(str(note.params.uri))
            self._wake()

    async def on_log(self, params: Any) -> None:
        self.logs.append(params.data)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, what: str, count: int) -> list[Any]:
        """Wait (bounded by the caller) until `count` updates or logs arrived; return them."""
        while len(getattr(self, what)) < count:
            await self.changed.wait()
        return list(getattr(self, what))


@asynccontextmanager
async def over_gateway(gateway: RunningGateway, seen: Seen) -> AsyncIterator[Client]:
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(timeout=WAIT_S) as http:  # the SDK leaves a client it was given open
        transport = streamable_http_client(gateway.mcp("toolbox"), http_client=http)
        async with Client(transport, mode="legacy", message_handler=seen.on_message, logging_callback=seen.on_log) as c:
            yield c


@asynccontextmanager
async def over_stdio(seen: Seen) -> AsyncIterator[Client]:
    server = StdioServerParameters(command=sys.executable, args=TOOLBOX[1:])
    async with Client(server, message_handler=seen.on_message, logging_callback=seen.on_log) as c:
        yield c


async def text(client: Client, tool: str, **args: Any) -> str:
    answer = await client.call_tool(tool, args)
    return str(answer.content[0].text)  # type: ignore[union-attr]


async def test_one_clients_unsubscribe_leaves_the_other_subscribed_and_updates_reach_only_subscribers(
    tmp_path: Path,
) -> None:
    """Issue 11 item 3: A and B subscribe to one URI, A unsubscribes, B still gets its updates and A none."""
    a_seen, b_seen, direct_seen = Seen(), Seen(), Seen()
    with run_gateway([spec("toolbox")], tmp_path) as gateway, anyio.fail_after(WAIT_S):
        async with over_gateway(gateway, a_seen) as a, over_gateway(gateway, b_seen) as b:
            await a.subscribe_resource(SHARED)
            await b.subscribe_resource(SHARED)
            await a.subscribe_resource(SHARED)  # a repeat is answered (by the gateway) like the first
            await a.unsubscribe_resource(SHARED)
            assert await text(b, "touch", uri=SHARED) == "touched"
            assert await b_seen.until("updates", 1) == [SHARED]
            await a.subscribe_resource("toolbox://a-marker")
            await text(a, "touch", uri="toolbox://a-marker")
            assert await a_seen.until("updates", 1) == ["toolbox://a-marker"], "A got an update it unsubscribed"
        async with over_stdio(direct_seen) as direct:
            await direct.subscribe_resource(SHARED)
            await text(direct, "touch", uri=SHARED)
            assert await direct_seen.until("updates", 1) == [SHARED]


async def test_log_lines_reach_only_their_callers_session_and_one_clients_level_silences_no_other(
    tmp_path: Path,
) -> None:
    """Issue 11 item 4: B's line during B's only call reaches B, not A; A's setLevel(error) leaves B's info alone;
    the child runs at the most verbose level asked (info)."""
    a_seen, b_seen, direct_seen = Seen(), Seen(), Seen()
    with run_gateway([spec("toolbox")], tmp_path) as gateway, anyio.fail_after(WAIT_S):
        async with over_gateway(gateway, a_seen) as a, over_gateway(gateway, b_seen) as b:
            await b.set_logging_level("info")
            await a.set_logging_level("error")  # the last to ask: a child told directly would now drop B's info
            assert await text(b, "say", level="info", data="b-info") == "said"
            assert await b_seen.until("logs", 1) == ["b-info"]
            await text(a, "say", level="info", data="a-info")  # filtered for A, which asked for error and above
            await text(a, "say", level="error", data="a-error")
            assert await a_seen.until("logs", 1) == ["a-error"], "A got B's line or its own filtered one"
            assert await text(b, "level") == "info"
            assert b_seen.logs == ["b-info"]
        async with over_stdio(direct_seen) as direct:
            await direct.set_logging_level("info")
            await text(direct, "say", level="info", data="direct-info")
            assert await direct_seen.until("logs", 1) == ["direct-info"]
            assert await text(direct, "level") == "info"
