"""Issue 8: one access decision. Each test names the red-team item it re-runs through the real HTTP surface."""

import http.client
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import DEMO, spec
from tests.security.support import (
    JSON_ACCEPT,
    add_token,
    admin_token,
    assert_rejection,
    audit_events,
    bearer,
    legacy_headers,
    open_legacy_session,
    rpc,
    secure_gateway,
)

FORBIDDEN = -32003


def raw_request(url: str, method: str, path: str, token: str, body: bytes) -> tuple[int, bytes]:
    """Send the path exactly as written (http.client does not normalise it); returns (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}", **JSON_ACCEPT}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def demo_servers(**echo_extra: Any) -> list[Any]:
    return [spec("echo", DEMO, **echo_extra), spec("other", DEMO)]


def call(client: httpx.Client, url: str, token: str, session: str, request_id: int, method: str, **params: Any) -> Any:
    answer = client.post(url, json=rpc(request_id, method, params), headers=legacy_headers(token, session))
    assert answer.status_code == 200, answer.text
    return answer.json()


# ---- item 1: scope bypass by path form ---------------------------------------------------------------------------

BYPASS_FORMS = [
    ("POST", "/mcp/other/stop/"),
    ("POST", "//mcp/other/stop"),
    ("POST", "/mcp//other/stop"),
    ("POST", "/mcp/./other/stop"),
    ("POST", "/mcp/echo/../other/stop"),
    ("POST", "/mcp/other%2fstop"),
    ("POST", "/mcp/other%5Cstop"),
    ("GET", "//admin/sessions"),
    ("GET", "/admin/sessions/"),
    ("DELETE", "//admin/sessions/0123456789abcdef"),
    ("POST", "/mcp/other/"),
    ("POST", "/mcp/othe%C5%99"),
]


@pytest.mark.parametrize(("method", "path"), BYPASS_FORMS)
def test_item_1_a_path_form_never_reaches_a_route_the_token_lacks(tmp_path: Path, method: str, path: str) -> None:
    """Issue 8 item 1: a `server:echo` token sending another form of a management or foreign-server path is
    refused 400 before authentication (audited http.refused); nothing is stopped, no session is listed."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw:
        scoped = add_token(gw, "echo-only", "server:echo")
        body = json.dumps(rpc(1, "resources/read", {"uri": "demo://readme"})).encode()
        status, answer = raw_request(gw.url, method, path, scoped, body)  # raw: a client library would normalise
        assert status == 400, answer
        assert json.loads(answer)["error"] == "Bad request"
        assert gw.state("other") == "running"
        [refused] = audit_events(tmp_path, "http.refused")
        assert refused["status"] == 400
        assert audit_events(tmp_path, "auth.success") == []  # refused before any stage read the token


