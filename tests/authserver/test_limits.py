"""Registration is bounded (Issue 14): per-address rate limit from the route table's class, and registrations
that no consent uses expire (an approved one lives as long as its grant can)."""

import time
from pathlib import Path

import httpx

from mcp_bastion.authserver.records import CLIENT
from mcp_bastion.store.memory import MemoryStore
from tests.authserver.support import Browser, builtin_gateway, issue_tokens, register

UNUSED_S = 600.0
GRANT_S = 7200.0


def test_registration_is_rate_limited_per_address(tmp_path: Path) -> None:
    with builtin_gateway(tmp_path, rate_limit_max_requests=3) as env:
        answers = [
            httpx.post(f"{env.url}/oauth/register", json={"redirect_uris": ["https://a.test/cb"]}, timeout=10)
            for _ in range(4)
        ]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert "retry-after" in answers[-1].headers


def test_an_unused_registration_expires_and_an_approved_one_lives_with_its_grant(tmp_path: Path) -> None:
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
