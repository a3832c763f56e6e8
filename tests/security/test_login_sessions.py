"""Login sessions: cookie attributes, logout deletes server-side, admin session list and revoke, CSRF double
submit, and cookies never authenticating MCP endpoints."""

import time
from pathlib import Path

import httpx

from tests.harness import spec, wait_until
from tests.security.support import (
    JSON_ACCEPT,
    add_token,
    admin_token,
    assert_rejection,
    audit_events,
    bearer,
    modern_body,
    modern_headers,
    rpc,
    secure_gateway,
)


def login(gw, token: str) -> tuple[httpx.Response, dict[str, str]]:  # type: ignore[no-untyped-def]
    """POST /auth/login; returns the answer and the cookie values it set."""
    answer = httpx.post(f"{gw.url}/auth/login", json={"token": token}, timeout=10)
    assert answer.status_code == 200, answer.text
    cookies = {}
    for header in answer.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        cookies[name] = rest.split(";", 1)[0]
    return answer, cookies


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def test_login_sets_a_strict_httponly_cookie_and_a_readable_csrf_cookie(tmp_path: Path) -> None:
    """SES-01, SES-02, SES-04: login returns principal, scopes, expiry and csrf_token; the session cookie is HttpOnly,
    SameSite=Strict, Path=/, Max-Age 24 h, not Secure on plain HTTP; the csrf_token cookie is readable and equal to
    the JSON value; session.login audited; the cookie value is nowhere in the audit log."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw:
        before = time.time()
        answer, cookies = login(gw, admin)
        body = answer.json()
        assert set(body) == {"principal", "scopes", "expires", "csrf_token"}
        assert body["principal"] == "admin"
        assert body["scopes"] == ["admin"]
        assert before + 86400 - 5 <= body["expires"] <= time.time() + 86400 + 5
        assert len(body["csrf_token"]) >= 32
        headers = {h.split("=", 1)[0]: h for h in answer.headers.get_list("set-cookie")}
        assert set(headers) == {"bastion_session", "csrf_token"}
        session_attrs = [p.strip() for p in headers["bastion_session"].split(";")[1:]]
        assert sorted(session_attrs) == sorted(["Path=/", "Max-Age=86400", "SameSite=Strict", "HttpOnly"])
        csrf_attrs = [p.strip() for p in headers["csrf_token"].split(";")[1:]]
        assert sorted(csrf_attrs) == sorted(["Path=/", "Max-Age=86400", "SameSite=Strict"])
        assert cookies["csrf_token"] == body["csrf_token"]
        assert len(cookies["bastion_session"]) >= 32
        [line] = audit_events(tmp_path, "session.login")
        assert (line["principal"], line["ip"], line["outcome"]) == ("admin", "127.0.0.1", "ok")
        text = (tmp_path / "logs" / "audit.jsonl").read_text()
        assert cookies["bastion_session"] not in text
        assert body["csrf_token"] not in text
        assert admin not in text


def test_session_cookie_identifies_the_caller(tmp_path: Path) -> None:
    """SES-03: GET /auth/session with the cookie names the principal; a pre-login attacker cookie is not adopted."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        fixed = "attacker-chosen-value-0123456789abcdef"
        answer = client.post(
            f"{gw.url}/auth/login", json={"token": admin}, headers={"Cookie": f"bastion_session={fixed}"}
        )
        issued = answer.cookies["bastion_session"]
        assert issued != fixed
        who = httpx.get(f"{gw.url}/auth/session", headers=cookie_header({"bastion_session": issued}))
        assert who.status_code == 200
        assert who.json()["principal"] == "admin"
        assert who.json()["via"] == "cookie"
        assert len(who.json()["id"]) == 16
        attacker = httpx.get(f"{gw.url}/auth/session", headers=cookie_header({"bastion_session": fixed}))
        assert_rejection(attacker, 401, "Unauthorized")


def test_logout_deletes_the_session_server_side(tmp_path: Path) -> None:
    """SES-05, SES-06: POST /auth/logout (with the CSRF token) ends the session: a replayed cookie gets 401 on every
    cookie route; session.logout audited once; GET /auth/logout is 405 and changes nothing."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        _, cookies = login(gw, admin)
        jar = cookie_header(cookies)
        assert client.get(f"{gw.url}/auth/logout", headers=jar).status_code == 405
        assert client.get(f"{gw.url}/auth/session", headers=jar).status_code == 200
        out = client.post(f"{gw.url}/auth/logout", headers={**jar, "X-CSRF-Token": cookies["csrf_token"]})
        assert out.status_code == 200
        assert out.json() == {"ok": True, "ended": True}
        cleared = {h.split("=", 1)[0]: h for h in out.headers.get_list("set-cookie")}
        assert "Max-Age=0" in cleared["bastion_session"]
        for method, path in [("GET", "/auth/session"), ("GET", "/admin/sessions"), ("GET", "/health")]:
            replay = client.request(method, gw.url + path, headers=jar)
            assert_rejection(replay, 401, "Unauthorized")
        assert len(audit_events(tmp_path, "session.logout")) == 1
        assert [f["reason"] for f in audit_events(tmp_path, "auth.failure")] == ["unknown session"] * 3


def test_state_changing_cookie_requests_need_the_csrf_header(tmp_path: Path) -> None:
    """SES-06, OR-08: a cookie-authenticated POST/DELETE without X-CSRF-Token, or with a wrong one, or with another
    session's, is 403 and changes nothing; the matching token passes."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        _, mine = login(gw, admin)
        _, other = login(gw, admin)
        jar = cookie_header(mine)
        for csrf in [None, "wrong", other["csrf_token"], mine["bastion_session"]]:
            headers = {**jar, **({"X-CSRF-Token": csrf} if csrf else {})}
            answer = client.post(f"{gw.url}/auth/logout", headers=headers)
            body = assert_rejection(answer, 403, "Forbidden")
            assert "CSRF" in body["message"]
        assert client.get(f"{gw.url}/auth/session", headers=jar).status_code == 200
        denied = [f for f in audit_events(tmp_path, "auth.failure") if "CSRF" in f["reason"]]
        assert len(denied) == 4
        ok = client.post(f"{gw.url}/auth/logout", headers={**jar, "X-CSRF-Token": mine["csrf_token"]})
        assert ok.status_code == 200


