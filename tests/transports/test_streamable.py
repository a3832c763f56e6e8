"""Legacy Streamable HTTP (2025-03-26 … 2025-11-25): status codes and bodies of the session endpoint."""

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import RunningGateway, run_gateway, spec
from tests.transports.wire import BOTH, LEGACY_HEADERS, http_client, initialize, open_legacy, rpc, session_headers

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway([spec("toolbox")], tmp_path_factory.mktemp("streamable")) as running:
        yield running


def assert_jsonrpc_error(response: httpx.Response, status: int, code: int | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert "error" in body
    if code is not None:
        assert body["error"]["code"] == code


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", ""])
async def test_a_post_that_does_not_accept_both_types_is_406(gateway: RunningGateway, accept: str) -> None:
    async with http_client() as client:
        response = await client.post(
            gateway.mcp("toolbox"), json=initialize(), headers={"Accept": accept, "Content-Type": "application/json"}
        )
    assert_jsonrpc_error(response, 406)


async def test_a_post_with_another_content_type_is_415(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.post(
            gateway.mcp("toolbox"),
            content=b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}',
            headers={"Accept": BOTH, "Content-Type": "text/plain"},
        )
    assert_jsonrpc_error(response, 415)


async def test_a_request_without_a_session_id_is_400(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.post(gateway.mcp("toolbox"), json=rpc(1, "tools/list"), headers=LEGACY_HEADERS)
    assert_jsonrpc_error(response, 400, -32600)


async def test_an_unknown_session_id_is_404(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.post(
            gateway.mcp("toolbox"), json=rpc(1, "tools/list"), headers=session_headers("0" * 32)
        )
    assert_jsonrpc_error(response, 404)


async def test_delete_ends_the_session_and_later_requests_are_404(gateway: RunningGateway) -> None:
    url = gateway.mcp("toolbox")
    async with http_client() as client:
        session = await open_legacy(client, url)
        listed = await client.post(url, json=rpc(1, "tools/list"), headers=session_headers(session))
        assert listed.status_code == 200
        deleted = await client.delete(url, headers={"Mcp-Session-Id": session})
        assert deleted.status_code == 200
        after = await client.post(url, json=rpc(2, "tools/list"), headers=session_headers(session))
        assert_jsonrpc_error(after, 404)
        again = await client.delete(url, headers={"Mcp-Session-Id": session})
        assert_jsonrpc_error(again, 404)


async def test_a_get_stream_without_a_session_is_400(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.get(gateway.mcp("toolbox"), headers={"Accept": "text/event-stream"})
    assert_jsonrpc_error(response, 400)


@pytest.mark.parametrize("version", ["1999-01-01", "2099-01-01"])
async def test_an_unsupported_protocol_version_header_in_a_session_is_400(
    gateway: RunningGateway, version: str
) -> None:
    url = gateway.mcp("toolbox")
    async with http_client() as client:
        session = await open_legacy(client, url)
        headers = {**session_headers(session), "MCP-Protocol-Version": version}
        response = await client.post(url, json=rpc(1, "tools/list"), headers=headers)
    assert_jsonrpc_error(response, 400)
    assert gateway.health()["servers"]["toolbox"]["pending"] == 0


async def test_put_is_405(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.put(gateway.mcp("toolbox"), json=initialize(), headers=LEGACY_HEADERS)
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize(
    ("asked", "answered"), [("2025-03-26", "2025-03-26"), ("2025-11-25", "2025-11-25"), ("1999-01-01", "2025-11-25")]
)
async def test_initialize_answers_with_a_session_id_and_the_negotiated_version(
    gateway: RunningGateway, asked: str, answered: str
) -> None:
    async with http_client() as client:
        response = await client.post(gateway.mcp("toolbox"), json=initialize(asked), headers=LEGACY_HEADERS)
    assert response.status_code == 200
    assert len(response.headers["mcp-session-id"]) >= 32
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"] == 0
    assert body["result"]["protocolVersion"] == answered
    assert body["result"]["serverInfo"]["name"] == "toolbox"


async def test_a_notification_is_accepted_with_202_and_no_body(gateway: RunningGateway) -> None:
    url = gateway.mcp("toolbox")
    async with http_client() as client:
        session = await open_legacy(client, url)
        response = await client.post(
            url, json={"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}, headers=session_headers(session)
        )
    assert response.status_code == 202
    assert response.content == b""


async def test_the_get_stream_and_streamed_answers_are_unbuffered_sse(gateway: RunningGateway) -> None:
    url = gateway.mcp("toolbox")
    async with http_client() as client:
        session = await open_legacy(client, url)
        get_headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session}
        async with client.stream("GET", url, headers=get_headers) as stream:
            assert stream.status_code == 200
            assert_sse_headers(stream)
        body = rpc(1, "tools/call", {"name": "slow", "arguments": {"steps": 1}, "_meta": {"progressToken": "p"}})
        async with client.stream("POST", url, json=body, headers=session_headers(session)) as streamed:
            assert streamed.status_code == 200
            assert_sse_headers(streamed)
            await streamed.aread()


def assert_sse_headers(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "no-cache" in response.headers["cache-control"]
    assert response.headers["x-accel-buffering"] == "no"
