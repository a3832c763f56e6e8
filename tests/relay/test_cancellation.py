"""Cancellation and timeouts: the child hears notifications/cancelled under the gateway's id; pending calls drop."""

from pathlib import Path

import anyio
import httpx
import pytest

from tests.harness import run_gateway
from tests.transports.wire import (
    events,
    eventually,
    health,
    http_client,
    open_legacy,
    received,
    recorder,
    session_headers,
    sse_initialize,
    sse_session,
    text_of,
    tool_call,
)

pytestmark = pytest.mark.anyio

SLOW = {"steps": 100, "seconds": 0.05}  # 5 s unless cancelled


def cancelled(request_id: object) -> dict[str, object]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}


async def test_a_client_cancel_reaches_the_child_under_the_gateways_id_and_only_stops_that_call(
    tmp_path: Path,
) -> None:
    """Two SSE clients both run `slow` as id 7; A cancels its 7: A's call stops in the child, B's finishes."""
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("rec", log)], tmp_path) as gateway:
        async with (
            http_client() as client,
            sse_session(client, gateway.url, "rec") as (reader_a, messages_a),
            sse_session(client, gateway.url, "rec") as (reader_b, messages_b),
        ):
            await sse_initialize(client, reader_a, messages_a)
            await sse_initialize(client, reader_b, messages_b)
            assert (await client.post(messages_a, json=tool_call(7, "slow", SLOW))).status_code == 202
            await eventually(lambda: len(events(log, "slow-start")) == 1)
            a_child_id = events(log, "slow-start")[0]["id"]
            short = {"steps": 10, "seconds": 0.05}
            assert (await client.post(messages_b, json=tool_call(7, "slow", short))).status_code == 202
            await eventually(lambda: len(events(log, "slow-start")) == 2)
            assert health(gateway.url, "rec")["pending"] == 2

            assert (await client.post(messages_a, json=cancelled(7))).status_code == 202

            await eventually(lambda: bool(events(log, "slow-stopped")))
            assert [e["id"] for e in events(log, "slow-stopped")] == [a_child_id]
            assert [m["params"]["requestId"] for m in received(log, "notifications/cancelled")] == [a_child_id]
            assert a_child_id != 7
            with anyio.fail_after(10):
                b_answer = await reader_b.message()
            assert b_answer["id"] == 7
            assert text_of(b_answer) == "slept 10"
            await eventually(lambda: health(gateway.url, "rec")["pending"] == 0)
            # A's stream carries nothing for the cancelled call: the next thing on it is its next answer.
            assert (await client.post(messages_a, json=tool_call(8, "echo", {"text": "after"}))).status_code == 202
            with anyio.fail_after(10):
                a_next = await reader_a.message()
            assert a_next["id"] == 8
            assert text_of(a_next) == "after"


async def test_a_streamable_cancel_reaches_the_child_drops_the_call_and_ends_the_cancelled_post(
    tmp_path: Path,
) -> None:
    """Streamable HTTP: the cancel is mapped to the gateway's id, /health pending returns to 0, and the POST of
    the cancelled request still ends (the SDK's server answers it with -32800 "Request cancelled").

    A POST left waiting forever leaks its task and connection, and uvicorn's shutdown blocks on it.
    """
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("rec", log)], tmp_path) as gateway:
        url = gateway.mcp("rec")
        async with http_client() as client:
            session = await open_legacy(client, url)
            headers = session_headers(session)
            outcome: list[httpx.Response] = []

            async def call_slow() -> None:
                outcome.append(await client.post(url, json=tool_call(3, "slow", SLOW), headers=headers))

            async with anyio.create_task_group() as group:
                group.start_soon(call_slow)
                await eventually(lambda: bool(events(log, "slow-start")))
                child_id = events(log, "slow-start")[0]["id"]
                assert health(gateway.url, "rec")["pending"] == 1

                assert (await client.post(url, json=cancelled(3), headers=headers)).status_code == 202

                await eventually(lambda: [e["id"] for e in events(log, "slow-stopped")] == [child_id])
                assert [m["params"]["requestId"] for m in received(log, "notifications/cancelled")] == [child_id]
                await eventually(lambda: health(gateway.url, "rec")["pending"] == 0)
                with anyio.move_on_after(3):  # bounded: a missing answer is the failure reported below
                    while not outcome:
                        await anyio.sleep(0.02)
                group.cancel_scope.cancel()
            assert outcome, "the POST of the cancelled request never got a response"
            assert outcome[0].json()["error"]["code"] == -32800


async def test_a_request_over_the_servers_timeout_gets_32001_and_the_child_is_told_to_cancel(
    tmp_path: Path,
) -> None:
    """timeoutSeconds=1 and a tool that never answers: the client hears -32001, the child notifications/cancelled."""
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("rec", log, timeoutSeconds=1)], tmp_path) as gateway:
        url = gateway.mcp("rec")
        async with http_client() as client:
            session = await open_legacy(client, url)
            with anyio.fail_after(5):
                answer = await client.post(url, json=tool_call(42, "hang"), headers=session_headers(session))
            body = answer.json()
            assert body["id"] == 42
            assert body["error"]["code"] == -32001
            await eventually(lambda: bool(events(log, "hang-start")))
            child_id = events(log, "hang-start")[0]["id"]
            await eventually(lambda: bool(received(log, "notifications/cancelled")))
            assert [m["params"]["requestId"] for m in received(log, "notifications/cancelled")] == [child_id]
            assert health(gateway.url, "rec")["pending"] == 0
            follow_up = await client.post(
                url, json=tool_call(43, "echo", {"text": "still"}), headers=session_headers(session)
            )
            assert text_of(follow_up.json()) == "still"
