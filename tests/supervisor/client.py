"""What the supervisor tests share: an SDK client over Streamable HTTP and bounded async polling."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import RunningGateway

POLL_S = 0.02


@asynccontextmanager
async def sdk_client(gateway: RunningGateway, name: str) -> AsyncIterator[Client]:
    """The official SDK client on /mcp/{name} (Streamable HTTP, legacy session era).

    The SDK leaves an http_client it was given open: it is closed here, so no connection outlives the test.
    """
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        Client(streamable_http_client(gateway.mcp(name), http_client=http), mode="legacy") as client,
    ):
        yield client


async def server_view(http: httpx.AsyncClient, gateway: RunningGateway, name: str) -> dict[str, Any]:
    """One server's entry in /health."""
    response = await http.get(f"{gateway.url}/health")
    assert response.status_code == 200
    view: dict[str, Any] = response.json()["servers"][name]
    return view


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll `check` without blocking the event loop; fail the test past `timeout`."""
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(POLL_S)


async def until_running(http: httpx.AsyncClient, gateway: RunningGateway, name: str, not_pid: int | None) -> int:
    """Wait until `name` runs with a pid other than `not_pid`; return the new pid."""
    view: dict[str, Any] = {}

    async def running() -> bool:
        view.update(await server_view(http, gateway, name))
        return view["state"] == "running" and view["pid"] not in (None, not_pid)

    await eventually(running)
    pid: int = view["pid"]
    return pid
