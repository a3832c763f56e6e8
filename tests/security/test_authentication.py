"""Bearer authentication on every route but the public ones (issue item 1)."""

import time
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.harness import spec
from tests.security.support import (
    JSON_ACCEPT,
    add_token,
    admin_token,
    assert_rejection,
    audit_events,
    audit_lines,
    bearer,
    legacy_headers,
    modern_call,
    open_legacy_session,
    rpc,
    run_sync,
    secure_gateway,
)

CHALLENGE = 'Bearer realm="mcp-bastion"'
CHALLENGE_INVALID = 'Bearer realm="mcp-bastion", error="invalid_token"'
LIST = rpc(1, "tools/list")


def test_missing_token_on_mcp_post_is_401_with_challenge_and_one_audit_line(tmp_path: Path) -> None:
    """AUTH-01: no credentials on POST /mcp/{server}: 401, WWW-Authenticate: Bearer, {"error","message"}, one audit
    auth.failure line (reason, request id, client IP); the child never sees the request."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        answer = client.post(gw.mcp("toolbox"), json=LIST, headers=JSON_ACCEPT)
        body = assert_rejection(answer, 401, "Unauthorized")
        assert "Bearer" in body["message"]
        assert answer.headers["www-authenticate"] == CHALLENGE
        failures = audit_events(tmp_path, "auth.failure")
        assert len(failures) == 1, failures
        line = failures[0]
        assert line["reason"] == "missing credentials"
        assert line["outcome"] == "denied"
        assert line["ip"] == "127.0.0.1"
        assert line["request_id"] == answer.headers["x-request-id"]
        assert line["path"] == "/mcp/toolbox"
        assert line["method"] == "POST"
        assert line["time"].endswith("Z")
        health = client.get(f"{gw.url}/health", headers=bearer(admin)).json()
        assert health["servers"]["toolbox"]["calls"] == 0


ROUTES = [
    ("POST", "/mcp/toolbox"),
    ("GET", "/mcp/toolbox"),
    ("DELETE", "/mcp/toolbox"),
    ("GET", "/mcp/toolbox/sse"),
    ("POST", "/mcp/toolbox/messages?session_id=0123456789abcdef0123456789abcdef"),
    ("GET", "/health"),
    ("GET", "/mcp/servers"),
    ("POST", "/mcp/toolbox/restart"),
    ("GET", "/admin/sessions"),
    ("DELETE", "/admin/sessions/0123456789abcdef"),
    ("GET", "/auth/session"),
    ("POST", "/auth/logout"),
    ("GET", "/api/overview"),
    ("GET", "/api/tokens"),
]
UNDECLARED = [("GET", "/metrics"), ("GET", "/api/anything"), ("GET", "/no/such/route"), ("POST", "/mcp/toolbox/x")]


def test_every_non_public_route_wants_a_token(tmp_path: Path) -> None:
    """AUTH-09: without a token every MCP route (SSE stream, /messages, DELETE) and management route is 401, and
    a wrong token is 401 with error="invalid_token"; each refusal writes one auth.failure line."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        for method, path in ROUTES:
            missing = client.request(method, gw.url + path, headers=JSON_ACCEPT, content=b"{}")
            assert_rejection(missing, 401, "Unauthorized")
            assert missing.headers["www-authenticate"] == CHALLENGE, path
            wrong = client.request(method, gw.url + path, headers={**JSON_ACCEPT, **bearer(admin + "x")}, content=b"{}")
            assert_rejection(wrong, 401, "Unauthorized")
            assert wrong.headers["www-authenticate"] == CHALLENGE_INVALID, path
        failures = audit_events(tmp_path, "auth.failure")
        assert [line["reason"] for line in failures] == ["missing credentials", "invalid token"] * len(ROUTES)
        assert [(line["method"], line["path"]) for line in failures[::2]] == [(m, p.split("?")[0]) for m, p in ROUTES]


