"""The official MCP SDK client drives the gateway over every transport."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import RunningGateway

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def streamable(url: str, mode: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(timeout=10) as http,  # the SDK leaves a client it was given open
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_streamable_http_client_lists_and_calls_tools(gateway: RunningGateway, mode: str) -> None:
    """tools/list, tools/call, resources and prompts over Streamable HTTP in both eras."""
    with anyio.fail_after(20):
        async with streamable(gateway.mcp("demo"), mode) as client:
            tools = await client.list_tools()
            assert [t.name for t in tools.tools] == ["echo", "add", "now"]
            answer = await client.call_tool("add", {"a": 2, "b": 40})
            assert answer.content[0].text == "42"
            resources = await client.list_resources()
            assert resources.resources[0].uri == "demo://readme"
            read = await client.read_resource("demo://readme")
            assert "demo server" in read.contents[0].text
            prompt = await client.get_prompt("greet", {"name": "Ada"})
            assert "Ada" in prompt.messages[0].content.text


async def test_sse_client_lists_and_calls_tools(gateway: RunningGateway) -> None:
    """The 2024-11-05 HTTP+SSE transport with the SDK's sse_client."""
    with anyio.fail_after(20):
        async with Client(sse_client(gateway.mcp("demo") + "/sse"), mode="legacy") as client:
            tools = await client.list_tools()
            assert {t.name for t in tools.tools} == {"echo", "add", "now"}
            answer = await client.call_tool("echo", {"text": "over sse"})
            assert answer.content[0].text == "over sse"
