"""What happens around a token: a JWKS that hangs (bounded, fail closed, nobody else waits), the key set's cache
lifetime, sessions that end with their token, opaque tokens introspected, and the settings checked at start."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_bastion.config import Settings, load_settings
from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth import JsonFetcher, ResourceServer, oauth_config
from mcp_bastion.oauth.jwks import JWKS_RETRY_S
from tests.harness import RunningGateway, spec, wait_until
from tests.oauth.support import PUBLIC_URL, Issuer, claims_for, loopback_issuer, new_key, sign
from tests.oauth.test_resource_server import FILES, Monotonic, call, oauth_settings
from tests.security.support import add_token, admin_token, audit_events, legacy_headers, open_legacy_session, rpc
from tests.security.support import secure_gateway as gateway

HANG_TIMEOUT_S = 1.0  # the fetch bound these tests give the gateway (5 s by default)


def _gateway(issuer: Issuer, tmp_path: Path, clock: Monotonic, **extra: Any) -> Any:
    settings = oauth_settings(issuer, **extra)
    config = oauth_config(Settings(**settings))
    assert config is not None
    oauth = ResourceServer(config, fetcher=JsonFetcher(timeout_s=HANG_TIMEOUT_S), monotonic=clock)
    return gateway([spec("files")], tmp_path, auth_token=admin_token(), oauth=oauth, **settings)


@pytest.fixture
def hanging(tmp_path: Path) -> Iterator[tuple[RunningGateway, Issuer, Monotonic]]:
    with loopback_issuer(new_key()) as issuer:
        clock = Monotonic()
        with _gateway(issuer, tmp_path, clock) as gw:
            yield gw, issuer, clock
            issuer.released.set()  # a request still hanging at the issuer ends with the test


def test_a_hanging_jwks_fails_closed_within_its_bound_and_blocks_nobody_else(
    hanging: tuple[RunningGateway, Issuer, Monotonic], tmp_path: Path
) -> None:
    gw, issuer, clock = hanging
    value = sign(claims_for(issuer.url, FILES, "mcp:server:files"), issuer.keys[0])
    named = add_token(gw, "ci", "server:files")
    issuer.hang.set()
    slow: dict[str, Any] = {}

    def oauth_request() -> None:
        started = time.monotonic()
        slow["answer"] = call(gw, value)
        slow["took"] = time.monotonic() - started

    waiting = threading.Thread(target=oauth_request)
    waiting.start()
    wait_until(lambda: issuer.jwks_fetches == 1, 5)
    started = time.monotonic()
    assert call(gw, named).status_code == 200  # the event loop is free while the key set is being fetched
    assert time.monotonic() - started < HANG_TIMEOUT_S
    waiting.join(10)
    answer, took = slow["answer"], slow["took"]
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["data"]["dependencies"] == {"oauth": "down"}
    assert int(answer.headers["retry-after"]) >= 1
    assert HANG_TIMEOUT_S * 0.9 <= took < HANG_TIMEOUT_S + 2
    started = time.monotonic()
    assert call(gw, value).status_code == 503  # right after a failure: refused at once, no second wait
    assert time.monotonic() - started < 0.5
    assert issuer.jwks_fetches == 1
    assert any(e.get("reason") == "oauth unavailable" for e in audit_events(tmp_path, "auth.failure"))
    issuer.hang.clear()
    clock.offset += JWKS_RETRY_S + 1
    assert call(gw, value).status_code == 200  # the IdP is back: recovered without a restart


def test_the_key_set_is_cached_for_its_max_age(hanging: tuple[RunningGateway, Issuer, Monotonic]) -> None:
    gw, issuer, clock = hanging
    issuer.cache_control = "public, max-age=600"
    value = sign(claims_for(issuer.url, FILES, "mcp:server:files"), issuer.keys[0])
    assert call(gw, value).status_code == 200
    assert issuer.jwks_fetches == 1
    clock.offset += 300
    assert call(gw, value).status_code == 200
    assert issuer.jwks_fetches == 1  # within max-age
    clock.offset += 301
    assert call(gw, value).status_code == 200
    assert issuer.jwks_fetches == 2  # past it: fetched again


def test_a_session_opened_with_a_token_ends_when_the_token_expires(tmp_path: Path) -> None:
    with (
        loopback_issuer(new_key()) as issuer,
        _gateway(issuer, tmp_path, Monotonic(), oauth_leeway_s=0, revocation_check_s=0.2) as gw,
    ):
        value = sign(claims_for(issuer.url, FILES, "mcp:server:files", exp=int(time.time()) + 3), issuer.keys[0])
        with httpx.Client(timeout=10) as client:
            session = open_legacy_session(client, gw.mcp("files"), value)
            assert len(gw.app.gateway.sessions) == 1
            wait_until(lambda: not gw.app.gateway.sessions, 10)
            later = client.post(gw.mcp("files"), json=rpc(1, "tools/list"), headers=legacy_headers(value, session))
        assert later.status_code == 401
        ended = audit_events(tmp_path, "session.revoked")
        assert ended
        assert ended[0]["kind"] == "mcp"


def introspecting(issuer: Issuer) -> dict[str, str]:
    """The settings that turn introspection on at the loopback issuer."""
    return {
        "oauth_introspection_url": issuer.url + "/introspect",
        "oauth_client_id": issuer.client[0],
        "oauth_client_secret": issuer.client[1],
    }


def test_opaque_tokens_are_introspected_with_the_gateway_credentials(tmp_path: Path) -> None:
    """Issue 13 item 4: opaque tokens are introspected with the gateway credentials."""
    with loopback_issuer(new_key()) as issuer:
        with _gateway(issuer, tmp_path, Monotonic(), **introspecting(issuer)) as gw:
            now = int(time.time())
            good = {"active": True, "aud": FILES, "scope": "mcp:server:files", "sub": "alice", "exp": now + 300}
            issuer.opaque["opaque-good"] = good
            issuer.opaque["opaque-elsewhere"] = {**good, "aud": PUBLIC_URL + "/mcp/other"}
            issuer.opaque["opaque-expired"] = {**good, "exp": now - 60}
            issuer.opaque["opaque-no-aud"] = {k: v for k, v in good.items() if k != "aud"}
            issuer.opaque["opaque-refresh"] = {**good, "token_type": "refresh_token"}
            assert call(gw, "opaque-good").status_code == 200
            assert call(gw, "opaque-good").status_code == 200
            assert issuer.introspections == 1  # cached
            for refused in ("opaque-elsewhere", "opaque-expired", "opaque-no-aud", "opaque-refresh", "opaque-unknown"):
                assert call(gw, refused).status_code == 401, refused
            assert call(gw, add_token(gw, "ci", "server:files")).status_code == 200  # named tokens never leave
            assert issuer.introspections == 6


def test_the_introspection_endpoint_refusing_the_gateway_fails_closed(tmp_path: Path) -> None:
    with loopback_issuer(new_key()) as issuer:
        extra = {
            "oauth_introspection_url": issuer.url + "/introspect",
            "oauth_client_id": "gateway",
            "oauth_client_secret": "not-the-secret",
        }
        with _gateway(issuer, tmp_path, Monotonic(), **extra) as gw:
            answer = call(gw, "opaque-anything")
            assert answer.status_code == 503
            assert "not-the-secret" not in (tmp_path / "logs" / "audit.jsonl").read_text()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"oauth_issuer": "https://idp.example"}, "setting OAUTH_ISSUER: needs PUBLIC_URL"),
        (
            {"public_url": "https://gw.example", "oauth_issuer": "http://idp.example"},
            "setting OAUTH_ISSUER: 'http://idp.example' must use https:// (plain http only on a loopback address)",
        ),
        ({"public_url": "ftp://gw.example"}, "setting PUBLIC_URL: 'ftp://gw.example' is not an absolute http(s) URL"),
        (
            {"public_url": "https://gw.example/?x=1"},
            "setting PUBLIC_URL: 'https://gw.example/?x=1' may not carry a query, a fragment or credentials",
        ),
        (
            {"public_url": "https://gw.example", "oauth_issuer": "https://idp.example", "oauth_jwks_url": "http://k"},
            "setting OAUTH_JWKS_URL: 'http://k' must use https:// (plain http only on a loopback address)",
        ),
        (
            {
                "public_url": "https://gw.example",
                "oauth_issuer": "https://idp.example",
                "oauth_introspection_url": "https://idp.example/introspect",
            },
            "setting OAUTH_INTROSPECTION_URL: needs OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET",
        ),
        ({"oauth_principal_claim": "a b"}, "setting OAUTH_PRINCIPAL_CLAIM: a claim name is 1-64 characters"),
        ({"oauth_leeway_s": "900"}, "setting OAUTH_LEEWAY_S: Input should be less than or equal to 300"),
    ],
)
def test_oauth_settings_are_checked_at_start_with_one_line_errors(settings: dict[str, str], message: str) -> None:
    """Issue 13 item 1: OAuth settings are checked at start with one line errors."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, **settings)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_loopback_http_is_accepted_and_public_url_loses_its_trailing_slash() -> None:
    settings = load_settings(None, public_url="http://127.0.0.1:3001/", oauth_issuer="http://localhost:9000/realms/x")
    config = oauth_config(settings)
    assert config is not None
    assert config.resource("files") == "http://127.0.0.1:3001/mcp/files"
    assert config.issuer_host == "localhost:9000"
