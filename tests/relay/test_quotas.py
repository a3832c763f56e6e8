"""Per-principal and per-session quotas (issue 8 item 7 and its quota paragraph), through the real HTTP surface."""

import functools
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_bastion.errors import QUOTA_EXCEEDED
from mcp_bastion.security import token_hash
from tests.harness import run_gateway, spec
from tests.security.support import (
    JSON_ACCEPT,
    add_token,
    admin_token,
    audit_events,
    bearer,
    open_legacy_session,
    secure_gateway,
)
from tests.transports.wire import (
    events,
    eventually,
    http_client,
    initialize,
    open_legacy,
    received,
    recorder,
    rpc,
    session_headers,
    sse_initialize,
    sse_session,
    tool_call,
)

pytestmark = pytest.mark.anyio

SSE_ACCEPT = {"Accept": "text/event-stream"}


def assert_quota_refusal(response: httpx.Response, quota: str, request_id: Any = None) -> dict[str, Any]:
    """429, Retry-After, and a JSON-RPC error naming the quota with the same retry hint."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == request_id
    assert body["error"]["code"] == QUOTA_EXCEEDED
    data = body["error"]["data"]
    assert data["quota"] == quota
    assert response.headers["retry-after"] == str(data["retryAfterSeconds"])
    return dict(body)


def public_id(session_id: str) -> str:
    return token_hash(session_id)[:16]


def test_a_principal_at_its_session_cap_is_refused_while_another_principal_still_opens_sessions(
    tmp_path: Path,
) -> None:
    """Issue 8 item 7: one token can no longer fill the session pool; its refusal is one audit line naming it."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, max_sessions_per_principal=2) as gw:
        alice = add_token(gw, "alice", "server:toolbox")
        url = gw.mcp("toolbox")
        with httpx.Client(timeout=10) as client:
            for _ in range(2):
                open_legacy_session(client, url, alice)
            refused = client.post(url, json=initialize(), headers={**JSON_ACCEPT, **bearer(alice)})
            open_legacy_session(client, url, admin)
    assert_quota_refusal(refused, "sessions_per_principal", request_id=0)
    [line] = audit_events(tmp_path, "quota.exceeded")
    assert "alice" in line["principal"]
    assert (line["quota"], line["limit"], line["server"], line["outcome"]) == (
        "sessions_per_principal",
        2,
        "toolbox",
        "denied",
    )


def test_ending_a_session_gives_its_principal_the_slot_back(tmp_path: Path) -> None:
    """Issue 8 item 7: the cap counts open sessions, not sessions ever opened."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, max_sessions_per_principal=1) as gw:
        url = gw.mcp("toolbox")
        with httpx.Client(timeout=10) as client:
            first = open_legacy_session(client, url, admin)
            assert client.post(url, json=initialize(), headers={**JSON_ACCEPT, **bearer(admin)}).status_code == 429
            ended = client.delete(url, headers={**bearer(admin), "Mcp-Session-Id": first})
            assert ended.status_code == 200
            open_legacy_session(client, url, admin)


def test_a_principal_at_its_stream_cap_is_refused_a_stream_of_either_transport_while_another_opens_one(
    tmp_path: Path,
) -> None:
    """Issue 8 item 7: HTTP+SSE streams and Streamable GET streams count against one per-principal stream cap."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, max_streams_per_principal=1) as gw:
        alice = add_token(gw, "alice", "server:toolbox")
        url = gw.mcp("toolbox")
        with httpx.Client(timeout=10) as client:
            legacy = open_legacy_session(client, url, alice)
            with client.stream("GET", url + "/sse", headers={**SSE_ACCEPT, **bearer(alice)}) as held:
                assert held.status_code == 200
                second_sse = client.get(url + "/sse", headers={**SSE_ACCEPT, **bearer(alice)})
                get_headers = {**SSE_ACCEPT, **bearer(alice), "Mcp-Session-Id": legacy}
                streamable_get = client.get(url, headers=get_headers)
                with client.stream("GET", url + "/sse", headers={**SSE_ACCEPT, **bearer(admin)}) as other:
                    assert other.status_code == 200
    assert_quota_refusal(second_sse, "streams_per_principal")
    assert_quota_refusal(streamable_get, "streams_per_principal")
    lines = audit_events(tmp_path, "quota.exceeded")
    assert [line["quota"] for line in lines] == ["streams_per_principal"] * 2
    assert all("alice" in line["principal"] for line in lines)


