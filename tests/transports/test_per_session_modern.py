"""Per-session servers and 2026-07-28 requests (Issue 11 item 5, the part not bridged yet).

The gateway does not yet carry a per-session child's client requests (sampling, elicitation, roots) as the
revision's multi-round-trip `InputRequiredResult`s. Until it does, a 2026-07-28 request to such a server is refused
with -32022 naming only the handshake versions and saying what to do: the official SDK client in its default
(auto) mode then falls back to `initialize` by itself and gets the child's sampling request, as directly over
stdio; a client pinned to 2026-07-28 is told why and what to use instead.
"""

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CreateMessageRequestParams, CreateMessageResult, TextContent

from mcp_bastion.errors import UNSUPPORTED_PROTOCOL_VERSION
from mcp_bastion.protocol import HANDSHAKE_VERSIONS
from tests.harness import TOOLBOX, run_gateway, spec

pytestmark = pytest.mark.anyio


async def sampling(context: object, params: CreateMessageRequestParams) -> CreateMessageResult:
    content = params.messages[0].content
    assert isinstance(content, TextContent)
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"re {content.text}"), model="m")


async def sample(transport: Any) -> tuple[str, str | None]:
    async with Client(transport, sampling_callback=sampling) as client:  # mode="auto", the SDK's default
        result = await client.call_tool("sample", {"prompt": "p-11-5"})
        version = client.session.protocol_version
    block = result.content[0]
    assert isinstance(block, TextContent)
    return str(json.loads(block.text)["content"]["text"]), version


async def test_an_auto_mode_client_falls_back_to_the_handshake_on_a_per_session_server_and_gets_sampling(
    tmp_path: Path,
) -> None:
    """Issue 11 item 5: the SDK's default mode works on a per-session server through the gateway as over stdio."""
    with anyio.fail_after(30):
        params = StdioServerParameters(command=TOOLBOX[0], args=TOOLBOX[1:])
        with (tmp_path / "stderr.log").open("w") as sink:
            direct = await sample(stdio_client(params, errlog=sink))
        with run_gateway([spec("own", isolation="per-session")], tmp_path) as gateway:
            async with httpx2.AsyncClient() as http:  # the SDK leaves a client it was given open
                relayed = await sample(streamable_http_client(gateway.mcp("own"), http_client=http))
    assert direct[0] == relayed[0] == "re p-11-5"
    assert relayed[1] in HANDSHAKE_VERSIONS


async def test_a_pinned_2026_07_28_client_is_told_why_a_per_session_server_refuses_it_and_what_to_use(
    tmp_path: Path,
) -> None:
    """Issue 11 item 5: -32022 (HTTP 400) listing the handshake versions, naming isolation and the way out."""
    with run_gateway([spec("own", isolation="per-session")], tmp_path) as gateway, anyio.fail_after(30):
        async with (
            httpx2.AsyncClient() as http,  # the SDK leaves a client it was given open
            Client(
                streamable_http_client(gateway.mcp("own"), http_client=http),
                mode="2026-07-28",
                sampling_callback=sampling,
            ) as client,
        ):
            with pytest.raises(MCPError) as refused:
                await client.call_tool("echo", {"text": "x"})
    error = refused.value.error
    assert error.code == UNSUPPORTED_PROTOCOL_VERSION
    assert "isolation: per-session" in error.message
    assert "mode='auto'" in error.message
    assert error.data["supported"] == list(HANDSHAKE_VERSIONS)