def test_undeclared_routes_are_404_before_authentication(tmp_path: Path) -> None:
    """Issue 8 (route table): a path no route declares is 404 before any stage runs, with or without a token;
    it is audited as http.refused, never counted as a failed authentication."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        for method, path in UNDECLARED:
            for headers in ({}, bearer(admin), bearer(admin + "x")):
                answer = client.request(method, gw.url + path, headers=headers)
                assert_rejection(answer, 404, "Not found")
                assert "www-authenticate" not in answer.headers
        assert audit_events(tmp_path, "auth.failure") == []
        refused = audit_events(tmp_path, "http.refused")
        assert [(line["method"], line["path"], line["status"]) for line in refused] == [
            (m, p, 404) for m, p in UNDECLARED for _ in range(3)
        ]


def test_public_routes_answer_without_a_token(tmp_path: Path) -> None:
    """AUTH-09: /livez is public and says nothing; the login route is reachable without a token (it is the way in)."""
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as c:
        livez = c.get(f"{gw.url}/livez")
        assert livez.status_code == 200
        assert livez.text == "ok"
        login = c.post(f"{gw.url}/auth/login", json={"token": "not-a-token"})
        assert_rejection(login, 401, "Unauthorized")
        assert audit_events(tmp_path, "auth.failure")[0]["path"] == "/auth/login"


def test_admin_token_from_settings_is_an_admin_principal(tmp_path: Path) -> None:
    """AUTH-09, AZ-06: AUTH_TOKEN authenticates as `admin` on MCP and management routes; auth.success is recorded
    with the principal's name, never the token."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        who = client.get(f"{gw.url}/auth/session", headers=bearer(admin))
        assert who.status_code == 200
        assert who.json() == {"principal": "admin", "scopes": ["admin"], "via": "bearer"}
        assert client.get(f"{gw.url}/admin/sessions", headers=bearer(admin)).status_code == 200
        answer = modern_call(
            client, gw.mcp("toolbox"), admin, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["content"][0]["text"] == "hi"
        successes = audit_events(tmp_path, "auth.success")
        assert len(successes) == 1, successes
        assert successes[0]["principal"] == "admin"
        assert admin not in (tmp_path / "logs" / "audit.jsonl").read_text()


NEAR_MISSES = {
    "last-char": lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
    "case-flipped": lambda t: t.swapcase(),
    "inner-space": lambda t: t[:10] + " " + t[10:],
    "lower-case": lambda t: t.lower(),
    "prefix": lambda t: t[:20],
    "extra-char": lambda t: t + "x",
    "empty": lambda t: "",
}


def test_near_miss_tokens_are_all_refused_identically(tmp_path: Path) -> None:
    """AUTH-02, AUTH-05: a changed last char, flipped case, inner blank, prefix, suffix or empty value is 401 with
    the same body for every kind of failure (trailing blanks are HTTP whitespace, stripped by the parser)."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        bodies = set()
        for mutate in NEAR_MISSES.values():
            answer = client.post(
                gw.mcp("toolbox"),
                json=LIST,
                headers={**JSON_ACCEPT, "Authorization": f"Bearer {mutate(admin)}".strip()},
            )
            assert_rejection(answer, 401, "Unauthorized")
            bodies.add(answer.content)
        assert len(bodies) == 1, bodies
        assert len(audit_events(tmp_path, "auth.failure")) == len(NEAR_MISSES)


SCHEMES = [
    ("Bearer {t}", True),
    ("bearer {t}", True),
    ("BEARER {t}", True),
    ("Bearer  {t}", False),
    ("Bearer{t}", False),
    ("Token {t}", False),
    ("Basic {t}", False),
    ("{t}", False),
    ("Bearer {t} extra", False),
]


def test_authorization_scheme_rule(tmp_path: Path) -> None:
    """AUTH-03: one documented rule: scheme `Bearer` case-insensitive, exactly one space, nothing after the token."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        for template, accepted in SCHEMES:
            answer = client.get(f"{gw.url}/auth/session", headers={"Authorization": template.format(t=admin)})
            if accepted:
                assert answer.status_code == 200, (template, answer.text)
            else:
                assert_rejection(answer, 401, "Unauthorized")
                assert answer.headers["www-authenticate"] == CHALLENGE_INVALID, template


def test_two_authorization_headers_are_refused(tmp_path: Path) -> None:
    """AUTH-03: two Authorization headers (a valid one among them) never means "first that matches wins"."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        headers = [("Authorization", f"Bearer {admin}"), ("Authorization", "Bearer wrong")]
        answer = client.get(f"{gw.url}/auth/session", headers=headers)
        assert_rejection(answer, 401, "Unauthorized")
        assert audit_events(tmp_path, "auth.failure")[0]["reason"] == "more than one Authorization header"


def test_token_in_query_string_is_refused_and_not_logged(tmp_path: Path) -> None:
    """AUTH-04, SEC-04: a token in the URL is refused (401) even alongside a valid header, and the URL's token
    value never reaches the audit log."""
    admin = admin_token()
    params = ["access_token", "token", "auth", "api_key", "ACCESS_TOKEN", "x=1&access_token"]
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        for param in params:
            alone = client.post(f"{gw.mcp('toolbox')}?{param}={admin}", json=LIST, headers=JSON_ACCEPT)
            body = assert_rejection(alone, 401, "Unauthorized")
            assert "URL" in body["message"]
            both = client.get(f"{gw.url}/auth/session?{param}={admin}", headers=bearer(admin))
            assert_rejection(both, 401, "Unauthorized")
        reasons = [line["reason"] for line in audit_events(tmp_path, "auth.failure")]
        assert reasons == ["token in query string refused"] * 2 * len(params)
        assert admin not in (tmp_path / "logs" / "audit.jsonl").read_text()


def test_token_in_cookie_or_form_is_not_a_credential(tmp_path: Path) -> None:
    """AUTH-04, SES-11: `Authorization` as a cookie or a form field authenticates nothing."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        cookie = client.post(gw.mcp("toolbox"), json=LIST, headers={**JSON_ACCEPT, "Cookie": f"Authorization={admin}"})
        assert_rejection(cookie, 401, "Unauthorized")
        form = client.post(gw.mcp("toolbox"), data={"access_token": admin, "token": admin})
        assert_rejection(form, 401, "Unauthorized")


def test_named_token_expired_is_refused(tmp_path: Path) -> None:
    """AUTH-08: a stored token past its expiry is 401 (reason recorded, value never)."""
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as c:
        old = add_token(gw, "old-laptop", "server:toolbox", expires=time.time() - 1)
        fresh = add_token(gw, "new-laptop", "server:toolbox", expires=time.time() + 3600)
        assert_rejection(c.get(f"{gw.url}/auth/session", headers=bearer(old)), 401, "Unauthorized")
        assert c.get(f"{gw.url}/auth/session", headers=bearer(fresh)).json()["principal"] == "new-laptop"
        assert [line["reason"] for line in audit_events(tmp_path, "auth.failure")] == ["expired token"]
        text = (tmp_path / "logs" / "audit.jsonl").read_text()
        assert old not in text
        assert fresh not in text


def test_revoked_named_token_is_refused_on_the_next_request(tmp_path: Path) -> None:
    """AUTH-08: revoking a token in the store takes effect on the running server's very next request."""
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as c:
        value = add_token(gw, "ci", "server:toolbox")
        assert c.get(f"{gw.url}/auth/session", headers=bearer(value)).status_code == 200
        assert run_sync(gw.app.store.revoke_token("ci")) is True
        assert_rejection(c.get(f"{gw.url}/auth/session", headers=bearer(value)), 401, "Unauthorized")


def test_legacy_session_is_bound_to_its_principal(tmp_path: Path) -> None:
    """AUTH-10, IN-11: an Mcp-Session-Id opened by token A is 404 for token B (POST, GET stream, DELETE) and 401
    with no token; A keeps using it."""
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as c:
        alice = add_token(gw, "alice", "server:toolbox")
        bob = add_token(gw, "bob", "server:toolbox")
        url = gw.mcp("toolbox")
        session = open_legacy_session(c, url, alice)
        stolen = c.post(url, json=LIST, headers=legacy_headers(bob, session))
        assert stolen.status_code == 404, stolen.text
        assert stolen.json()["error"]["message"] == "Session not found"
        get = c.get(url, headers={**legacy_headers(bob, session), "Accept": "text/event-stream"})
        assert get.status_code == 404
        delete = c.delete(url, headers=legacy_headers(bob, session))
        assert delete.status_code == 404
        anonymous = c.post(url, json=LIST, headers=legacy_headers(None, session))
        assert_rejection(anonymous, 401, "Unauthorized")
        own = c.post(url, json=LIST, headers=legacy_headers(alice, session))
        assert own.status_code == 200, own.text
        assert "tools" in own.json()["result"]


def test_sse_messages_of_another_principal_are_404(tmp_path: Path) -> None:
    """AUTH-10, IN-12: /messages?session_id= of a stream opened by token A is 404 for token B and 401 without a
    token: the session id is never a credential."""
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token()) as gw, httpx.Client(timeout=10) as c:
        alice = add_token(gw, "alice", "server:toolbox")
        bob = add_token(gw, "bob", "server:toolbox")
        with c.stream("GET", gw.mcp("toolbox") + "/sse", headers={"Accept": "text/event-stream", **bearer(alice)}) as s:
            assert s.status_code == 200
            lines = s.iter_lines()
            assert next(lines) == "event: endpoint"
            endpoint = next(lines).removeprefix("data: ")
            assert "session_id=" in endpoint
            messages = gw.url + endpoint
            hijack = c.post(messages, json=rpc(1, "ping"), headers=bearer(bob))
            assert hijack.status_code == 404, hijack.text
            anonymous = c.post(messages, json=rpc(1, "ping"))
            assert_rejection(anonymous, 401, "Unauthorized")
            mine = c.post(messages, json=rpc(1, "ping"), headers=bearer(alice))
            assert mine.status_code == 202


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


