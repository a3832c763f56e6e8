"""Issue 12: three real instances behind a real nginx (round robin, no stickiness), Redis between them.

Through nginx, the official Python SDK clients on Streamable HTTP and HTTP+SSE: every request of a session may land
on any instance, and is forwarded to the one that owns the session.
"""

import socket
from collections.abc import Iterator

import anyio
import httpx
import httpx2
import orjson
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.cluster.rig import Rig, cluster
from tests.transports.test_per_session_modern import accept
from tests.transports.wire import modern_headers, modern_request

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

SESSIONS = 32  # half Streamable HTTP, half HTTP+SSE
CALLS_EACH = 4  # per session; every session numbers its requests from the same start, so ids collide
LOAD_BOUND_S = 60.0  # the whole load's bound; it takes a few seconds


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


async def _session(rig: Rig, n: int, answers: dict[tuple[int, int], str]) -> None:
    url = rig.lb + "/mcp/toolbox"
    if n % 2:
        async with (
            httpx2.AsyncClient(timeout=20, headers=rig.auth) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            for i in range(CALLS_EACH):
                answers[(n, i)] = (await client.call_tool("echo", {"text": f"s{n}-c{i}"})).content[0].text
    else:
        async with Client(sse_client(url + "/sse", headers=rig.auth, timeout=20), mode="legacy") as client:
            for i in range(CALLS_EACH):
                answers[(n, i)] = (await client.call_tool("echo", {"text": f"s{n}-c{i}"})).content[0].text


async def test_sdk_sessions_through_a_round_robin_balancer_are_answered_correctly_by_forwarding(rig: Rig) -> None:
    """Issue 12 item 2: 32 SDK sessions (16 Streamable HTTP, 16 HTTP+SSE) with colliding ids through nginx: every
    call answered with its own text, and the instances' counters show requests landed elsewhere and were forwarded
    to the owner."""
    before = rig.forwarded()
    answers: dict[tuple[int, int], str] = {}
    with anyio.fail_after(LOAD_BOUND_S):
        async with anyio.create_task_group() as group:
            for n in range(SESSIONS):
                group.start_soon(_session, rig, n, answers)
    assert answers == {(n, i): f"s{n}-c{i}" for n in range(SESSIONS) for i in range(CALLS_EACH)}
    assert rig.forwarded() - before > SESSIONS  # round robin over 3: about 2 in 3 requests land elsewhere
    served = {i.id: rig.health(i)["cluster"]["served_for_peers"] for i in rig.instances}
    assert all(count > 0 for count in served.values()), served


def test_a_forged_or_foreign_session_id_is_404_and_never_forwarded(rig: Rig) -> None:
    """A session id this cluster did not seal, or one sealed for another principal, is answered 404 where it lands."""
    before = rig.forwarded()
    headers = {**rig.auth, "Accept": "application/json, text/event-stream", "Mcp-Session-Id": "not-ours"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for _ in range(3):
        answer = httpx.post(rig.lb + "/mcp/toolbox", json=body, headers=headers, timeout=10)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == {"code": -32001, "message": "Session not found"}
    assert rig.forwarded() == before


def test_a_forged_hop_is_refused_and_audited(rig: Rig) -> None:
    """A request carrying a hop header that does not verify, from an instance's address (every instance here is on
    loopback), is refused 403, never served as the principal it names; the audit line names the socket address."""
    target = rig.instances[0]
    headers = {"X-Bastion-Hop": "e30.AAAA", "Accept": "application/json, text/event-stream"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    answer = httpx.post(target.url + "/mcp/toolbox", json=body, headers=headers, timeout=10)
    assert answer.status_code == 403
    refused = [line for line in rig.audit(target) if line["event"] == "cluster.hop.refused"]
    assert refused
    assert all(line["ip"] == "127.0.0.1" for line in refused)  # the socket's address (an instance's: loopback here)


def test_a_2026_07_28_retry_is_forwarded_to_the_instance_holding_its_call(rig: Rig) -> None:
    """A per-session call asks for input on instance 1 (InputRequiredResult with a sealed requestState naming it); the
    retry carrying the answer lands on instance 2, which forwards it to instance 1, where the call completes."""
    first, second = rig.instances[0], rig.instances[1]
    tool = "test_input_required_result_elicitation"
    headers = {**rig.auth, **modern_headers("tools/call", tool)}
    meta = {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}
    ask = modern_request(1, "tools/call", {"name": tool, "arguments": {}}, **meta)
    answer = httpx.post(first.url + "/mcp/own", json=ask, headers=headers, timeout=20)
    assert answer.status_code == 200, answer.text
    state = answer.json()["result"]["requestState"]
    before = rig.health(second)["cluster"]["forwarded"]
    params = {"name": tool, "arguments": {}, "requestState": state, "inputResponses": {"user_name": accept(name="Bo")}}
    retry = httpx.post(second.url + "/mcp/own", json=modern_request(2, "tools/call", params, **meta), headers=headers,
                       timeout=20)  # fmt: skip
    assert retry.status_code == 200, retry.text
    assert retry.json()["result"]["content"][0]["text"] == "Hello, Bo!"
    assert rig.health(second)["cluster"]["forwarded"] == before + 1


def test_each_instance_says_at_start_which_instance_it_is(rig: Rig) -> None:
    """Issue 12 item 1: INSTANCE_ID (set here; generated when unset) and the advertised URL, shown at start."""
    for instance in rig.instances:
        log = (instance.dir / "serve.log").read_text()
        assert f"cluster instance {instance.id}, advertised at {instance.url}" in log


ACCEPT = "application/json, text/event-stream"
HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": HELLO}
RAW_READ_S = 10.0  # the raw client's bound on the gateway's answer


def _open_session(url: str, auth: dict[str, str]) -> str:
    answer = httpx.post(url + "/mcp/toolbox", json=INIT, headers={**auth, "Accept": ACCEPT}, timeout=10)
    assert answer.status_code == 200, answer.text
    session_id = answer.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    httpx.post(url + "/mcp/toolbox", json=note, headers={**auth, "Accept": ACCEPT, "Mcp-Session-Id": session_id},
               timeout=10)  # fmt: skip
    return session_id


def _echo(url: str, auth: dict[str, str], session_id: str, text: str) -> str:
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}
    headers = {**auth, "Accept": ACCEPT, "Mcp-Session-Id": session_id}
    answer = httpx.post(url + "/mcp/toolbox", json=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"]["content"][0]["text"])


def _raw_post(port: int, head: str, body: bytes) -> bytes:
    """One request on its own connection, read until the gateway closes it (Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_READ_S) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_expect_100_continue_on_a_forwarded_request_does_not_mix_up_answers(rig: Rig) -> None:
    """Two principals' sessions on instance 2; one sends a raw POST with `Expect: 100-continue` through instance 1:
    it gets its own answer, and the next calls of both through instance 1 get their own answers (the hop connection
    pool stays in step: a 100 Continue is never taken for the answer)."""
    first, second = rig.instances[0], rig.instances[1]
    made = httpx.post(first.url + "/api/tokens", json={"name": "expect-mallory", "scopes": ["server:toolbox"]},
                      headers=rig.auth, timeout=10)  # fmt: skip
    assert made.status_code == 201, made.text
    mallory = {"Authorization": "Bearer " + made.json()["token"]}
    mine, theirs = _open_session(second.url, mallory), _open_session(second.url, rig.auth)
    assert _echo(first.url, rig.auth, theirs, "victim-warm") == "victim-warm"
    body = orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"text": "MALLORY-1"}}})  # fmt: skip
    head = (
        f"POST /mcp/toolbox HTTP/1.1\r\nHost: 127.0.0.1:{first.port}\r\n{'Authorization: ' + mallory['Authorization']}"
        f"\r\nAccept: {ACCEPT}\r\nContent-Type: application/json\r\nMcp-Session-Id: {mine}\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    answer = _raw_post(first.port, head, body)
    final = answer.split(b"HTTP/1.1 ")[-1]  # uvicorn may send its own 100 Continue first
    assert final.startswith(b"200 "), answer[:300]
    assert b"MALLORY-1" in final
    for _ in range(3):
        assert _echo(first.url, rig.auth, theirs, "VICTIM-SECRET") == "VICTIM-SECRET"
        assert _echo(first.url, mallory, mine, "MALLORY-2") == "MALLORY-2"
