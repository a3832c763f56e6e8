"""FORWARDED_HEADER: exactly one forwarded header is believed, only from TRUSTED_PROXIES, its lines combined.

The peer is always 127.0.0.1 (loopback bind), so a trusted 127.0.0.1 stands in for nginx; the headers a test sends
are what nginx would pass on (its own X-Forwarded-For plus whatever the client sent).
"""

from pathlib import Path

import httpx
import pytest

from mcp_bastion.app import create_app
from mcp_bastion.config import Settings
from mcp_bastion.errors import ConfigError
from mcp_bastion.middleware.ip_allowlist import forwarded_chain
from tests.harness import spec
from tests.security.support import admin_token, assert_rejection, audit_events, bearer, secure_gateway

PROXY = {"trusted_proxies": "127.0.0.1, 192.168.0.0/16", "allowed_ips": "198.51.100.0/24"}
Headers = list[tuple[str, str]]


def session(gw, token: str, headers: Headers) -> httpx.Response:  # type: ignore[no-untyped-def]
    """GET /auth/session with the given header lines (a list, so a name may repeat)."""
    return httpx.get(f"{gw.url}/auth/session", headers=[*bearer(token).items(), *headers], timeout=10)


def test_a_client_forwarded_header_is_ignored_by_default_behind_a_trusted_proxy(tmp_path: Path) -> None:
    """Issue 8 item 3: behind the documented nginx (X-Forwarded-For set, Forwarded passed through), a client's
    `Forwarded: for=` neither passes the allowlist, nor forges the audit IP, nor escapes the per-IP rate limit or
    the auth-failure lockout: all of them use the X-Forwarded-For client."""
    admin = admin_token()
    limits = {"rate_limit_max_requests": 4, "auth_failure_limit": 3}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **PROXY, **limits) as gw:
        outsider = [("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=198.51.100.5")]
        assert_rejection(session(gw, admin, outsider), 403, "Access denied")
        assert [d["ip"] for d in audit_events(tmp_path, "ip.denied")] == ["203.0.113.9"]

        guesser = [
            session(gw, "wrong", [("X-Forwarded-For", "198.51.100.7"), ("Forwarded", f"for=198.51.100.{10 + i}")])
            for i in range(3)
        ]
        assert [r.status_code for r in guesser] == [401, 401, 401]
        locked = session(gw, admin, [("X-Forwarded-For", "198.51.100.7"), ("Forwarded", "for=198.51.100.99")])
        body = assert_rejection(locked, 429, "Too many requests")
        assert "failed authentication" in body["message"]
        assert {d["ip"] for d in audit_events(tmp_path, "auth.failure")} == {"198.51.100.7"}

        rotating = [  # without a credential: what the per-IP limit counts (Issue 10 item 1)
            httpx.get(
                f"{gw.url}/auth/session",
                headers=[("X-Forwarded-For", "198.51.100.8"), ("Forwarded", f"for=198.51.100.{50 + i}")],
                timeout=10,
            )
            for i in range(5)
        ]
        assert [r.status_code for r in rotating] == [401, 401, 401, 401, 429]
        limited = audit_events(tmp_path, "ratelimit.exceeded")
        assert [(d["ip"], d["reason"]) for d in limited if d["reason"] == "per-ip"] == [("198.51.100.8", "per-ip")]


def test_forwarded_is_used_when_chosen_and_x_forwarded_for_is_then_ignored(tmp_path: Path) -> None:
    """Issue 8 item 3: FORWARDED_HEADER=Forwarded believes `Forwarded` (its for= hops) and ignores a client's
    X-Forwarded-For entirely; an element without for= is a garbled chain and fails closed."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, forwarded_header="Forwarded", **PROXY) as gw:
        allowed = [("Forwarded", "for=198.51.100.5;proto=https"), ("X-Forwarded-For", "203.0.113.9")]
        assert session(gw, admin, allowed).status_code == 200
        forged = [("Forwarded", 'for="203.0.113.9:4711"'), ("X-Forwarded-For", "198.51.100.5")]
        assert_rejection(session(gw, admin, forged), 403, "Access denied")
        undisclosed = [("Forwarded", "for=198.51.100.5, proto=https")]  # the nearest hop names no client
        assert_rejection(session(gw, admin, undisclosed), 403, "Access denied")
        assert [d["ip"] for d in audit_events(tmp_path, "ip.denied")] == ["203.0.113.9", "unknown"]


def test_two_x_forwarded_for_lines_are_combined_in_order(tmp_path: Path) -> None:
    """Issue 8 item 3: two X-Forwarded-For lines are one chain, first line first, so the right-most untrusted hop
    across both lines is the client (reading only the last line would name the trusted inner proxy)."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **PROXY) as gw:
        inside = [("X-Forwarded-For", "198.51.100.5"), ("X-Forwarded-For", "192.168.1.5")]
        assert session(gw, admin, inside).status_code == 200
        outside = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "192.168.1.5")]
        assert_rejection(session(gw, admin, outside), 403, "Access denied")
        spoofed = [("X-Forwarded-For", "198.51.100.5"), ("X-Forwarded-For", "203.0.113.9, 192.168.1.5")]
        assert_rejection(session(gw, admin, spoofed), 403, "Access denied")
        assert [d["ip"] for d in audit_events(tmp_path, "ip.denied")] == ["203.0.113.9", "203.0.113.9"]


