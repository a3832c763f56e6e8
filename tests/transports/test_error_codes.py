"""The errors a client gets for an unknown session and a full gateway, as the spec and the SDKs expect (Issue 9
item 9): 404 with the official TypeScript SDK server's body, and 503 + Retry-After for capacity."""

from pathlib import Path

import httpx

from mcp_bastion.relay.gateway import CAPACITY_RETRY_AFTER_S
from tests.harness import run_gateway, spec
from tests.security.support import JSON_ACCEPT, open_legacy_session, rpc

# What @modelcontextprotocol/sdk's WebStandardStreamableHTTPServerTransport answers for an unknown Mcp-Session-Id.
TS_SDK_SESSION_NOT_FOUND = {"jsonrpc": "2.0", "error": {"code": -32001, "message": "Session not found"}, "id": None}
UNKNOWN = "0" * 32


def test_an_unknown_session_is_404_with_the_typescript_sdk_servers_body_on_every_route(tmp_path: Path) -> None:
    """Issue 9 item 9: POST, GET and DELETE with an unknown Mcp-Session-Id, and a POST to an unknown HTTP+SSE
    session, all answer 404 with exactly the body the official TypeScript SDK server sends (not -32603)."""
    with run_gateway([spec("toolbox")], tmp_path) as gw, httpx.Client(timeout=10) as client:
        headers = {**JSON_ACCEPT, "Mcp-Session-Id": UNKNOWN}
        answers = [
            client.post(gw.mcp("toolbox"), json=rpc(5, "tools/list"), headers=headers),
            client.get(gw.mcp("toolbox"), headers={**headers, "Accept": "text/event-stream"}),
            client.delete(gw.mcp("toolbox"), headers=headers),
            client.post(f"{gw.mcp('toolbox')}/messages?session_id={UNKNOWN}", json=rpc(5, "ping")),
        ]
    for answer in answers:
        assert answer.status_code == 404, (answer.request.method, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == TS_SDK_SESSION_NOT_FOUND, answer.request.method


def test_a_full_gateway_answers_503_with_retry_after_for_a_new_session_of_either_era(tmp_path: Path) -> None:
    """Issue 9 item 9: past MAX_SESSIONS, a Streamable initialize and an HTTP+SSE stream are refused with 503 +
    Retry-After and a JSON-RPC -32000 error naming the limit (the initialize's own id), not -32600 without a hint;
    once a session ends, a new one opens."""
    with run_gateway([spec("toolbox")], tmp_path, max_sessions=1) as gw, httpx.Client(timeout=10) as client:
        first = open_legacy_session(client, gw.mcp("toolbox"), "unused")
        init = rpc(
            3,
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
        )
        full = client.post(gw.mcp("toolbox"), json=init, headers=JSON_ACCEPT)
        sse = client.get(f"{gw.mcp('toolbox')}/sse", headers={"Accept": "text/event-stream"})
        client.delete(gw.mcp("toolbox"), headers={**JSON_ACCEPT, "Mcp-Session-Id": first})
        again = client.post(gw.mcp("toolbox"), json=init, headers=JSON_ACCEPT)
    for answer in (full, sse):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == str(CAPACITY_RETRY_AFTER_S)
        error = answer.json()["error"]
        assert error["code"] == -32000
        assert error["data"] == {"limit": 1, "retryAfterSeconds": CAPACITY_RETRY_AFTER_S}
    assert full.json()["id"] == 3
    assert again.status_code == 200, again.text