async def test_a_streamable_session_without_a_stream_expires_after_the_short_idle_setting(tmp_path: Path) -> None:
    """Issue 8 quotas: a stream-less session idles out after SESSION_IDLE_NO_STREAM_S (audited session.expired);
    a session whose GET stream is open stays."""
    with run_gateway([spec("toolbox")], tmp_path, session_idle_no_stream_s=1.0) as gw:
        url = gw.mcp("toolbox")
        async with http_client() as client:
            streamed = await open_legacy(client, url)
            headers = {**SSE_ACCEPT, "Mcp-Session-Id": streamed}
            async with client.stream("GET", url, headers=headers) as stream:
                assert stream.status_code == 200
                idle = await open_legacy(client, url)

                def expired() -> list[dict[str, Any]]:
                    return audit_events(tmp_path, "session.expired")

                await eventually(lambda: len(expired()) > 0)
                gone = await client.post(url, json=rpc(1, "ping"), headers=session_headers(idle))
                kept = await client.post(url, json=rpc(2, "ping"), headers=session_headers(streamed))
    assert gone.status_code == 404
    assert kept.status_code == 200, kept.text
    [line] = expired()
    assert line["session"] == public_id(idle)
    assert (line["kind"], line["reason"], line["server"]) == ("mcp", "idle without a stream", "toolbox")
    assert line["idle_s"] >= 1.0


async def test_a_request_past_the_in_flight_cap_is_refused_and_never_reaches_the_child(tmp_path: Path) -> None:
    """Issue 8 quotas: with MAX_INFLIGHT_PER_SESSION requests waiting, the next one gets a 429 JSON-RPC error with a
    retry hint and the child never sees it."""
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("rec", log)], tmp_path, max_inflight_per_session=2) as gw:
        url = gw.mcp("rec")
        async with http_client() as client:
            session = await open_legacy(client, url)
            post = functools.partial(client.post, url, headers=session_headers(session))
            async with anyio.create_task_group() as hanging:
                for request_id in (1, 2):
                    hanging.start_soon(functools.partial(post, json=tool_call(request_id, "hang")))
                await eventually(lambda: len(events(log, "hang-start")) == 2)
                refused = await post(json=tool_call(3, "echo", {"text": "never relayed"}))
                ping = await post(json=rpc(4, "ping"))
                await client.delete(url, headers=session_headers(session))  # ends the hanging calls too
    body = assert_quota_refusal(refused, "inflight_per_session", request_id=3)
    assert body["error"]["data"]["retryAfterSeconds"] == 1
    assert ping.status_code == 429  # the cap is on the session, whatever the method
    assert [m["params"]["name"] for m in received(log, "tools/call")] == ["hang", "hang"]
    [line] = audit_events(tmp_path, "quota.exceeded")  # the first refusal of a session, not each one
    assert (line["quota"], line["session"]) == ("inflight_per_session", public_id(session))


async def test_a_request_id_already_in_flight_is_refused_without_reaching_the_child(tmp_path: Path) -> None:
    """Issue 8 quotas: reusing an in-flight id (forbidden by MCP) cannot dodge the in-flight count."""
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("rec", log)], tmp_path) as gw:
        url = gw.mcp("rec")
        async with http_client() as client:
            session = await open_legacy(client, url)
            post = functools.partial(client.post, url, headers=session_headers(session))
            async with anyio.create_task_group() as hanging:
                hanging.start_soon(functools.partial(post, json=tool_call(7, "hang")))
                await eventually(lambda: len(events(log, "hang-start")) == 1)
                again = await post(json=tool_call(7, "echo", {"text": "same id"}))
                await client.delete(url, headers=session_headers(session))  # ends the hanging call too
    assert again.status_code == 400
    assert again.json()["id"] == 7
    assert [m["params"]["name"] for m in received(log, "tools/call")] == ["hang"]


async def test_over_http_sse_the_in_flight_refusal_arrives_on_the_stream(tmp_path: Path) -> None:
    """Issue 8 quotas: on HTTP+SSE the POST was already accepted, so the JSON-RPC error travels on the stream."""
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("rec", log)], tmp_path, max_inflight_per_session=1) as gw:
        async with http_client() as client, sse_session(client, gw.url, "rec") as (reader, messages):
            await sse_initialize(client, reader, messages)
            assert (await client.post(messages, json=tool_call(1, "hang"))).status_code == 202
            await eventually(lambda: len(events(log, "hang-start")) == 1)
            assert (await client.post(messages, json=tool_call(2, "echo", {"text": "no"}))).status_code == 202
            with anyio.fail_after(5):
                answer = await reader.message(lambda m: m.get("id") == 2)
    assert answer["error"]["code"] == QUOTA_EXCEEDED
    assert answer["error"]["data"] == {"quota": "inflight_per_session", "limit": 1, "retryAfterSeconds": 1}
    assert [m["params"]["name"] for m in received(log, "tools/call")] == ["hang"]
