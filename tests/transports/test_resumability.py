"""Streamable HTTP: child→client requests on their call's stream, and SSE resumability (Issue 11 items 6 and 7)."""

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import ClientMessageMetadata
from mcp.types import (
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    TextContent,
)

from mcp_bastion.relay.replay import GET_STREAM, ReplayBuffer, parse_event_id
from tests.harness import TOOLBOX, run_gateway, spec
from tests.transports.wire import SseReader, http_client, open_legacy, session_headers, text_of, tool_call

pytestmark = pytest.mark.anyio


def sse_headers(session: str, **extra: str) -> dict[str, str]:
    return {"Accept": "text/event-stream", "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25", **extra}


async def test_sampling_request_travels_on_the_post_stream_of_its_call_without_a_get_stream(tmp_path: Path) -> None:
    """Issue 11 item 6: a raw client that never opens the optional GET stream still gets the per-session child's
    sampling request, on the SSE answer of the call that caused it, answers it, and gets the tool's result."""
    with run_gateway([spec("own", isolation="per-session")], tmp_path) as gateway:
        url = gateway.mcp("own")
        async with http_client() as client:
            session = await open_legacy(client, url)
            call = tool_call(7, "sample", {"prompt": "no-get-prompt"})
            with anyio.fail_after(20):
                async with client.stream("POST", url, json=call, headers=session_headers(session)) as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    reader = SseReader(response)
                    ask = await reader.message()
                    assert ask["method"] == "sampling/createMessage"
                    assert ask["params"]["messages"][0]["content"]["text"] == "no-get-prompt"
                    reply = {
                        "jsonrpc": "2.0",
                        "id": ask["id"],
                        "result": {"role": "assistant", "content": {"type": "text", "text": "ok"}, "model": "m"},
                    }
                    sent = await client.post(url, json=reply, headers=session_headers(session))
                    assert sent.status_code == 202
                    final = await reader.message()
    assert final["id"] == 7
    assert json.loads(text_of(final))["model"] == "m"


async def test_a_per_session_call_without_a_child_request_is_still_answered_as_json(tmp_path: Path) -> None:
    """Issue 11 item 6: the head is held until the answer or a child request, so a plain call stays JSON."""
    with run_gateway([spec("own", isolation="per-session")], tmp_path) as gateway:
        url = gateway.mcp("own")
        async with http_client() as client:
            session = await open_legacy(client, url)
            answer = await client.post(url, json=tool_call(1, "echo", {"text": "hi"}), headers=session_headers(session))
    assert answer.headers["content-type"] == "application/json"
    assert text_of(answer.json()) == "hi"


async def test_the_sdk_sampling_scenario_works_over_stdio_and_through_the_gateway(tmp_path: Path) -> None:
    """Issue 11 item 6: the same SDK client and callback, directly over stdio and through a per-session server."""

    async def sampling(context: object, params: CreateMessageRequestParams) -> CreateMessageResult:
        content = params.messages[0].content
        assert isinstance(content, TextContent)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=f"re {content.text}"), model="sdk-model"
        )

    async def sample(transport: Any) -> str:
        async with Client(transport, mode="legacy", sampling_callback=sampling) as client:
            result = await client.call_tool("sample", {"prompt": "p-11-6"})
        block = result.content[0]
        assert isinstance(block, TextContent)
        return str(json.loads(block.text)["content"]["text"])

    with anyio.fail_after(30):
        params = StdioServerParameters(command=TOOLBOX[0], args=TOOLBOX[1:])
        with (tmp_path / "stderr.log").open("w") as sink:
            direct = await sample(stdio_client(params, errlog=sink))
        with run_gateway([spec("own", isolation="per-session")], tmp_path) as gateway:
            async with httpx2.AsyncClient(timeout=10) as http:
                relayed = await sample(streamable_http_client(gateway.mcp("own"), http_client=http))
    assert direct == relayed == "re p-11-6"


async def test_a_post_stream_that_drops_mid_call_is_resumed_by_get_with_last_event_id(tmp_path: Path) -> None:
    """Issue 11 item 7: the client reads one progress event, its connection drops; a GET with that event's id as
    Last-Event-ID replays the rest of that call's stream (progress after it, then the answer) and ends."""
    with run_gateway([spec("tools")], tmp_path) as gateway:
        url = gateway.mcp("tools")
        async with http_client() as client:
            session = await open_legacy(client, url)
            call = tool_call(5, "slow", {"steps": 4, "seconds": 0.2}, progressToken="t")
            with anyio.fail_after(20):
                async with client.stream("POST", url, json=call, headers=session_headers(session)) as response:
                    reader = SseReader(response)
                    first = await reader.message()
                    seen = reader.last_id
                assert first["params"]["progress"] == 1
                assert seen is not None
                resumed = sse_headers(session, **{"Last-Event-ID": seen})
                async with client.stream("GET", url, headers=resumed) as response:
                    assert response.status_code == 200
                    reader = SseReader(response)
                    rest = [await reader.message()]
                    while "id" not in rest[-1]:
                        rest.append(await reader.message())
                    with pytest.raises(EOFError):
                        await reader.item()  # the resumed stream ends with its answer
    *progress, final = rest
    assert [note["params"]["progress"] for note in progress] == [2, 3, 4]
    assert final["id"] == 5
    assert text_of(final) == "slept 4"


