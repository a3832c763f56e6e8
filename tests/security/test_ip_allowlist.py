"""ALLOWED_IPS and TRUSTED_PROXIES. The peer is always 127.0.0.1 (loopback bind), so forwarded chains from a
trusted 127.0.0.1 stand in for other client addresses."""

from pathlib import Path

import httpx

from tests.harness import spec
from tests.security.support import admin_token, assert_rejection, audit_events, bearer, secure_gateway


def check(gw, token: str, headers: dict[str, str] | None = None) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(f"{gw.url}/auth/session", headers={**bearer(token), **(headers or {})}, timeout=10)


def test_peer_outside_the_allowlist_is_denied_before_authentication(tmp_path: Path) -> None:
    """IP-01, IP-08: with ALLOWED_IPS=10.0.0.0/8 the 127.0.0.1 peer gets 403 {"error":"Access denied"} on every
    route (valid token or none, /livez, /auth/login included) and an ip.denied line; no auth line is written."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, allowed_ips="10.0.0.0/8") as gw:
        with httpx.Client(timeout=10) as client:
            for method, path, headers in [
                ("GET", "/auth/session", bearer(admin)),
                ("GET", "/auth/session", {}),
                ("POST", "/mcp/toolbox", bearer(admin)),
                ("GET", "/mcp/toolbox/sse", bearer(admin)),
                ("GET", "/livez", {}),
                ("GET", "/health", bearer(admin)),
                ("POST", "/auth/login", {}),
            ]:
                answer = client.request(method, gw.url + path, headers=headers, json={"token": admin})
                body = assert_rejection(answer, 403, "Access denied")
                assert body["message"] == "Your IP address is not allowed"
        denied = audit_events(tmp_path, "ip.denied")
        assert len(denied) == 7
        assert {d["ip"] for d in denied} == {"127.0.0.1"}
        assert all(d["request_id"] for d in denied)
        assert audit_events(tmp_path, "auth.failure") == []
        assert audit_events(tmp_path, "auth.success") == []


def test_allowlist_addresses_and_cidr_include_the_peer(tmp_path: Path) -> None:
    """IP-01: an exact address, a CIDR range and a mixed list that cover 127.0.0.1 let it in."""
    admin = admin_token()
    for allowed in ["127.0.0.1", "127.0.0.0/8", "192.0.2.1, 127.0.0.1/32, 2001:db8::/32"]:
        with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, allowed_ips=allowed) as gw:
            assert check(gw, admin).status_code == 200, allowed


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(tmp_path: Path) -> None:
    """IP-02: without TRUSTED_PROXIES, X-Forwarded-For / Forwarded / X-Real-IP naming an allowed address change
    nothing: still 403 and the audit names the real peer."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, allowed_ips="10.0.0.0/8") as gw:
        for header in [
            {"X-Forwarded-For": "10.0.0.1"},
            {"Forwarded": "for=10.0.0.1"},
            {"X-Real-IP": "10.0.0.1"},
            {"True-Client-IP": "10.0.0.1"},
        ]:
            assert_rejection(check(gw, admin, header), 403, "Access denied")
        assert {d["ip"] for d in audit_events(tmp_path, "ip.denied")} == {"127.0.0.1"}


def test_trusted_proxy_chain_right_most_untrusted_hop_is_the_client(tmp_path: Path) -> None:
    """IP-03: from a trusted proxy the client is the right-most hop that is not itself a trusted proxy."""
    admin = admin_token()
    settings = {"allowed_ips": "10.0.0.0/8", "trusted_proxies": "127.0.0.1, 192.168.0.0/16"}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        cases = [
            ("10.0.0.1", 200),
            ("203.0.113.7, 10.0.0.1", 200),  # a spoofed left-most hop cannot help or hurt
            ("10.0.0.1, 203.0.113.7", 403),  # the right-most untrusted hop is the client
            ("10.0.0.1, 192.168.1.5", 200),  # a trusted hop is skipped
            ("203.0.113.7, 192.168.1.5, 192.168.9.9", 403),
        ]
        for chain, status in cases:
            assert check(gw, admin, {"X-Forwarded-For": chain}).status_code == status, chain
        assert [d["ip"] for d in audit_events(tmp_path, "ip.denied")] == ["203.0.113.7", "203.0.113.7"]


