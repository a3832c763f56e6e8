"""Stateless Streamable HTTP (2026-07-28): header/body validation, discovery, result shape, disconnect = cancel."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.harness import RunningGateway, run_gateway
from tests.transports.wire import (
    MODERN,
    SseReader,
    events,
    eventually,
    health,
    http_client,
    modern_headers,
    modern_meta,
    modern_request,
    received,
    recorder,
    rpc,
    text_of,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("modern")
    with run_gateway([recorder("rec", tmp / "recorder.jsonl")], tmp) as running:
        yield running


async def post(gateway: RunningGateway, body: Any, headers: dict[str, str]) -> httpx.Response:
    async with http_client() as client:
        return await client.post(gateway.mcp("rec"), json=body, headers=headers)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    return dict(body["error"])


def echo(request_id: int = 1) -> dict[str, Any]:
    return modern_request(request_id, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})


async def test_a_valid_tools_call_is_answered_with_json(gateway: RunningGateway) -> None:
    response = await post(gateway, echo(), modern_headers("tools/call", "echo"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "mcp-session-id" not in response.headers
    body = response.json()
    assert body["id"] == 1
    assert text_of(body) == "hi"
    assert body["result"]["resultType"] == "complete"


async def test_an_mcp_method_header_that_differs_from_the_body_is_400_header_mismatch(gateway: RunningGateway) -> None:
    response = await post(gateway, echo(), modern_headers("tools/list", "echo"))
    assert error_of(response, 400)["code"] == -32020


@pytest.mark.parametrize("name", ["add", None, "=?base64?YWRk?="])
async def test_an_mcp_name_header_that_differs_from_the_tool_is_400_header_mismatch(
    gateway: RunningGateway, name: str | None
) -> None:
    """A wrong name, a missing one, and a Base64-wrapped wrong one ("add") are all mismatches."""
    calls_before = health(gateway.url, "rec")["calls"]
    response = await post(gateway, echo(), modern_headers("tools/call", name))
    assert error_of(response, 400)["code"] == -32020
    assert health(gateway.url, "rec")["calls"] == calls_before


async def test_a_base64_wrapped_mcp_name_that_matches_is_accepted(gateway: RunningGateway) -> None:
    response = await post(gateway, echo(), modern_headers("tools/call", "=?base64?ZWNobw==?="))
    assert response.status_code == 200, response.text


async def test_a_request_without_meta_is_400_invalid_params(gateway: RunningGateway) -> None:
    body = rpc(1, "tools/call", {"name": "echo", "arguments": {}})
    response = await post(gateway, body, modern_headers("tools/call", "echo"))
    assert error_of(response, 400)["code"] == -32602


async def test_an_unsupported_version_is_400_with_the_supported_list(gateway: RunningGateway) -> None:
    body = rpc(1, "tools/list", {"_meta": modern_meta("2099-01-01")})
    response = await post(gateway, body, modern_headers("tools/list", version="2099-01-01"))
    error = error_of(response, 400)
    assert error["code"] == -32022
    assert MODERN in error["data"]["supported"]
    assert "2099-01-01" not in error["data"]["supported"]


async def test_server_discover_answers_versions_and_capabilities(gateway: RunningGateway) -> None:
    response = await post(gateway, modern_request(1, "server/discover"), modern_headers("server/discover"))
    assert response.status_code == 200
    result = response.json()["result"]
    assert MODERN in result["supportedVersions"]
    assert result["capabilities"]["tools"] == {"listChanged": True}
    assert result["resultType"] == "complete"


async def test_tools_list_carries_cache_hints_and_result_type(gateway: RunningGateway) -> None:
    response = await post(gateway, modern_request(1, "tools/list"), modern_headers("tools/list"))
    assert response.status_code == 200
    result = response.json()["result"]
    assert isinstance(result["ttlMs"], int)
    assert result["cacheScope"] in ("private", "public")
    assert result["resultType"] == "complete"
    assert "pid" in [tool["name"] for tool in result["tools"]]


@pytest.mark.parametrize("method", ["no/such/method", "initialize", "ping"])
async def test_a_method_this_revision_does_not_have_is_404_method_not_found(
    gateway: RunningGateway, method: str
) -> None:
    response = await post(gateway, modern_request(1, method), modern_headers(method))
    assert error_of(response, 404)["code"] == -32601


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
async def test_get_and_delete_with_the_modern_header_are_405(gateway: RunningGateway, verb: str) -> None:
    async with http_client() as client:
        response = await client.request(verb, gateway.mcp("rec"), headers={"MCP-Protocol-Version": MODERN})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_a_call_with_a_progress_token_streams_its_progress_then_the_result(gateway: RunningGateway) -> None:
    """Accept lists SSE and the call has a token: unbuffered SSE, the client's own token, then the shaped result."""
    params = {"name": "slow", "arguments": {"steps": 2, "seconds": 0.01}}
    body = modern_request(9, "tools/call", params, progressToken="mine")
    async with (
        http_client() as client,
        client.stream("POST", gateway.mcp("rec"), json=body, headers=modern_headers("tools/call", "slow")) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in response.headers["cache-control"]
        assert response.headers["x-accel-buffering"] == "no"
        reader = SseReader(response)
        with anyio.fail_after(10):
            messages = [await reader.message() for _ in range(3)]
    assert [m["params"] for m in messages[:2]] == [
        {"progressToken": "mine", "progress": 1, "total": 2},
        {"progressToken": "mine", "progress": 2, "total": 2},
    ]
    assert messages[2]["id"] == 9
    assert text_of(messages[2]) == "slept 2"
    assert messages[2]["result"]["resultType"] == "complete"


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "sse"])
async def test_closing_the_connection_during_a_call_cancels_it_in_the_child(tmp_path: Path, streaming: bool) -> None:
    """The 2026 wire cancels by disconnecting; the gateway tells the child and forgets the call."""
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("rec", log)], tmp_path) as gateway:
        meta = {"progressToken": "p1"} if streaming else {}
        body = modern_request(1, "tools/call", {"name": "slow", "arguments": {"steps": 100, "seconds": 0.05}}, **meta)

        async def call() -> None:
            async with (
                http_client() as client,
                client.stream("POST", gateway.mcp("rec"), json=body, headers=modern_headers("tools/call", "slow")) as r,
            ):
                await r.aread()

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await eventually(lambda: bool(events(log, "slow-start")))
            assert health(gateway.url, "rec")["pending"] == 1
            group.cancel_scope.cancel()

        child_id = events(log, "slow-start")[0]["id"]
        await eventually(lambda: [e["id"] for e in events(log, "slow-stopped")] == [child_id])
        assert [m["params"]["requestId"] for m in received(log, "notifications/cancelled")] == [child_id]
        await eventually(lambda: health(gateway.url, "rec")["pending"] == 0)
        assert not events(log, "slow-done")


async def test_a_notification_is_accepted_with_202(gateway: RunningGateway) -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}
    response = await post(gateway, body, modern_headers("notifications/cancelled"))
    assert response.status_code == 202
