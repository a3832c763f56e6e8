"""Rate limits per client IP, per token, and the failed-authentication lockout."""

from pathlib import Path

import httpx

from tests.harness import spec
from tests.security.support import (
    add_token,
    admin_token,
    assert_rejection,
    audit_events,
    bearer,
    secure_gateway,
)

WINDOW_MS = 60_000


def session(client: httpx.Client, gw, token: str, xff: str | None = None) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = bearer(token) | ({"X-Forwarded-For": xff} if xff else {})
    return client.get(f"{gw.url}/auth/session", headers=headers)


def assert_429(answer: httpx.Response, limit: int) -> None:
    body = assert_rejection(answer, 429, "Too many requests")
    assert body["message"]
    assert int(answer.headers["retry-after"]) >= 1
    assert int(answer.headers["retry-after"]) <= WINDOW_MS // 1000
    assert answer.headers["ratelimit-limit"] == str(limit)
    assert answer.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(answer.headers["ratelimit-reset"]) <= WINDOW_MS // 1000


def test_per_ip_limit(tmp_path: Path) -> None:
    """RL-01: RATE_LIMIT_MAX_REQUESTS=5 per window: exactly 5 pass, then 429 with Retry-After and RateLimit-*;
    ratelimit.exceeded audited; /livez exempt."""
    admin = admin_token()
    settings = {"rate_limit_max_requests": 5, "rate_limit_window_ms": WINDOW_MS}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw, httpx.Client(timeout=10) as c:
        statuses = [session(c, gw, admin).status_code for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3
        assert_429(session(c, gw, admin), 5)
        assert c.get(f"{gw.url}/livez").status_code == 200
        exceeded = audit_events(tmp_path, "ratelimit.exceeded")
        assert len(exceeded) >= 1
        assert exceeded[0]["reason"] == "per-ip"
        assert exceeded[0]["ip"] == "127.0.0.1"
        assert exceeded[0]["path"] == "/auth/session"


def test_per_ip_limit_counts_unauthenticated_requests_before_auth(tmp_path: Path) -> None:
    """RL-03: requests with bad tokens use the per-IP budget too (limited before any token lookup)."""
    settings = {"rate_limit_max_requests": 3, "rate_limit_window_ms": WINDOW_MS}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token(), **settings) as gw:
        with httpx.Client(timeout=10) as c:
            statuses = [session(c, gw, f"bad-{i}").status_code for i in range(5)]
        assert statuses == [401, 401, 401, 429, 429]


def test_per_ip_limit_keys_on_the_forwarded_client(tmp_path: Path) -> None:
    """RL-01, IP-03: behind a trusted proxy each forwarded client has its own per-IP budget."""
    admin = admin_token()
    settings = {"rate_limit_max_requests": 2, "rate_limit_window_ms": WINDOW_MS, "trusted_proxies": "127.0.0.1"}
    settings["allowed_ips"] = "10.0.0.0/8"
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw, httpx.Client(timeout=10) as c:
        assert [session(c, gw, admin, "10.0.0.1").status_code for _ in range(3)] == [200, 200, 429]
        assert [session(c, gw, admin, "10.0.0.2").status_code for _ in range(3)] == [200, 200, 429]
        assert [e["ip"] for e in audit_events(tmp_path, "ratelimit.exceeded")] == ["10.0.0.1", "10.0.0.2"]


def test_per_token_limit_is_shared_across_addresses(tmp_path: Path) -> None:
    """RL-02: RATE_LIMIT_TOKEN_MAX_REQUESTS=3: one budget for the token whatever address it comes from; another
    token is unaffected."""
    settings = {
        "rate_limit_token_max_requests": 3,
        "rate_limit_window_ms": WINDOW_MS,
        "trusted_proxies": "127.0.0.1",
        "allowed_ips": "10.0.0.0/8",
    }
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token(), **settings) as gw:
        alice, bob = add_token(gw, "alice", "server:toolbox"), add_token(gw, "bob", "server:toolbox")
        with httpx.Client(timeout=10) as c:
            hops = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            assert [session(c, gw, alice, ip).status_code for ip in hops] == [200, 200, 200, 429]
            assert_429(session(c, gw, alice, "10.0.0.9"), 3)
            assert session(c, gw, bob, "10.0.0.1").status_code == 200
        exceeded = audit_events(tmp_path, "ratelimit.exceeded")
        assert {(e["reason"], e["principal"]) for e in exceeded} == {("per-principal", "alice")}


def test_failed_auth_lockout_until_the_window_ends(tmp_path: Path) -> None:
    """AUTH-07: AUTH_FAILURE_LIMIT=3 failed authentications lock the address out (even with a valid token) with 429
    + Retry-After; another address is not locked out."""
    admin = admin_token()
    settings = {
        "auth_failure_limit": 3,
        "rate_limit_window_ms": WINDOW_MS,
        "trusted_proxies": "127.0.0.1",
        "allowed_ips": "10.0.0.0/8",
    }
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw, httpx.Client(timeout=10) as c:
        assert [session(c, gw, "wrong" + str(i), "10.0.0.1").status_code for i in range(3)] == [401] * 3
        locked = session(c, gw, admin, "10.0.0.1")
        body = assert_rejection(locked, 429, "Too many requests")
        assert "failed" in body["message"]
        assert 1 <= int(locked.headers["retry-after"]) <= WINDOW_MS // 1000
        assert locked.headers["ratelimit-limit"] == "3"
        login = c.post(f"{gw.url}/auth/login", json={"token": admin}, headers={"X-Forwarded-For": "10.0.0.1"})
        assert_rejection(login, 429, "Too many requests")
        assert session(c, gw, admin, "10.0.0.2").status_code == 200
        exceeded = audit_events(tmp_path, "ratelimit.exceeded")
        assert [e["ip"] for e in exceeded] == ["10.0.0.1", "10.0.0.1"]


def test_failed_logins_count_toward_the_lockout(tmp_path: Path) -> None:
    """AUTH-14: wrong tokens posted to /auth/login use the same failed-authentication allowance."""
    admin = admin_token()
    settings = {"auth_failure_limit": 2, "rate_limit_window_ms": WINDOW_MS}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw, httpx.Client(timeout=10) as c:
        for _ in range(2):
            assert_rejection(c.post(f"{gw.url}/auth/login", json={"token": "guess"}), 401, "Unauthorized")
        assert_rejection(session(c, gw, admin), 429, "Too many requests")


def test_an_open_sse_stream_counts_once(tmp_path: Path) -> None:
    """RL-06: an SSE stream is one request however many events (keep-alives, messages) it carries."""
    admin = admin_token()
    settings = {"rate_limit_max_requests": 3, "rate_limit_window_ms": WINDOW_MS, "sse_keepalive_s": 0.02}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw, httpx.Client(timeout=10) as c:
        headers = {"Accept": "text/event-stream", **bearer(admin)}
        with c.stream("GET", gw.mcp("toolbox") + "/sse", headers=headers) as stream:
            assert stream.status_code == 200
            keepalives = 0
            for line in stream.iter_lines():
                keepalives += line.startswith(":")
                if keepalives == 10:
                    break
        assert [session(c, gw, admin).status_code for _ in range(3)] == [200, 200, 429]
