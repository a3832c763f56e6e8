"""Progress tokens are mapped both ways: the child sees the gateway's token, each client only its own."""

import json
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import run_gateway, spec
from tests.transports.wire import (
    SseReader,
    http_client,
    open_legacy,
    received,
    recorder,
    session_headers,
    tool_call,
)

pytestmark = pytest.mark.anyio


async def test_two_sdk_clients_with_the_same_progress_token_each_get_only_their_own_progress(tmp_path: Path) -> None:
    """Both SDK clients put the same progressToken on their call; A asks for 3 steps, B for 5."""
    with run_gateway([spec("toolbox")], tmp_path) as gateway:
        tokens: dict[str, list[object]] = {"a": [], "b": []}
        progress: dict[str, list[tuple[float, float | None]]] = {"a": [], "b": []}
        results: dict[str, str] = {}

        def token_recorder(who: str):  # type: ignore[no-untyped-def]
            async def hook(request: httpx2.Request) -> None:
                if request.method == "POST" and request.content:
                    body = json.loads(request.content)
                    if body.get("method") == "tools/call":
                        tokens[who].append(body["params"]["_meta"]["progressToken"])

            return hook

        async def run(who: str, steps: int) -> None:
            async with (
                httpx2.AsyncClient(timeout=10, event_hooks={"request": [token_recorder(who)]}) as http,
                Client(streamable_http_client(gateway.mcp("toolbox"), http_client=http), mode="legacy") as c,
            ):

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress[who].append((value, total))

                answer = await c.call_tool("slow", {"steps": steps, "seconds": 0.1}, progress_callback=on_progress)
                results[who] = answer.content[0].text

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(run, "a", 3)
                group.start_soon(run, "b", 5)

        assert tokens["a"] == tokens["b"]
        assert len(tokens["a"]) == 1
        assert results == {"a": "slept 3", "b": "slept 5"}
        assert progress["a"] == [(1, 3), (2, 3), (3, 3)]
        assert progress["b"] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


async def test_the_child_sees_the_gateways_token_and_the_client_gets_its_own_token_back(tmp_path: Path) -> None:
    """Raw Streamable HTTP: a string token goes out, the child gets a gateway-unique one, progress returns as ours."""
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("rec", log)], tmp_path) as gateway:
        url = gateway.mcp("rec")
        async with http_client() as client:
            sessions = [await open_legacy(client, url), await open_legacy(client, url)]
            streams: dict[int, list[dict[str, object]]] = {}

            async def call(n: int, steps: int) -> None:
                body = tool_call(1, "slow", {"steps": steps, "seconds": 0.05}, progressToken="shared-token")
                async with client.stream("POST", url, json=body, headers=session_headers(sessions[n])) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    reader = SseReader(response)
                    got = []
                    while True:
                        message = await reader.message()
                        got.append(message)
                        if "id" in message:
                            break
                    streams[n] = got

            with anyio.fail_after(20):
                async with anyio.create_task_group() as group:
                    group.start_soon(call, 0, 2)
                    group.start_soon(call, 1, 4)

    for n, steps in ((0, 2), (1, 4)):
        *notes, final = streams[n]
        assert final["id"] == 1
        assert "result" in final
        assert [m["params"] for m in notes] == [  # type: ignore[index]
            {"progressToken": "shared-token", "progress": k, "total": steps} for k in range(1, steps + 1)
        ]
    child_tokens = [m["params"]["_meta"]["progressToken"] for m in received(log, "tools/call")]
    child_ids = [m["id"] for m in received(log, "tools/call")]
    assert len(child_tokens) == 2
    assert "shared-token" not in child_tokens
    assert len(set(child_tokens)) == 2
    assert set(child_ids) != {1}