async def test_the_get_stream_replays_its_own_events_after_last_event_id_and_not_a_post_streams(
    tmp_path: Path,
) -> None:
    """Issue 11 item 7: ids are unique across the session's streams; a GET resumed after its first event gets the
    GET stream's later event again, and nothing that travelled on a POST stream."""
    with run_gateway([spec("tools")], tmp_path) as gateway:
        url = gateway.mcp("tools")
        async with http_client() as client:
            session = await open_legacy(client, url)
            ids: list[str] = []
            with anyio.fail_after(20):
                async with client.stream("GET", url, headers=sse_headers(session)) as response:
                    reader = SseReader(response)
                    for n in (1, 2):
                        await client.post(url, json=tool_call(n, "notify"), headers=session_headers(session))
                        await reader.message()
                        assert reader.last_id is not None
                        ids.append(reader.last_id)
                progress = tool_call(3, "slow", {"steps": 1, "seconds": 0.01}, progressToken="p")
                async with client.stream("POST", url, json=progress, headers=session_headers(session)) as response:
                    post_reader = SseReader(response)
                    await post_reader.message(lambda m: "id" in m)
                    assert post_reader.last_id is not None
                    ids.append(post_reader.last_id)
                resumed = sse_headers(session, **{"Last-Event-ID": ids[0]})
                async with client.stream("GET", url, headers=resumed) as response:
                    reader = SseReader(response)
                    again = await reader.message()
                    assert reader.last_id == ids[1]
                    await client.post(url, json=tool_call(4, "notify"), headers=session_headers(session))
                    live = await reader.message()
    assert len(set(ids)) == 3
    assert again["method"] == live["method"] == "notifications/tools/list_changed"


@pytest.mark.parametrize("last_event_id", ["0-999", "7-1", "not-an-id"])
async def test_a_last_event_id_this_session_cannot_replay_is_refused(tmp_path: Path, last_event_id: str) -> None:
    """Issue 11 item 7: an id from the future, a POST stream that never was, or a foreign format: 400, not a
    stream that would wait for an answer that never comes."""
    with run_gateway([spec("tools")], tmp_path) as gateway:
        url = gateway.mcp("tools")
        async with http_client() as client:
            session = await open_legacy(client, url)
            refused = await client.get(url, headers=sse_headers(session, **{"Last-Event-ID": last_event_id}))
    assert refused.status_code == 400
    assert "Last-Event-ID" in refused.json()["error"]["message"]


async def test_the_sdk_client_resumes_a_call_from_its_resumption_token_through_the_gateway(tmp_path: Path) -> None:
    """Issue 11 item 7 with the official Python SDK: the tokens its POST stream reported (our event ids) let a later
    request resume that call's stream by GET + Last-Event-ID and get its progress and answer again."""
    tokens: list[str] = []

    async def remember(token: str) -> None:
        tokens.append(token)

    async def progressed(progress: float, total: float | None, message: str | None) -> None:
        pass

    def slow() -> CallToolRequest:
        return CallToolRequest(params=CallToolRequestParams(name="slow", arguments={"steps": 3, "seconds": 0.01}))

    with run_gateway([spec("tools")], tmp_path) as gateway:
        with anyio.fail_after(20):
            async with (
                httpx2.AsyncClient(timeout=10) as http,
                Client(streamable_http_client(gateway.mcp("tools"), http_client=http), mode="legacy") as client,
            ):
                first = await client.session.send_request(
                    slow(),
                    CallToolResult,
                    metadata=ClientMessageMetadata(on_resumption_token_update=remember),
                    progress_callback=progressed,
                )
                again = await client.session.send_request(
                    slow(), CallToolResult, metadata=ClientMessageMetadata(resumption_token=tokens[0])
                )
    assert len(tokens) == 5  # the priming event, three progress notifications, the answer
    assert first.content == again.content
    block = again.content[0]
    assert isinstance(block, TextContent)
    assert block.text == "slept 3"


def test_the_replay_buffer_keeps_the_newest_events_within_its_count_and_byte_budget() -> None:
    """Issue 11 item 7: bounded per session; an event larger than the whole budget is written but not kept."""
    replay = ReplayBuffer(max_events=3, max_bytes=1000)
    for n in range(5):
        replay.head(GET_STREAM, b"x%d" % n)
    assert [event.body for event in replay.after(GET_STREAM, 0)] == [b"x2", b"x3", b"x4"]
    replay.head(GET_STREAM, b"y" * 2000)
    assert len(replay.events) == 3
    assert replay.held_bytes <= 1000
    stream = replay.open_stream()
    replay.head(stream, b"z" * 900, final=True)
    replay.close_stream(stream)
    assert [event.body[:1] for event in replay.events] == [b"z"]
    assert replay.resumable(stream)
    assert replay.after(GET_STREAM, 0) == []
    assert parse_event_id(f"{stream}-{replay.seq}") == (stream, replay.seq)
