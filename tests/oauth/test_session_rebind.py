"""A legacy session follows its principal's refreshed token (review item 10, Issue 13 follow-up): a client that
refreshes its OAuth access token (a new token, the same principal) and goes on in its session keeps it past the
first token's expiry; a session whose client never presents a newer token still ends with its token."""

import time
from pathlib import Path

import httpx

from tests.harness import wait_until
from tests.oauth.support import claims_for, loopback_issuer, new_key, sign
from tests.oauth.test_lifecycle import _gateway
from tests.oauth.test_resource_server import FILES, Monotonic
from tests.security.support import OpenStream, audit_events, legacy_headers, open_legacy_session, rpc

FIRST_LIFE_S = 2  # the first token's life: short, so the test waits little for it to expire
SWEEP_S = 0.2  # the gateway's revocation check period here
SWEEPS_PAST_EXPIRY = 3  # sweeps that must have run after the first token expired


def test_a_session_adopts_a_newer_token_of_the_same_principal_and_outlives_the_first(tmp_path: Path) -> None:
    with (
        loopback_issuer(new_key()) as issuer,
        _gateway(issuer, tmp_path, Monotonic(), oauth_leeway_s=0, revocation_check_s=SWEEP_S) as gw,
    ):
        expires = int(time.time()) + FIRST_LIFE_S
        first = sign(claims_for(issuer.url, FILES, "mcp:server:files", exp=expires, sub="alice"), issuer.keys[0])
        later = int(time.time()) + 300
        refreshed = sign(claims_for(issuer.url, FILES, "mcp:server:files", exp=later, sub="alice"), issuer.keys[0])
        with httpx.Client(timeout=10) as client:
            session = open_legacy_session(client, gw.mcp("files"), first)
            lone = open_legacy_session(client, gw.mcp("files"), first)  # never sees the refreshed token
            stream = OpenStream(
                "GET", gw.mcp("files"), {**legacy_headers(first, session), "Accept": "text/event-stream"}
            )
            assert stream.status == 200
            answer = client.post(gw.mcp("files"), json=rpc(2, "tools/list"), headers=legacy_headers(refreshed, session))
            assert answer.status_code == 200, answer.text
            swept = gw.app.revocation.sweeps
            wait_until(lambda: time.time() > expires + 1 and gw.app.revocation.sweeps > swept + SWEEPS_PAST_EXPIRY, 10)
            assert list(gw.app.gateway.sessions) == [session]
            gone = client.post(gw.mcp("files"), json=rpc(5, "tools/list"), headers=legacy_headers(refreshed, lone))
            assert gone.status_code == 404  # `lone` ended with the first token
            assert not stream.ended.is_set()
            again = client.post(gw.mcp("files"), json=rpc(3, "tools/list"), headers=legacy_headers(refreshed, session))
            assert again.status_code == 200, again.text
            stale = client.post(gw.mcp("files"), json=rpc(4, "tools/list"), headers=legacy_headers(first, session))
            assert stale.status_code == 401
            closed = client.delete(gw.mcp("files"), headers=legacy_headers(refreshed, session))
            assert closed.status_code == 200, closed.text
            assert stream.ended.wait(5)
        ended = [e for e in audit_events(tmp_path, "session.revoked") if e.get("kind") == "mcp"]
        assert len(ended) == 1  # the lone session, which never saw the refreshed token