def test_two_forwarded_lines_are_combined_in_order_when_forwarded_is_chosen(tmp_path: Path) -> None:
    """Issue 8 item 3: the same for the Forwarded header's lines."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, forwarded_header="forwarded", **PROXY) as gw:
        inside = [("Forwarded", "for=198.51.100.5"), ("Forwarded", "for=192.168.1.5;proto=https")]
        assert session(gw, admin, inside).status_code == 200
        outside = [("Forwarded", "for=203.0.113.9"), ("Forwarded", "for=192.168.1.5")]
        assert_rejection(session(gw, admin, outside), 403, "Access denied")
        assert [d["ip"] for d in audit_events(tmp_path, "ip.denied")] == ["203.0.113.9"]


@pytest.mark.parametrize("chosen", ["X-Forwarded-For", "Forwarded"])
def test_an_untrusted_peers_forwarded_headers_are_ignored(tmp_path: Path, chosen: str) -> None:
    """Issue 8 item 3: with TRUSTED_PROXIES set but the peer not in it, neither header changes the client: the
    allowlist, the audit IP and the limits see the socket peer."""
    admin = admin_token()
    settings = {"trusted_proxies": "192.168.0.0/16", "allowed_ips": "198.51.100.0/24", "forwarded_header": chosen}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        for headers in (
            [("X-Forwarded-For", "198.51.100.5")],
            [("Forwarded", "for=198.51.100.5")],
            [("X-Forwarded-For", "198.51.100.5"), ("Forwarded", "for=198.51.100.5")],
        ):
            assert_rejection(session(gw, admin, headers), 403, "Access denied")
        assert {d["ip"] for d in audit_events(tmp_path, "ip.denied")} == {"127.0.0.1"}


@pytest.mark.parametrize("value", ["X-Real-IP", "X-Forwarded-For, Forwarded", "", "True-Client-IP"])
def test_any_other_forwarded_header_setting_is_refused_at_start_up(tmp_path: Path, value: str) -> None:
    """Issue 8 item 3: FORWARDED_HEADER is X-Forwarded-For or Forwarded (any case); anything else is a ConfigError
    naming the setting, before the gateway serves a request."""
    settings = Settings(store_url="memory://", audit_log=tmp_path / "audit.jsonl", forwarded_header=value)
    with pytest.raises(ConfigError, match="FORWARDED_HEADER"):
        create_app(settings, {})
    for accepted in ("x-forwarded-for", "FORWARDED", " X-Forwarded-For "):
        create_app(settings.model_copy(update={"forwarded_header": accepted}), {})


def test_forwarded_chain_reads_only_the_chosen_header_and_respects_quoted_strings() -> None:
    """Issue 8 item 3: the pure parser: lines in order, quoted commas and semicolons kept, other headers ignored,
    a hop without an address kept as "" (the caller fails closed on it)."""
    headers = [
        (b"forwarded", b'for="[2001:db8::1]:80";by="a,b", for=198.51.100.5'),
        (b"x-forwarded-for", b"203.0.113.9"),
        (b"forwarded", b"proto=https"),
        (b"forwarded", b""),
    ]
    assert forwarded_chain(headers, b"forwarded") == ['"[2001:db8::1]:80"', "198.51.100.5", ""]
    assert forwarded_chain(headers, b"x-forwarded-for") == ["203.0.113.9"]
    assert forwarded_chain([(b"x-forwarded-for", b"a, b"), (b"x-forwarded-for", b"c")], b"x-forwarded-for") == [
        "a",
        "b",
        "c",
    ]
    assert forwarded_chain([], b"x-forwarded-for") == []