def test_item_1_canonical_forms_are_judged_by_the_one_authorizer(tmp_path: Path) -> None:
    """Issue 8 item 1: the canonical forms of the same requests are 403 for the scoped token (needs admin or
    server:other), and 200 for its own server."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        scoped = add_token(gw, "echo-only", "server:echo")
        headers = {**JSON_ACCEPT, **bearer(scoped)}
        stop = client.post(f"{gw.url}/mcp/other/stop", headers=headers)
        assert_rejection(stop, 403, "Forbidden")
        assert 'scope="admin"' in stop.headers["www-authenticate"]
        listing = client.get(f"{gw.url}/admin/sessions", headers=headers)
        assert_rejection(listing, 403, "Forbidden")
        read = client.post(f"{gw.url}/mcp/other", json=rpc(1, "resources/read", {"uri": "x"}), headers=headers)
        assert_rejection(read, 403, "Forbidden")
        assert 'scope="server:other"' in read.headers["www-authenticate"]
        session = open_legacy_session(client, gw.mcp("echo"), scoped)
        assert call(client, gw.mcp("echo"), scoped, session, 2, "resources/read", uri="demo://readme")["result"]
        assert gw.state("other") == "running"
        reasons = sorted(line["reason"] for line in audit_events(tmp_path, "auth.forbidden"))
        assert reasons == ["needs admin", "needs admin", "needs server:other"]


# ---- item 2: a login cookie never outlives its token ------------------------------------------------------------


def login(client: httpx.Client, url: str, token: str) -> str:
    answer = client.post(f"{url}/auth/login", json={"token": token})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["csrf_token"])


@pytest.mark.parametrize("ending", ["revoke", "rotate", "expire"])
def test_item_2_a_login_session_ends_with_its_token(tmp_path: Path, ending: str) -> None:
    """Issue 8 item 2: log in with a named admin token, then revoke, rotate or let it expire: the cookie is
    refused at once (401), cannot create tokens, its stored session is deleted and the end is audited."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        expires = time.time() + 3.0 if ending == "expire" else None
        named = add_token(gw, "ops", "admin", expires=expires)
        csrf = login(client, gw.url, named)
        assert client.get(f"{gw.url}/auth/session").json()["principal"] == "ops"
        [stored] = gw.app.store.sessions.values()  # type: ignore[attr-defined]
        if ending == "expire":
            assert stored.expires <= expires + 0.01  # never longer than the token itself
            deadline = time.monotonic() + 10
            while time.time() < expires and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            old = next(t for t in gw.app.store.tokens.values() if t.name == "ops")  # type: ignore[attr-defined]
            gw.app.store.tokens.pop(old.token_hash)  # type: ignore[attr-defined]
            if ending == "rotate":
                add_token(gw, "ops", "admin")  # same name, new value: the old session must not follow
        # Sent by hand: a browser drops an expired cookie, a thief replaying it does not.
        jar = {"Cookie": f"bastion_session={client.cookies['bastion_session']}; csrf_token={csrf}"}
        refused = httpx.get(f"{gw.url}/auth/session", headers=jar)
        assert_rejection(refused, 401, "Unauthorized")
        create = httpx.post(f"{gw.url}/api/tokens", json={"name": "sneaky"}, headers={**jar, "X-CSRF-Token": csrf})
        assert_rejection(create, 401, "Unauthorized")
        assert gw.app.store.sessions == {}  # type: ignore[attr-defined]
        assert not any(t.name == "sneaky" for t in gw.app.store.tokens.values())  # type: ignore[attr-defined]
        ended = audit_events(tmp_path, "session.expired")
        assert ended, "the end of the login session is audited"
        assert ended[0]["reason"] in ("session ended: invalid token", "session ended: expired token", "expired session")


