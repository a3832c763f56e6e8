"""2026-07-28 resource subscriptions through a shared child (Issue 11 item 5), real processes, real HTTP.

The official Python SDK client in its default (auto) mode and pinned to 2026-07-28 opens `subscriptions/listen`
with `resourceSubscriptions` on the toolbox fixture (whose `touch` tool sends notifications/resources/updated
for a URI it is subscribed to). Each scenario also runs directly over stdio: the toolbox speaks the initialize era
only, so there the auto-mode client falls back and subscribes with `resources/subscribe`.
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
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, Subscription

from tests.harness import TOOLBOX, RunningGateway, run_gateway, spec
from tests.security.support import add_token, secure_gateway

# resources/subscribe is a legacy-era method (the stdio leg and the legacy session): the SDK warns on each use.
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")]

WAIT_S = 20
SHARED = "toolbox://shared"
MARKER = "toolbox://marker"


@asynccontextmanager
async def over_gateway(
    gateway: RunningGateway, mode: str = "auto", headers: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(timeout=WAIT_S, headers=headers or {}) as http,  # the SDK leaves a given client open
        Client(streamable_http_client(gateway.mcp("toolbox"), http_client=http), mode=mode, **options) as c,
    ):
        yield c


async def touch(client: Client, uri: str) -> None:
    answer = await client.call_tool("touch", {"uri": uri})
    assert answer.content[0].text == "touched"  # type: ignore[union-attr]


async def next_update(sub: Subscription) -> str:
    event = await sub.__anext__()
    assert isinstance(event, ResourceUpdated), event
    return event.uri


@pytest.mark.parametrize("mode", ["auto", "2026-07-28"])
async def test_a_listen_stream_gets_updates_of_the_uris_it_asked_for_and_no_other(tmp_path: Path, mode: str) -> None:
    """Issue 11 item 5: auto (the SDK's default) and pinned 2026-07-28 clients get resource updates on a shared
    server; a stream that asked for another URI does not (its first event is its own marker)."""
    with run_gateway([spec("toolbox")], tmp_path) as gateway, anyio.fail_after(WAIT_S):
        async with over_gateway(gateway, mode) as a, over_gateway(gateway, mode) as b:
            assert a.session.protocol_version == "2026-07-28"
            async with (
                a.listen(resource_subscriptions=[SHARED]) as a_sub,
                b.listen(resource_subscriptions=[MARKER]) as b_sub,
            ):
                assert a_sub.honored.resource_subscriptions == [SHARED]
                await touch(b, SHARED)
                assert await next_update(a_sub) == SHARED
                await touch(a, MARKER)
                assert await next_update(b_sub) == MARKER, "B's stream got an update of a URI it did not ask for"
    direct_updates: list[str] = []

    async def on_message(message: Any) -> None:
        note = getattr(message, "root", message)
        if getattr(note, "method", None) == "notifications/resources/updated":
            direct_updates.append(str(note.params.uri))

    server = StdioServerParameters(command=sys.executable, args=TOOLBOX[1:])
    with anyio.fail_after(WAIT_S):
        async with Client(server, message_handler=on_message) as direct:
            await direct.subscribe_resource(SHARED)
            await touch(direct, SHARED)
            while not direct_updates:
                await anyio.sleep(0.01)  # polled: the update is read by the session's receive loop
            assert direct_updates == [SHARED]


async def test_a_legacy_sessions_unsubscribe_leaves_a_listen_stream_subscribed_and_the_stream_leaving_frees_the_uri(
    tmp_path: Path,
) -> None:
    """Issue 11 items 3 and 5: one per-URI refcount across eras; the child is unsubscribed when the last holder
    (here the stream) leaves, so a later touch sends nothing."""
    with run_gateway([spec("toolbox")], tmp_path) as gateway, anyio.fail_after(WAIT_S):
        async with over_gateway(gateway, "legacy") as legacy, over_gateway(gateway) as modern:
            async with modern.listen(resource_subscriptions=[SHARED, MARKER]) as sub:
                await legacy.subscribe_resource(SHARED)
                await legacy.unsubscribe_resource(SHARED)
                await touch(legacy, SHARED)
                assert await next_update(sub) == SHARED
            backend = gateway.app.gateway.backends["toolbox"]
            while backend.listeners or any(p.method == "resources/unsubscribe" for p in backend.pending.values()):
                await anyio.sleep(0.01)  # polled (bounded by fail_after): the stream's end reaches the gateway
            async with modern.listen(resource_subscriptions=[MARKER]) as marker:
                await touch(modern, SHARED)  # nobody holds SHARED: the child is not subscribed and stays silent
                await touch(modern, MARKER)
                assert await next_update(marker) == MARKER


async def test_a_token_hears_only_of_the_resources_its_scopes_allow(tmp_path: Path) -> None:
    """Issue 11 item 5: the one authorizer decides; a URI the token may not read is left out of the ack, audited."""
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=None) as gateway, anyio.fail_after(WAIT_S):
        token = add_token(gateway, "narrow", f"resource:toolbox/{MARKER}", "tool:toolbox/*")
        async with over_gateway(gateway, headers={"Authorization": f"Bearer {token}"}) as client:
            async with client.listen(resource_subscriptions=[SHARED, MARKER]) as sub:
                assert sub.honored.resource_subscriptions == [MARKER]
                await touch(client, SHARED)
                await touch(client, MARKER)
                assert await next_update(sub) == MARKER
        audit = (tmp_path / "logs" / "audit.jsonl").read_text()
        assert '"method":"subscriptions/listen"' in audit.replace(" ", "")
        assert SHARED in audit
