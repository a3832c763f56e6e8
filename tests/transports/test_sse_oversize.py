"""Issue 11 item 1 (SSE): an oversized request on HTTP+SSE is answered on the session's stream with a JSON-RPC error
for its id (the POST accepted: SDK clients drop the session on a failed POST), so a client that waits there (the
Python SDK's sse_client) hears at once instead of hanging; without a readable id the POST is a plain 413."""

from collections.abc import Iterator

import anyio
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from tests.harness import RunningGateway, run_gateway, spec
from tests.transports.wire import http_client, sse_initialize, sse_session

pytestmark = pytest.mark.anyio

CAP = 64 * 1024  # MAX_BODY_BYTES for these tests: small, so "oversized" stays cheap
ANSWER_BOUND_S = 10.0  # the refusal arrives at once; this only stops a hang


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway([spec("toolbox")], tmp_path_factory.mktemp("sse-oversize"), max_body_bytes=CAP) as running:
        yield running


@pytest.mark.parametrize("id_last", [False, True], ids=["id-first", "id-last"])
async def test_an_oversized_post_gets_its_error_on_the_stream_wherever_the_id_is(
    gateway: RunningGateway, id_last: bool
) -> None:
    """Wherever the client wrote the id (the Python SDK first, the TypeScript SDK last), the stream carries a
    JSON-RPC error for it saying the request was too large; the session keeps working."""
    text = "x" * (CAP * 2)
    params = f'{{"name":"echo","arguments":{{"text":"{text}"}}}}'
    body = (
        f'{{"jsonrpc":"2.0","method":"tools/call","params":{params},"id":41}}'
        if id_last
        else f'{{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{params}}}'
    )
    async with http_client() as client, sse_session(client, gateway.url, "toolbox") as (reader, messages):
        await sse_initialize(client, reader, messages)
        accepted = await client.post(messages, content=body.encode(), headers={"Content-Type": "application/json"})
        assert accepted.status_code == 202
        with anyio.fail_after(ANSWER_BOUND_S):
            answer = await reader.message(lambda m: m.get("id") == 41)
        assert answer["error"]["code"] == -32600
        assert "too large" in answer["error"]["message"]
        ok = await client.post(
            messages,
            json={
                "jsonrpc": "2.0",
                "id": 42,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "small"}},
            },
        )
        assert ok.status_code == 202
        with anyio.fail_after(ANSWER_BOUND_S):
            assert "result" in await reader.message(lambda m: m.get("id") == 42)


async def test_the_sdk_sse_client_gets_an_error_for_an_oversized_call_instead_of_hanging(
    gateway: RunningGateway,
) -> None:
    """The official Python SDK's sse_client: the oversized call raises at once; the next call succeeds."""
    with anyio.fail_after(ANSWER_BOUND_S * 2):
        async with Client(sse_client(gateway.mcp("toolbox") + "/sse"), mode="legacy") as client:
            with pytest.raises(MCPError, match="too large"):
                await client.call_tool("echo", {"text": "y" * (CAP * 2)})
            small = await client.call_tool("echo", {"text": "fits"})
            assert small.content[0].text == "fits"


async def test_an_oversized_post_without_a_readable_id_is_a_plain_413(gateway: RunningGateway) -> None:
    """Nothing to answer on the stream: the POST itself is refused, and the session keeps working."""
    async with http_client() as client, sse_session(client, gateway.url, "toolbox") as (reader, messages):
        await sse_initialize(client, reader, messages)
        junk = b"[" + b"1," * CAP + b"1]"
        refused = await client.post(messages, content=junk, headers={"Content-Type": "application/json"})
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == -32600