def test_item_2_login_with_the_env_admin_token_is_bound_to_it(tmp_path: Path) -> None:
    """Issue 8 item 2: a session from the .env token stays valid while that token is, and is refused once
    `lockdown` revoked the token (recorded in the store)."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        login(client, gw.url, admin)
        who = client.get(f"{gw.url}/auth/session").json()
        assert (who["principal"], who["via"]) == ("admin", "cookie")
        gw.app.store.revoked.add(gw.app.admin.auth.admin_hash)  # type: ignore[attr-defined]
        assert_rejection(client.get(f"{gw.url}/auth/session"), 401, "Unauthorized")


# ---- item 4: every MCP method goes through the one authorizer ---------------------------------------------------


def test_item_4_a_tool_scoped_token_reaches_only_its_tools(tmp_path: Path) -> None:
    """Issue 8 item 4: `tool:echo/echo` reaches initialize, ping, the lists (filtered to nothing but echo) and
    echo; resources/read, prompts/get, completion/complete and logging/setLevel are -32003 and audited."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        scoped = add_token(gw, "echo-tool", "tool:echo/echo")
        url = gw.mcp("echo")
        session = open_legacy_session(client, url, scoped)
        assert call(client, url, scoped, session, 1, "ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}
        tools = call(client, url, scoped, session, 2, "tools/list")["result"]["tools"]
        assert [t["name"] for t in tools] == ["echo"]
        assert call(client, url, scoped, session, 3, "prompts/list")["result"]["prompts"] == []
        assert call(client, url, scoped, session, 4, "resources/list")["result"]["resources"] == []
        echoed = call(client, url, scoped, session, 5, "tools/call", name="echo", arguments={"text": "hi"})
        assert "result" in echoed
        refused = {
            "resources/read": {"uri": "demo://readme"},
            "prompts/get": {"name": "greet", "arguments": {"name": "x"}},
            "completion/complete": {"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "n"}},
            "logging/setLevel": {"level": "debug"},
            "tools/call": {"name": "add", "arguments": {"a": 1, "b": 2}},
        }
        for index, (method, params) in enumerate(refused.items(), start=10):
            answer = call(client, url, scoped, session, index, method, **params)
            assert answer["error"]["code"] == FORBIDDEN, (method, answer)
        forbidden = [line["method"] for line in audit_events(tmp_path, "mcp.call") if line["outcome"] == "forbidden"]
        assert forbidden == list(refused)
        assert gw.app.gateway.backends["echo"].calls == 4  # the lists and echo; nothing refused reached the child


def test_item_4_resource_and_prompt_scopes_grant_exactly_their_items(tmp_path: Path) -> None:
    """Issue 8 item 4: `resource:echo/demo://*` and `prompt:echo/greet` open reads, prompts/get and the
    completion of that prompt; the lists show those items; tools stay closed."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        scoped = add_token(gw, "reader", "resource:echo/demo://*", "prompt:echo/greet")
        url = gw.mcp("echo")
        session = open_legacy_session(client, url, scoped)
        assert [r["uri"] for r in call(client, url, scoped, session, 1, "resources/list")["result"]["resources"]] == [
            "demo://readme"
        ]
        assert [p["name"] for p in call(client, url, scoped, session, 2, "prompts/list")["result"]["prompts"]] == [
            "greet"
        ]
        assert call(client, url, scoped, session, 3, "tools/list")["result"]["tools"] == []
        assert "result" in call(client, url, scoped, session, 4, "resources/read", uri="demo://readme")
        assert "result" in call(client, url, scoped, session, 5, "prompts/get", name="greet", arguments={"name": "a"})
        complete = call(
            client, url, scoped, session, 6, "completion/complete", ref={"type": "ref/prompt", "name": "greet"}
        )
        assert complete.get("error", {}).get("code") != FORBIDDEN  # reached the child (which answers as it can)
        other = call(client, url, scoped, session, 7, "resources/read", uri="file:///etc/passwd")
        assert other["error"]["code"] == FORBIDDEN


def test_item_4_a_server_with_allowed_tools_closes_resources_and_prompts_for_everyone(tmp_path: Path) -> None:
    """Issue 8 item 4: `allowedTools` on a server narrows every caller, admin included: its resources and prompts
    are closed and filtered out unless `allowedResources`/`allowedPrompts` list them."""
    admin = admin_token()
    servers = demo_servers(allowedTools=["echo"], allowedPrompts=["greet"])
    with secure_gateway(servers, tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        url = gw.mcp("echo")
        session = open_legacy_session(client, url, admin)
        assert [t["name"] for t in call(client, url, admin, session, 1, "tools/list")["result"]["tools"]] == ["echo"]
        assert call(client, url, admin, session, 2, "resources/list")["result"]["resources"] == []
        read = call(client, url, admin, session, 3, "resources/read", uri="demo://readme")
        assert read["error"]["code"] == FORBIDDEN
        assert "result" in call(client, url, admin, session, 4, "prompts/get", name="greet", arguments={"name": "a"})


# ---- item 5: principals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["admin", "Admin", "anonymous", "ａｄｍｉｎ", "adm\u0131n", "bad name", "x" * 65, ""])
def test_item_5_reserved_and_non_ascii_token_names_are_refused_by_the_api(tmp_path: Path, name: str) -> None:
    """Issue 8 item 5: the dashboard API (and the store under it) refuses reserved and look-alike names."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        answer = client.post(f"{gw.url}/api/tokens", json={"name": name}, headers=bearer(admin))
        assert_rejection(answer, 400, "Bad request")
        assert gw.app.store.tokens == {}  # type: ignore[attr-defined]


def test_item_5_a_named_token_is_never_the_env_admin_principal(tmp_path: Path) -> None:
    """Issue 8 item 5: principals carry stable ids; a named token (even with the admin scope) cannot drive the
    .env admin's MCP session, and its audit lines carry its own id."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        other = add_token(gw, "ops", "admin")
        session = open_legacy_session(client, gw.mcp("echo"), admin)
        hijack = client.post(gw.mcp("echo"), json=rpc(1, "ping"), headers=legacy_headers(other, session))
        assert hijack.status_code == 404
        ids = {line["principal"]: line["principal_id"] for line in audit_events(tmp_path, "auth.success")}
        assert ids == {"admin": "env:admin", "ops": "token:ops"}


# ---- item 13: OAuth discovery probes are not failed authentications ---------------------------------------------

DISCOVERY = [
    "/.well-known/oauth-protected-resource/mcp/echo",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/mcp/echo",
    "/.well-known/openid-configuration",
    "/.well-known/openid-configuration/mcp/echo",
]


def test_item_13_discovery_probes_never_lock_out_an_address(tmp_path: Path) -> None:
    """Issue 8 item 13: mcp-remote's six unauthenticated discovery fetches, ten launches in a row, with the
    failure limit at its default: each answers 404, none counts as a failed authentication, and the admin
    token still works from that address. A request with no credential at all is not a failure either."""
    admin = admin_token()
    with (
        secure_gateway(demo_servers(), tmp_path, auth_token=admin, auth_failure_limit=10) as gw,
        httpx.Client(timeout=10) as client,
    ):
        for _ in range(10):
            for path in DISCOVERY:
                assert_rejection(client.get(gw.url + path), 404, "Not found")
            assert_rejection(client.post(gw.mcp("echo"), json=rpc(1, "initialize")), 401, "Unauthorized")
        assert client.get(f"{gw.url}/health", headers=bearer(admin)).status_code == 200
        assert audit_events(tmp_path, "ratelimit.exceeded") == []


def test_item_13_presented_wrong_tokens_still_lock_out(tmp_path: Path) -> None:
    """Issue 8 item 13 (the other side): ten wrong tokens still trip the lockout for that address."""
    admin = admin_token()
    with (
        secure_gateway(demo_servers(), tmp_path, auth_token=admin, auth_failure_limit=10) as gw,
        httpx.Client(timeout=10) as client,
    ):
        for _ in range(10):
            assert client.get(f"{gw.url}/health", headers=bearer(admin + "x")).status_code == 401
        assert client.get(f"{gw.url}/health", headers=bearer(admin)).status_code == 429


# ---- scoped views ------------------------------------------------------------------------------------------------


def test_a_scoped_token_sees_only_its_servers_without_pids_or_errors(tmp_path: Path) -> None:
    """Issue 8 (also): /health, /mcp/servers and /api/overview show a scoped token only its servers, and the
    pid and last_error only to admin."""
    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        scoped = add_token(gw, "echo-tool", "tool:echo/echo")
        health = client.get(f"{gw.url}/health", headers=bearer(scoped)).json()
        assert list(health["servers"]) == ["echo"]
        assert "pid" not in health["servers"]["echo"]
        assert "last_error" not in health["servers"]["echo"]
        listed = client.get(f"{gw.url}/mcp/servers", headers=bearer(scoped)).json()["servers"]
        assert [s["name"] for s in listed] == ["echo"]
        overview = client.get(f"{gw.url}/api/overview", headers=bearer(scoped)).json()["servers"]
        assert [(s["name"], s["pid"], s["last_error"]) for s in overview] == [("echo", None, None)]
        full = client.get(f"{gw.url}/health", headers=bearer(admin)).json()["servers"]
        assert sorted(full) == ["echo", "other"]
        assert isinstance(full["other"]["pid"], int)


def test_a_websocket_scope_is_refused_in_process(tmp_path: Path) -> None:
    """Issue 8 (also): a `websocket` scope reaching the ASGI app is refused (403 response where the server
    supports it) and audited, never a 500."""
    import asyncio

    admin = admin_token()
    with secure_gateway(demo_servers(), tmp_path, auth_token=admin) as gw:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": "/mcp/echo",
            "client": ("127.0.0.1", 1),
            "headers": [],
            "extensions": {"websocket.http.response": {}},
        }
        asyncio.run(gw.app(scope, receive, send))
        assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
        assert sent[0]["status"] == 403
        assert (b"x-content-type-options", b"nosniff") in sent[0]["headers"]
        [line] = audit_events(tmp_path, "http.refused")
        assert line["reason"] == "websocket refused"
