"""A grant's life after consent: it expires, it is revoked mid-session (its MCP sessions end at once), the client
revokes its own tokens (RFC 7009), and no grant is ever shown with a token (Issue 14)."""

import time

import anyio
import httpx

from mcp_bastion.authserver.records import GRANT
from tests.authserver.support import Browser, Builtin, issue_tokens
from tests.security.support import (
    audit_events,
    bearer,
    legacy_headers,
    modern_call,
    open_legacy_session,
    rpc,
)


def grant_of(env: Builtin, client_id: str) -> dict[str, object]:
    grants = httpx.get(f"{env.url}/api/grants", headers=bearer(env.admin), timeout=10).json()["grants"]
    found = [g for g in grants if g["client_id"] == client_id]
    assert len(found) == 1, grants
    return dict(found[0])


def call_in_session(client: httpx.Client, env: Builtin, token: str, session: str) -> httpx.Response:
    return client.post(env.gw.mcp("toolbox"), json=rpc(2, "tools/list"), headers=legacy_headers(token, session))


def test_a_revoked_grant_ends_its_sessions_and_tokens_at_once(env: Builtin, browser: Browser) -> None:
    """Issue 14 item 5: a revoked grant ends its sessions and tokens at once."""
    client_id, tokens = issue_tokens(env, browser)
    access = tokens["access_token"]
    with httpx.Client(timeout=10) as client:
        session = open_legacy_session(client, env.gw.mcp("toolbox"), access)
        assert call_in_session(client, env, access, session).status_code == 200
        grant = grant_of(env, client_id)
        assert grant["name"] == "oauth:Test Client"
        assert grant["last_used"] is not None
        revoked = httpx.delete(f"{env.url}/api/grants/{grant['id']}", headers=bearer(env.admin), timeout=10)
        assert revoked.status_code == 200, revoked.text
        ended = [e for e in audit_events(env.logs, "session.revoked") if e.get("kind") == "mcp"]
        assert [e["principal"] for e in ended] == [f"grant:{grant['id']}"]
        assert call_in_session(client, env, access, session).status_code == 401
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
    assert httpx.post(f"{env.url}/oauth/token", data=refresh, timeout=10).json()["error"] == "invalid_grant"
    assert [e["grant"] for e in audit_events(env.logs, "oauth.grant.revoked")][-1] == grant["id"]


def test_an_expired_grant_ends_its_tokens_and_refreshes(env: Builtin, browser: Browser) -> None:
    client_id, tokens = issue_tokens(env, browser)
    grant_id = str(grant_of(env, client_id)["id"])
    store = env.gw.app.store

    async def expire() -> None:
        record = await store.get_record(GRANT, grant_id)
        assert record is not None
        record["expires"] = time.time() - 1  # as it will be once OAUTH_GRANT_TTL_S has passed
        await store.put_record(GRANT, grant_id, record, None)

    anyio.run(expire)
    with httpx.Client(timeout=10) as client:
        answer = modern_call(client, env.gw.mcp("toolbox"), tokens["access_token"], "tools/list")
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert "resource_metadata=" in answer.headers["www-authenticate"]
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
    assert httpx.post(f"{env.url}/oauth/token", data=refresh, timeout=10).json()["error"] == "invalid_grant"
    failures = [e["reason"] for e in audit_events(env.logs, "auth.failure")]
    assert "expired grant" in failures


def test_the_client_can_revoke_its_own_grant(env: Builtin, browser: Browser) -> None:
    """Issue 14 item 4: the client can revoke its own grant."""
    _, tokens = issue_tokens(env, browser)
    answer = httpx.post(f"{env.url}/oauth/revoke", data={"token": tokens["refresh_token"]}, timeout=10)
    assert answer.status_code == 200
    with httpx.Client(timeout=10) as client:  # the grant is looked up on every request: refused at once
        after = modern_call(client, env.gw.mcp("toolbox"), tokens["access_token"], "tools/list")
    assert after.status_code == 401
    assert 'error="invalid_token"' in after.headers["www-authenticate"]
    unknown = httpx.post(f"{env.url}/oauth/revoke", data={"token": "not-one-of-ours"}, timeout=10)
    assert unknown.status_code == 200  # RFC 7009 section 2.2: an unknown token is no error


def test_a_foreign_jwt_is_refused_without_a_lookup_elsewhere(env: Builtin) -> None:
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."
    with httpx.Client(timeout=10) as client:
        answer = modern_call(client, env.gw.mcp("toolbox"), forged, "tools/list")
    assert answer.status_code == 401


def test_grants_are_listed_for_admins_only_and_never_with_a_token(env: Builtin, browser: Browser) -> None:
    client_id, tokens = issue_tokens(env, browser)
    listing = httpx.get(f"{env.url}/api/grants", headers=bearer(env.admin), timeout=10)
    assert tokens["access_token"] not in listing.text
    assert tokens["refresh_token"] not in listing.text
    grant = grant_of(env, client_id)
    assert grant["scopes"] == ["server:toolbox"]
    assert grant["resource"] == env.resource()
    assert httpx.get(f"{env.url}/api/grants", timeout=10).status_code == 401
    assert httpx.delete(f"{env.url}/api/grants/nope", headers=bearer(env.admin), timeout=10).status_code == 404