def test_forwarded_header_rfc7239(tmp_path: Path) -> None:
    """IP-03: the RFC 7239 Forwarded header from a trusted proxy (FORWARDED_HEADER=Forwarded), quoted IPv6 with
    port included."""
    admin = admin_token()
    settings = {
        "allowed_ips": "10.0.0.0/8, 2001:db8::/32",
        "trusted_proxies": "127.0.0.1",
        "forwarded_header": "Forwarded",
    }
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        assert check(gw, admin, {"Forwarded": "for=10.1.2.3;proto=https"}).status_code == 200
        assert check(gw, admin, {"Forwarded": 'for="[2001:db8::5]:4711"'}).status_code == 200
        assert check(gw, admin, {"Forwarded": "for=10.1.2.3, for=198.51.100.4"}).status_code == 403
        assert check(gw, admin, {"Forwarded": 'for="[2001:db9::1]"'}).status_code == 403
        assert [d["ip"] for d in audit_events(tmp_path, "ip.denied")] == ["198.51.100.4", "2001:db9::1"]


def test_ipv6_cidr_and_ipv4_mapped_addresses(tmp_path: Path) -> None:
    """IP-05: IPv6 CIDR entries match; an IPv4-mapped IPv6 client (::ffff:10.1.2.3) is treated as 10.1.2.3."""
    admin = admin_token()
    settings = {"allowed_ips": "10.0.0.0/8, 2001:db8::/32", "trusted_proxies": "127.0.0.1"}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        assert check(gw, admin, {"X-Forwarded-For": "::ffff:10.1.2.3"}).status_code == 200
        assert check(gw, admin, {"X-Forwarded-For": "2001:db8:1::9"}).status_code == 200
        assert check(gw, admin, {"X-Forwarded-For": "::ffff:192.0.2.1"}).status_code == 403
        assert check(gw, admin, {"X-Forwarded-For": "2001:db9::9"}).status_code == 403
        assert [d["ip"] for d in audit_events(tmp_path, "ip.denied")] == ["192.0.2.1", "2001:db9::9"]


def test_ipv4_mapped_entry_in_the_allowlist_matches_the_ipv4_peer(tmp_path: Path) -> None:
    """IP-05: an allowlist entry written IPv4-mapped (::ffff:127.0.0.1) is treated as IPv4 and admits 127.0.0.1."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, allowed_ips="::ffff:127.0.0.1") as gw:
        answer = check(gw, admin)
        assert answer.status_code == 200, answer.text


def test_malformed_forwarded_values_never_become_an_allowed_address(tmp_path: Path) -> None:
    """IP-04: octal/hex/integer/short forms, garbage and overlong chains from a trusted proxy are never parsed
    leniently into an allowed address and never cause a 500."""
    admin = admin_token()
    settings = {"allowed_ips": "127.0.0.0/8", "trusted_proxies": "127.0.0.1"}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        for value in [
            "unknown",
            "999.1.1.1",
            "0x7f.0.0.1",
            "2130706433",
            "127.1",
            "0177.0.0.1",
            ",".join(["x"] * 2000),
        ]:
            answer = check(gw, admin, {"X-Forwarded-For": value})
            assert_rejection(answer, 403, "Access denied")
        assert {d["ip"] for d in audit_events(tmp_path, "ip.denied")} == {"unknown"}
        # an empty header names no hop: the trusted peer itself is the client
        assert check(gw, admin, {"X-Forwarded-For": ""}).status_code == 200


def test_zero_address_means_everyone(tmp_path: Path) -> None:
    """IP-09: ALLOWED_IPS=0.0.0.0 admits every address (the start-up warning is tested with the CLI)."""
    admin = admin_token()
    settings = {"allowed_ips": "0.0.0.0", "trusted_proxies": "127.0.0.1"}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        for client_ip in ["203.0.113.9", "2001:db8::1", "10.9.9.9"]:
            assert check(gw, admin, {"X-Forwarded-For": client_ip}).status_code == 200
        assert audit_events(tmp_path, "ip.denied") == []
