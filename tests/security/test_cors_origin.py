"""CORS from ALLOWED_ORIGINS, Origin and Host validation on every route (DNS rebinding)."""

from pathlib import Path

import httpx
import pytest

from mcp_bastion.app import create_app
from mcp_bastion.config import Settings
from mcp_bastion.errors import ConfigError
from tests.harness import spec
from tests.security.support import (
    JSON_ACCEPT,
    admin_token,
    assert_rejection,
    audit_events,
    audit_lines,
    bearer,
    modern_body,
    modern_headers,
    secure_gateway,
)

APP = "https://app.example"
MCP_REQUEST_HEADERS = ["authorization", "content-type", "mcp-session-id", "mcp-protocol-version", "mcp-method"]


def test_preflight_from_an_allowed_origin_is_answered_before_auth(tmp_path: Path) -> None:
    """OR-01: an allowed origin's preflight (no credentials) gets 200 with the exact origin echoed, credentials
    allowed, the MCP headers allowed, Vary: Origin; no auth failure is recorded."""
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token(), allowed_origins=APP) as gw:
        answer = httpx.options(
            gw.mcp("toolbox"),
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": ", ".join([*MCP_REQUEST_HEADERS, "mcp-name", "last-event-id"]),
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == APP
        assert answer.headers["access-control-allow-credentials"] == "true"
        allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
        assert {*MCP_REQUEST_HEADERS, "mcp-name", "last-event-id"} <= allowed
        assert "POST" in answer.headers["access-control-allow-methods"]
        assert "origin" in answer.headers["vary"].lower()
        assert audit_events(tmp_path, "auth.failure") == []


def test_allowed_origin_on_real_requests_exposes_mcp_headers(tmp_path: Path) -> None:
    """OR-01: responses to an allowed origin echo it (never *) and expose Mcp-Session-Id and WWW-Authenticate,
    also on a 401 so the browser client can read the challenge."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, allowed_origins=APP) as gw:
        with httpx.Client(timeout=10) as client:
            ok = client.post(
                gw.mcp("toolbox"),
                json=modern_body(1, "tools/list"),
                headers={**modern_headers(admin, "tools/list"), "Origin": APP},
            )
            assert ok.status_code == 200
            denied = client.post(gw.mcp("toolbox"), json={}, headers={**JSON_ACCEPT, "Origin": APP})
            assert denied.status_code == 401
        for answer in (ok, denied):
            assert answer.headers["access-control-allow-origin"] == APP
            assert answer.headers["access-control-allow-credentials"] == "true"
            exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
            assert {"mcp-session-id", "www-authenticate"} <= exposed


def test_foreign_origin_is_403_on_every_route(tmp_path: Path) -> None:
    """OR-02: with a valid token, a foreign Origin is 403 {"error":"Forbidden"} on MCP POST/GET/DELETE, the SSE
    stream, /messages, management routes and the preflight; one origin.denied line each; no CORS grant."""
    admin = admin_token()
    evil = "https://evil.example"
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, allowed_origins=APP) as gw:
        routes = [
            ("POST", "/mcp/toolbox"),
            ("GET", "/mcp/toolbox"),
            ("DELETE", "/mcp/toolbox"),
            ("GET", "/mcp/toolbox/sse"),
            ("POST", "/mcp/toolbox/messages?session_id=x"),
            ("GET", "/health"),
            ("POST", "/auth/login"),
            ("GET", "/livez"),
            ("OPTIONS", "/mcp/toolbox"),
        ]
        with httpx.Client(timeout=10) as client:
            for method, path in routes:
                headers = {**JSON_ACCEPT, **bearer(admin), "Origin": evil, "Access-Control-Request-Method": "POST"}
                answer = client.request(method, gw.url + path, headers=headers, json={"token": admin})
                body = assert_rejection(answer, 403, "Forbidden")
                assert body["message"] == "Origin not allowed"
                assert "access-control-allow-origin" not in answer.headers
                assert "access-control-allow-credentials" not in answer.headers
        denied = audit_events(tmp_path, "origin.denied")
        assert [(d["reason"], d["value"], d["path"]) for d in denied] == [
            ("origin", evil, p.split("?")[0]) for _, p in routes
        ]
        assert audit_events(tmp_path, "auth.success") == []


def test_origin_must_match_exactly(tmp_path: Path) -> None:
    """OR-03: null, suffix/prefix tricks, userinfo, other scheme or port are refused; case and a trailing slash are
    the same origin."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, allowed_origins=APP) as gw:
        with httpx.Client(timeout=10) as client:
            for origin in [
                "null",
                "https://app.example.evil.example",
                "https://evil.example#@app.example",
                "https://app.example@evil.example",
                "http://app.example",
                "https://app.example:8443",
                "https://xapp.example",
                "app.example",
            ]:
                answer = client.get(f"{gw.url}/auth/session", headers={**bearer(admin), "Origin": origin})
                assert answer.status_code == 403, origin
            for origin in ["https://APP.example", "https://app.example/"]:
                assert (
                    client.get(f"{gw.url}/auth/session", headers={**bearer(admin), "Origin": origin}).status_code == 200
                )


def test_no_allowed_origins_means_no_cors_and_every_origin_refused(tmp_path: Path) -> None:
    """OR-01, OR-07: CORS is off by default; any Origin is 403, a request without Origin (CLI client) passes."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        assert client.get(f"{gw.url}/auth/session", headers=bearer(admin)).status_code == 200
        answer = client.get(f"{gw.url}/auth/session", headers={**bearer(admin), "Origin": APP})
        assert_rejection(answer, 403, "Forbidden")
        assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("origins", ["*", "https://ok.example,*", "null"])
def test_wildcard_origin_is_refused_at_start(tmp_path: Path, origins: str) -> None:
    """OR-04, CFG-04: ALLOWED_ORIGINS=* (or null) with credentials is refused when the app is built, naming the
    setting, so no `Access-Control-Allow-Origin: *` with credentials can ever be answered."""
    settings = Settings(
        auth_token=admin_token(),
        allowed_origins=origins,
        store_url="memory://",
        audit_log=tmp_path / "audit.jsonl",
        log_dir=tmp_path / "logs",
    )
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        create_app(settings, {})


def test_foreign_host_is_421_on_every_route(tmp_path: Path) -> None:
    """OR-05, OR-06: a Host outside the bind address's loopback names and ALLOWED_HOSTS is 421 before auth, on
    every route including /livez; loopback names with any case and the configured public name pass."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, allowed_hosts="bastion.example") as gw:
        port = gw.url.rsplit(":", 1)[1]
        with httpx.Client(timeout=10) as client:
            for host in [
                "evil.example",
                f"evil.example:{port}",
                f"127.0.0.1.evil.example:{port}",
                "localhost.evil.example",
                f"0.0.0.0:{port}",
                "127.1",
                "2130706433",
                "[::ffff:7f00:1]",
                "ｌｏｃａｌｈｏｓｔ",
            ]:
                for path in ("/livez", "/auth/session", "/mcp/toolbox"):
                    answer = client.get(gw.url + path, headers={"Host": host.encode()})
                    body = assert_rejection(answer, 421, "Misdirected request")
                    assert body["message"] == "This host name is not served here"
            for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "bastion.example:8443"]:
                assert client.get(f"{gw.url}/auth/session", headers={**bearer(admin), "Host": host}).status_code == 200
        hosts = [d for d in audit_events(tmp_path, "origin.denied") if d["reason"] == "host"]
        assert len(hosts) == 27
        assert audit_events(tmp_path, "auth.failure") == []
        assert all(line["event"] != "auth.failure" for line in audit_lines(tmp_path))
