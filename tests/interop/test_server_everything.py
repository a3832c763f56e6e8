"""npm @modelcontextprotocol/server-everything as a stdio child of the gateway, driven by the official SDK client
over Streamable HTTP (legacy sessions and stateless 2026-07-28) and HTTP+SSE."""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import RunningGateway, run_gateway, spec
from tests.interop.conftest import tool

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
EXPECTED_TOOLS = {"echo", "get-sum", "get-env", "get-tiny-image", "trigger-long-running-operation"}


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    command = [tool("mcp-server-everything"), "stdio"]
    with run_gateway([spec("everything", command)], tmp_path_factory.mktemp("everything")) as running:
        assert running.state("everything") == "running", running.health()
        yield running


@asynccontextmanager
async def client(gateway: RunningGateway, mode: str) -> AsyncIterator[Client]:
    if mode == "sse":
        async with Client(sse_client(gateway.mcp("everything") + "/sse"), mode="legacy") as session:
            yield session
        return
    # The SDK leaves an http_client it was given open: close it here so no connection outlives the test.
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        Client(streamable_http_client(gateway.mcp("everything"), http_client=http), mode=mode) as session,
    ):
        yield session


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "sse"])
async def test_everything_tools_resources_prompts(everything: RunningGateway, mode: str) -> None:
    with anyio.fail_after(40):
        async with client(everything, mode) as session:
            tools = await session.list_tools()
            names = {t.name for t in tools.tools}
            assert names >= EXPECTED_TOOLS, names
            echoed = await session.call_tool("echo", {"message": "through the gateway"})
            assert echoed.is_error is not True
            assert echoed.content[0].text == "Echo: through the gateway"
            summed = await session.call_tool("get-sum", {"a": 19, "b": 23})
            assert "42" in summed.content[0].text, summed
            image = await session.call_tool("get-tiny-image", {})
            assert any(c.type == "image" and c.mime_type == "image/png" and c.data for c in image.content), image

            resources = await session.list_resources()
            uris = [r.uri for r in resources.resources]
            assert uris, resources
            first = resources.resources[0]
            read = await session.read_resource(first.uri)
            assert read.contents
            assert read.contents[0].uri == first.uri
            assert getattr(read.contents[0], "text", None), read.contents[0]

            prompts = await session.list_prompts()
            assert {"simple-prompt", "args-prompt"} <= {p.name for p in prompts.prompts}
            prompt = await session.get_prompt("args-prompt", {"city": "Lisbon", "state": "Portugal"})
            assert "Lisbon" in str(prompt.messages[0].content.text)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_everything_long_running_tool_reports_progress(everything: RunningGateway, mode: str) -> None:
    """trigger-long-running-operation sends notifications/progress, which reach the client's progress_callback."""
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    with anyio.fail_after(40):
        async with client(everything, mode) as session:
            result = await session.call_tool(
                "trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=progress
            )
    assert result.is_error is not True
    assert "completed" in result.content[0].text.lower(), result
    assert [value for value, _, _ in seen] == [1, 2, 3, 4], seen
    assert all(total == 4 for _, total, _ in seen), seen
