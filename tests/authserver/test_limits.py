"""Registration is bounded (Issue 14): per-address rate limit from the route table's class, and registrations
that no consent uses expire (an approved one lives as long as its grant can)."""

import time
from pathlib import Path

import httpx

from mcp_bastion.authserver.records import CLIENT
from mcp_bastion.store.memory import MemoryStore
from tests.authserver.support import Browser, Builtin, builtin_gateway, issue_tokens, register
from tests.security.support import audit_events

UNUSED_S = 600.0
GRANT_S = 7200.0


def test_registration_is_rate_limited_per_address(tmp_path: Path) -> None:
    """Issue 14 item 2: registration is rate limited per address."""
    with builtin_gateway(tmp_path, rate_limit_max_requests=3) as env:
        answers = [
            httpx.post(f"{env.url}/oauth/register", json={"redirect_uris": ["https://a.test/cb"]}, timeout=10)
            for _ in range(4)
        ]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert "retry-after" in answers[-1].headers


def test_an_unused_registration_expires_and_an_approved_one_lives_with_its_grant(tmp_path: Path) -> None:
    """Issue 14 item 2: an unused registration expires and an approved one lives with its grant."""
    settings = {"oauth_client_unused_ttl_s": UNUSED_S, "oauth_grant_ttl_s": GRANT_S}
    with builtin_gateway(tmp_path, **settings) as env:
        store = env.gw.app.store
        assert isinstance(store, MemoryStore)
        idle = register(env)
        _, expires = store.records[(CLIENT, idle)]
        assert expires is not None
        assert abs(expires - (time.time() + UNUSED_S)) < 30
        browser = Browser(env)
        try:
            used, _ = issue_tokens(env, browser)
        finally:
            browser.close()
        _, expires = store.records[(CLIENT, used)]
        assert expires is not None
        assert abs(expires - (time.time() + UNUSED_S + GRANT_S)) < 30


BEHIND_A_PROXY = {"trusted_proxies": "127.0.0.1", "allowed_ips": "127.0.0.1,198.51.100.0/24,2001:db8::/32"}


def register_from(env: Builtin, address: str) -> httpx.Response:
    body = {"redirect_uris": ["https://a.test/cb"]}
    return httpx.post(f"{env.url}/oauth/register", json=body, headers={"X-Forwarded-For": address}, timeout=10)


def test_registration_counts_an_ipv6_client_by_its_64(tmp_path: Path) -> None:
    """One host has a whole /64: counted per address, it could register without bound (review 9)."""
    with builtin_gateway(tmp_path, rate_limit_max_requests=3, **BEHIND_A_PROXY) as env:
        same = [register_from(env, f"2001:db8:1:2::{n}") for n in range(1, 5)]
        other = register_from(env, "2001:db8:1:3::1")
    assert [a.status_code for a in same] == [201, 201, 201, 429]
    assert same[-1].json()["error"] == "too_many_registrations"
    assert other.status_code == 201


def test_unapproved_registrations_have_a_global_cap(tmp_path: Path) -> None:
    """Registrations from many addresses are bounded too (review 9); a metadata-document client needs none."""
    with builtin_gateway(tmp_path, oauth_unapproved_clients_max=3, **BEHIND_A_PROXY) as env:
        answers = [register_from(env, f"198.51.100.{n}") for n in range(1, 5)]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        assert "retry-after" in answers[-1].headers
        assert answers[-1].json()["error"] == "too_many_registrations"
        refused = [
            e for e in audit_events(env.logs, "oauth.client.refused") if e.get("error") == "too_many_registrations"
        ]
        assert len(refused) == 1