def test_admin_lists_and_revokes_login_sessions(tmp_path: Path) -> None:
    """SES-08, SES-09: /admin/sessions lists sessions by a 16-char hash prefix (never a cookie value); DELETE
    /admin/sessions/{id} (cookie + CSRF) ends one at once (replay 401) and writes session.revoked."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        user = add_token(gw, "user", "server:toolbox")
        _, victim = login(gw, user)
        _, operator = login(gw, admin)
        listing = client.get(f"{gw.url}/admin/sessions", headers=cookie_header(operator))
        assert listing.status_code == 200
        sessions = listing.json()["sessions"]
        assert sorted(s["principal"] for s in sessions) == ["admin", "user"]
        for value in [*victim.values(), *operator.values(), admin, user]:
            assert value not in listing.text
        target = next(s["id"] for s in sessions if s["principal"] == "user")
        assert len(target) == 16
        no_csrf = client.delete(f"{gw.url}/admin/sessions/{target}", headers=cookie_header(operator))
        assert no_csrf.status_code == 403
        revoke = client.delete(
            f"{gw.url}/admin/sessions/{target}",
            headers={**cookie_header(operator), "X-CSRF-Token": operator["csrf_token"]},
        )
        assert revoke.status_code == 200
        assert revoke.json() == {"revoked": target, "kind": "login"}
        assert_rejection(client.get(f"{gw.url}/auth/session", headers=cookie_header(victim)), 401, "Unauthorized")
        [line] = audit_events(tmp_path, "session.revoked")
        assert (line["principal"], line["session"], line["owner"], line["kind"]) == ("admin", target, "user", "login")
        again = client.delete(f"{gw.url}/admin/sessions/{target}", headers=bearer(admin))
        assert again.status_code == 404


def test_non_admin_cookie_cannot_use_admin_routes(tmp_path: Path) -> None:
    """SES-07: a session of a non-admin token gets 403 on /admin/sessions."""
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token()) as gw:
        _, cookies = login(gw, add_token(gw, "user", "server:toolbox"))
        answer = httpx.get(f"{gw.url}/admin/sessions", headers=cookie_header(cookies), timeout=10)
        assert_rejection(answer, 403, "Forbidden")


def test_session_cookie_never_authenticates_mcp_endpoints(tmp_path: Path) -> None:
    """SES-11: MCP endpoints (Streamable HTTP both eras, SSE, /messages) want the bearer token: a valid admin session
    cookie plus its CSRF header is 401 there."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        _, cookies = login(gw, admin)
        jar = {**cookie_header(cookies), "X-CSRF-Token": cookies["csrf_token"]}
        url = gw.mcp("toolbox")
        answers = [
            client.post(url, json=rpc(1, "tools/list"), headers={**JSON_ACCEPT, **jar}),
            client.post(url, json=modern_body(1, "tools/list"), headers={**modern_headers(None, "tools/list"), **jar}),
            client.get(url + "/sse", headers={"Accept": "text/event-stream", **jar}),
            client.post(url + "/messages?session_id=abc", json=rpc(1, "ping"), headers=jar),
            client.delete(url, headers=jar),
        ]
        for answer in answers:
            assert_rejection(answer, 401, "Unauthorized")
        assert client.get(f"{gw.url}/auth/session", headers=jar).status_code == 200


def test_session_expires_server_side(tmp_path: Path) -> None:
    """SES-04: the session ends at SESSION_TTL_S from creation whatever the client keeps: the cookie then gets 401."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, session_ttl_s=1.0) as gw:
        _, cookies = login(gw, admin)
        jar = cookie_header(cookies)
        assert httpx.get(f"{gw.url}/auth/session", headers=jar).status_code == 200
        wait_until(lambda: httpx.get(f"{gw.url}/auth/session", headers=jar).status_code == 401, timeout=5, interval=0.1)
        assert audit_events(tmp_path, "session.expired")[-1]["reason"] == "expired session"