async def sdk_failure(url: str, mode: str) -> list[BaseException]:
    """Connect the SDK client without a token and list tools; returns the errors it raised (none: the test fails)."""
    try:
        async with httpx2.AsyncClient(timeout=10) as http:  # the SDK leaves a client it was given open
            if mode == "sse":
                transport = sse_client(url)
                mode = "legacy"
            else:
                transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode=mode) as client:
                await client.list_tools()
    except Exception as exc:
        return leaves(exc)
    return []


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_sdk_streamable_client_with_and_without_token(tmp_path: Path, mode: str) -> None:
    """AUTH-01, AUTH-09: the official SDK client works with the bearer token in its headers and fails without."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw:
        with anyio.fail_after(20):
            async with (
                httpx2.AsyncClient(timeout=10, headers=bearer(admin)) as http,
                Client(streamable_http_client(gw.mcp("toolbox"), http_client=http), mode=mode) as client,
            ):
                answer = await client.call_tool("echo", {"text": "sdk"})
                assert answer.content[0].text == "sdk"
        before = len(audit_events(tmp_path, "auth.failure"))
        with anyio.fail_after(20):
            failure = await sdk_failure(gw.mcp("toolbox"), mode)
        assert [type(e) for e in failure] == [MCPError], failure
        assert len(audit_events(tmp_path, "auth.failure")) > before


@pytest.mark.anyio
async def test_sdk_sse_client_needs_the_token_on_stream_and_messages(tmp_path: Path) -> None:
    """AUTH-09: the SDK's HTTP+SSE client sends the bearer token on the stream and every /messages POST."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw:
        with anyio.fail_after(20):
            async with Client(sse_client(gw.mcp("toolbox") + "/sse", headers=bearer(admin)), mode="legacy") as client:
                answer = await client.call_tool("echo", {"text": "over sse"})
                assert answer.content[0].text == "over sse"
        with anyio.fail_after(20):
            failure = await sdk_failure(gw.mcp("toolbox") + "/sse", "sse")
        assert [type(e) for e in failure] == [httpx2.HTTPStatusError], failure
        assert failure[0].response.status_code == 401
        assert any(line["path"] == "/mcp/toolbox/sse" for line in audit_events(tmp_path, "auth.failure"))
        assert all("event" in line for line in audit_lines(tmp_path))
