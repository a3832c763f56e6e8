"""Scopes: admin, per server and per tool; tools/list filtering; refusals as JSON-RPC errors with audit lines."""

import fnmatch
import json
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.fixtures.toolbox import tool_list
from tests.harness import DEMO, spec
from tests.security.support import (
    JSON_ACCEPT,
    add_token,
    admin_token,
    assert_rejection,
    audit_events,
    bearer,
    legacy_headers,
    modern_body,
    modern_call,
    modern_headers,
    open_legacy_session,
    rpc,
    secure_gateway,
)

ALL_TOOLS = [t["name"] for t in tool_list()]
FORBIDDEN = -32003


def servers() -> list:
    return [spec("toolbox"), spec("demo", DEMO)]


def test_server_scope_limits_which_servers_a_token_reaches(tmp_path: Path) -> None:
    """AZ-01: a `server:toolbox` token gets 403 + WWW-Authenticate insufficient_scope on every transport of another
    server; the other child receives nothing; an auth.forbidden line names the principal."""
    with secure_gateway(servers(), tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as client:
        token = add_token(gw, "tb-only", "server:toolbox")
        assert modern_call(client, gw.mcp("toolbox"), token, "tools/list").status_code == 200
        for method, path in [("POST", ""), ("GET", ""), ("DELETE", ""), ("GET", "/sse"), ("POST", "/messages")]:
            answer = client.request(method, gw.mcp("demo") + path, headers={**JSON_ACCEPT, **bearer(token)}, json={})
            assert_rejection(answer, 403, "Forbidden")
            assert answer.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="server:demo"'
        denied = audit_events(tmp_path, "auth.forbidden")
        assert len(denied) == 5
        assert {(d["principal"], d["reason"], d["ip"]) for d in denied} == {
            ("tb-only", "needs server:demo", "127.0.0.1")
        }
        assert gw.app.gateway.backends["demo"].calls == 0


def test_server_scope_is_matched_exactly(tmp_path: Path) -> None:
    """AZ-08: `server:tool` does not reach `toolbox`, `server:toolbox` does not reach `toolbox2`; no prefix match."""
    with secure_gateway([spec("toolbox"), spec("toolbox2")], tmp_path, auth_token=admin_token()) as gw:
        with httpx.Client(timeout=10) as client:
            prefix = add_token(gw, "prefix", "server:tool")
            exact = add_token(gw, "exact", "server:toolbox")
            assert modern_call(client, gw.mcp("toolbox"), prefix, "tools/list").status_code == 403
            assert modern_call(client, gw.mcp("toolbox2"), exact, "tools/list").status_code == 403
            assert modern_call(client, gw.mcp("toolbox"), exact, "tools/list").status_code == 200


@pytest.mark.parametrize(
    "scopes",
    [("tool:toolbox/echo",), ("tool:toolbox/s*",), ("tool:toolbox/echo", "tool:toolbox/add")],
)
def test_tools_list_shows_only_what_the_token_may_call(tmp_path: Path, scopes: tuple[str, ...]) -> None:
    """AZ-02: tools/list (2026-07-28 and a legacy session) lists exactly the tools the tool scopes allow."""
    expected = [n for n in ALL_TOOLS if any(fnmatch.fnmatchcase(n, s.split("/", 1)[1]) for s in scopes)]
    with secure_gateway(servers(), tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as client:
        token = add_token(gw, "scoped", *scopes)
        modern = modern_call(client, gw.mcp("toolbox"), token, "tools/list")
        assert modern.status_code == 200, modern.text
        assert [t["name"] for t in modern.json()["result"]["tools"]] == expected
        session = open_legacy_session(client, gw.mcp("toolbox"), token)
        legacy = client.post(gw.mcp("toolbox"), json=rpc(2, "tools/list"), headers=legacy_headers(token, session))
        assert [t["name"] for t in legacy.json()["result"]["tools"]] == expected
        full = modern_call(client, gw.mcp("toolbox"), add_token(gw, "all", "server:toolbox"), "tools/list")
        assert [t["name"] for t in full.json()["result"]["tools"]] == ALL_TOOLS


def test_call_outside_tool_scope_is_a_jsonrpc_error_and_an_audit_line(tmp_path: Path) -> None:
    """AZ-02, LOG-01: a legacy-session tools/call outside the token's tool scopes is JSON-RPC error -32003, never
    forwarded, and audited as mcp.call outcome=forbidden; an allowed call is audited outcome=ok."""
    with secure_gateway(servers(), tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as client:
        token = add_token(gw, "echo-only", "tool:toolbox/echo")
        session = open_legacy_session(client, gw.mcp("toolbox"), token)
        calls_before = gw.app.gateway.backends["toolbox"].calls
        body = rpc(7, "tools/call", {"name": "env", "arguments": {}})
        refused = client.post(gw.mcp("toolbox"), json=body, headers=legacy_headers(token, session))
        assert refused.status_code == 200
        assert refused.json()["id"] == 7
        assert refused.json()["error"]["code"] == FORBIDDEN
        assert "result" not in refused.json()
        assert gw.app.gateway.backends["toolbox"].calls == calls_before
        body = rpc(8, "tools/call", {"name": "echo", "arguments": {"text": "fine"}})
        allowed = client.post(gw.mcp("toolbox"), json=body, headers=legacy_headers(token, session))
        assert allowed.json()["result"]["content"][0]["text"] == "fine"
        lines = [c for c in audit_events(tmp_path, "mcp.call") if c["method"] == "tools/call"]
        assert [(c["tool"], c["outcome"], c["principal"], c["server"]) for c in lines] == [
            ("env", "forbidden", "echo-only", "toolbox"),
            ("echo", "ok", "echo-only", "toolbox"),
        ]


def test_call_outside_scope_over_http_sse(tmp_path: Path) -> None:
    """AZ-02: on the HTTP+SSE transport the refusal arrives on the stream as error -32003 with the request's id."""
    with secure_gateway(servers(), tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as client:
        token = add_token(gw, "echo-only", "tool:toolbox/echo")
        headers = {"Accept": "text/event-stream", **bearer(token)}
        with client.stream("GET", gw.mcp("toolbox") + "/sse", headers=headers) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "event: endpoint"
            messages = gw.url + next(lines).removeprefix("data: ")
            init = rpc(0, "initialize", {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {}})
            assert client.post(messages, json=init, headers=bearer(token)).status_code == 202
            call = rpc(5, "tools/call", {"name": "crash", "arguments": {}})
            assert client.post(messages, json=call, headers=bearer(token)).status_code == 202
            found = []
            for line in lines:
                if line.startswith("data: "):
                    found.append(json.loads(line[6:]))
                    if len(found) == 2:
                        break
        assert found[1]["id"] == 5
        assert found[1]["error"]["code"] == FORBIDDEN
        assert str(gw.app.gateway.handles["toolbox"].state) == "running"
        assert audit_events(tmp_path, "mcp.call")[-1]["outcome"] == "forbidden"


def test_modern_tools_call_decided_from_mcp_name_before_the_body(tmp_path: Path) -> None:
    """AZ-02, AZ-03: with 2026-07-28 requests a forbidden Mcp-Name is refused before the body is parsed (a body
    that is not even JSON gets the scope error, not a parse error), as a JSON-RPC error and an audit line."""
    with secure_gateway(servers(), tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as client:
        token = add_token(gw, "echo-only", "tool:toolbox/echo")
        headers = modern_headers(token, "tools/call", "env")
        answer = client.post(gw.mcp("toolbox"), content=b"{this is not json", headers=headers)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == FORBIDDEN
        denied = [c for c in audit_events(tmp_path, "mcp.call") if c.get("outcome") == "forbidden"]
        assert len(denied) == 1, audit_events(tmp_path, "mcp.call")
        assert denied[0]["tool"] == "env"
        assert denied[0]["principal"] == "echo-only"


def test_modern_body_cannot_smuggle_a_forbidden_tool_behind_an_allowed_header(tmp_path: Path) -> None:
    """AZ-03: Mcp-Name says `echo` (allowed) while the body calls `env`: refused (header mismatch or scope), the
    child never runs `env`."""
    with secure_gateway(servers(), tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as client:
        token = add_token(gw, "echo-only", "tool:toolbox/echo")
        body = modern_body(1, "tools/call", {"name": "env", "arguments": {}})
        answer = client.post(gw.mcp("toolbox"), json=body, headers=modern_headers(token, "tools/call", "echo"))
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == -32020
        assert "result" not in answer.json()
        allowed = modern_call(client, gw.mcp("toolbox"), token, "tools/call", {"name": "echo", "arguments": {}})
        assert allowed.status_code == 200
        forbidden = modern_call(client, gw.mcp("toolbox"), token, "tools/call", {"name": "env", "arguments": {}})
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == FORBIDDEN


def test_allowed_tools_of_the_server_intersect_token_scopes(tmp_path: Path) -> None:
    """AZ-02: the server's allowedTools bound even an admin token; a tool scope cannot widen them."""
    toolbox = spec("toolbox", allowedTools=["echo", "add"])
    with secure_gateway([toolbox], tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as client:
        token = add_token(gw, "wide", "tool:toolbox/*")
        listed = modern_call(client, gw.mcp("toolbox"), token, "tools/list").json()["result"]["tools"]
        assert [t["name"] for t in listed] == ["echo", "add"]
        env = modern_call(client, gw.mcp("toolbox"), token, "tools/call", {"name": "env", "arguments": {}})
        assert env.json()["error"]["code"] == FORBIDDEN


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/admin/sessions"), ("DELETE", "/admin/sessions/abcdef0123456789"), ("POST", "/mcp/toolbox/restart")],
)
def test_management_routes_need_the_admin_scope(tmp_path: Path, method: str, path: str) -> None:
    """AZ-06, SES-07: a server-scoped token on admin routes (sessions, server management) is 403 + auth.forbidden;
    the admin token passes the same route."""
    admin = admin_token()
    with secure_gateway(servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        token = add_token(gw, "user", "server:toolbox", "server:demo")
        answer = client.request(method, gw.url + path, headers=bearer(token))
        assert_rejection(answer, 403, "Forbidden")
        assert answer.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="admin"'
        [line] = audit_events(tmp_path, "auth.forbidden")
        assert (line["principal"], line["reason"], line["path"]) == ("user", "needs admin", path)
        assert client.request(method, gw.url + path, headers=bearer(admin)).status_code in (200, 404)


@pytest.mark.anyio
async def test_sdk_client_sees_only_scoped_tools(tmp_path: Path) -> None:
    """AZ-02: the official SDK client with a tool-scoped token lists only that tool, and calling another fails."""
    with secure_gateway(servers(), tmp_path, auth_token=admin_token()) as gw:
        token = add_token(gw, "echo-only", "tool:toolbox/echo")
        with anyio.fail_after(20):
            async with (
                httpx2.AsyncClient(timeout=10, headers=bearer(token)) as http,
                Client(streamable_http_client(gw.mcp("toolbox"), http_client=http), mode="legacy") as client,
            ):
                tools = await client.list_tools()
                assert [t.name for t in tools.tools] == ["echo"]
                with pytest.raises(Exception, match="may not use tools/call"):
                    await client.call_tool("env", {})
