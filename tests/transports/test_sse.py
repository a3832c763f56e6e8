"""HTTP+SSE (2024-11-05): the endpoint event, the messages POST and the stream's headers and keepalives."""

from collections.abc import Iterator

import anyio
import httpx
import pytest

from tests.harness import RunningGateway, run_gateway, spec, wait_until
from tests.transports.wire import SseReader, http_client, rpc, sse_initialize, sse_session, text_of, tool_call

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway([spec("toolbox")], tmp_path_factory.mktemp("sse"), sse_keepalive_s=0.2) as running:
        yield running


async def test_the_first_event_is_endpoint_with_this_servers_messages_url(gateway: RunningGateway) -> None:
    async with (
        http_client() as client,
        client.stream("GET", gateway.mcp("toolbox") + "/sse", headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200
        with anyio.fail_after(5):
            name, data = await SseReader(response).event()
    assert name == "endpoint"
    path, _, query = data.partition("?")
    assert path == "/mcp/toolbox/messages"
    assert query.startswith("session_id=")
    assert len(query.removeprefix("session_id=")) >= 32


async def test_the_sse_stream_is_unbuffered_and_not_cached(gateway: RunningGateway) -> None:
    async with (
        http_client() as client,
        client.stream("GET", gateway.mcp("toolbox") + "/sse", headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in response.headers["cache-control"]
        assert response.headers["x-accel-buffering"] == "no"


async def test_keepalive_comments_arrive_on_an_idle_stream(gateway: RunningGateway) -> None:
    async with http_client() as client, sse_session(client, gateway.url, "toolbox") as (reader, _):
        with anyio.fail_after(5):
            comments = [await reader.item() for _ in range(3)]
    assert comments == [("comment", "keepalive")] * 3


async def test_a_post_without_session_id_is_400(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.post(gateway.mcp("toolbox") + "/messages", json=rpc(1, "ping"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


async def test_a_post_to_an_unknown_session_is_404(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.post(gateway.mcp("toolbox") + "/messages?session_id=" + "f" * 32, json=rpc(1, "ping"))
    assert response.status_code == 404
    assert "error" in response.json()


async def test_a_post_is_accepted_with_202_and_answered_on_the_stream(gateway: RunningGateway) -> None:
    async with http_client() as client, sse_session(client, gateway.url, "toolbox") as (reader, messages):
        await sse_initialize(client, reader, messages)
        response = await client.post(messages, json=tool_call(5, "echo", {"text": "on the stream"}))
        assert response.status_code == 202
        with anyio.fail_after(5):
            answer = await reader.message()
    assert answer["id"] == 5
    assert text_of(answer) == "on the stream"


async def test_the_session_ends_when_its_stream_is_closed(gateway: RunningGateway) -> None:
    async with http_client() as client:
        async with sse_session(client, gateway.url, "toolbox") as (reader, messages):
            await sse_initialize(client, reader, messages)
            assert (await client.post(messages, json=rpc(1, "ping"))).status_code == 202
        wait_until(lambda: httpx.post(messages, json=rpc(2, "ping")).status_code == 404, timeout=5)
