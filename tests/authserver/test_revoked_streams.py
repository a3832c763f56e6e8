"""Every way a grant ends (RFC 7009 revocation of its refresh or access token, a replayed refresh token, a replayed
code) ends its open streams at once, not at the next periodic sweep (review 3; the sweep is set to an hour here)."""

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.authserver.support import Browser, Builtin, builtin_gateway, issue_tokens, pkce, redeem, register
from tests.authserver.support import authorize_params as params_for
from tests.security.support import OpenStream, audit_events, bearer, open_legacy_session

END_BOUND_S = 1.0  # a revoked grant's streams end within this


@pytest.fixture(scope="module")
def slow_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builtin]:
    with builtin_gateway(tmp_path_factory.mktemp("revoked"), revocation_check_s=3600) as running:
        yield running


def streams_of(env: Builtin, token: str) -> list[OpenStream]:
    """A Streamable GET stream (with its session) and an HTTP+SSE stream opened with `token`."""
    with httpx.Client(timeout=10) as client:
        session = open_legacy_session(client, env.gw.mcp("toolbox"), token)
    sse = {"Accept": "text/event-stream", **bearer(token)}
    get = {**sse, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    streams = [OpenStream("GET", env.gw.mcp("toolbox"), get), OpenStream("GET", f"{env.gw.mcp('toolbox')}/sse", sse)]
    assert [s.status for s in streams] == [200, 200]
    return streams


def assert_ended(env: Builtin, streams: list[OpenStream], revoke: Callable[[], None]) -> None:
    before = len(audit_events(env.logs, "session.revoked"))
    started = time.monotonic()
    revoke()
    for stream in streams:
        assert stream.ended.wait(END_BOUND_S * 3), "a stream of the revoked grant stayed open"
    assert time.monotonic() - started < END_BOUND_S
    assert len(audit_events(env.logs, "session.revoked")) >= before + 2


def token_post(env: Builtin, path: str, **form: str) -> httpx.Response:
    return httpx.post(f"{env.url}{path}", data=form, timeout=10)


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
def test_rfc7009_revocation_ends_the_grants_streams_at_once(slow_sweep: Builtin, which: str) -> None:
    browser = Browser(slow_sweep)
    try:
        _, tokens = issue_tokens(slow_sweep, browser)
    finally:
        browser.close()
    streams = streams_of(slow_sweep, tokens["access_token"])
    assert_ended(
        slow_sweep, streams, lambda: token_post(slow_sweep, "/oauth/revoke", token=tokens[which]).raise_for_status()
    )


def test_a_replayed_refresh_token_ends_the_grants_streams_at_once(slow_sweep: Builtin) -> None:
    browser = Browser(slow_sweep)
    try:
        client_id, tokens = issue_tokens(slow_sweep, browser)
    finally:
        browser.close()
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
    fresh = token_post(slow_sweep, "/oauth/token", **form)
    assert fresh.status_code == 200, fresh.text
    streams = streams_of(slow_sweep, fresh.json()["access_token"])

    def replay() -> None:
        assert token_post(slow_sweep, "/oauth/token", **form).json()["error"] == "invalid_grant"

    assert_ended(slow_sweep, streams, replay)


def test_a_replayed_code_ends_the_grants_streams_at_once(slow_sweep: Builtin) -> None:
    client_id = register(slow_sweep)
    verifier, challenge = pkce()
    browser = Browser(slow_sweep)
    try:
        code = browser.code_for(params_for(client_id, challenge, resource=slow_sweep.resource()))["code"]
    finally:
        browser.close()
    first = redeem(slow_sweep, client_id, code, verifier)
    assert first.status_code == 200, first.text
    streams = streams_of(slow_sweep, first.json()["access_token"])

    def replay() -> None:
        again = redeem(slow_sweep, client_id, code, verifier)
        assert again.json()["error"] == "invalid_grant"

    assert_ended(slow_sweep, streams, replay)
