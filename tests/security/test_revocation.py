"""Issue 8 item 10: revoking a token ends its MCP sessions, its open streams and its login sessions, audited."""

import time
from pathlib import Path
from typing import Any

import httpx

from tests.harness import DEMO, spec, wait_until
from tests.security.support import (
    JSON_ACCEPT,
    OpenStream,
    add_token,
    admin_token,
    audit_events,
    bearer,
    modern_body,
    modern_headers,
    open_legacy_session,
    secure_gateway,
)

END_BOUND_S = 5.0  # a stream must end within this after the revocation is seen


def open_streams(gw: Any, token: str) -> list[OpenStream]:
    """A Streamable GET stream (with its session), an HTTP+SSE stream and a 2026-07-28 listen stream."""
    with httpx.Client(timeout=10) as client:
        session = open_legacy_session(client, gw.mcp("echo"), token)
    get = OpenStream(
        "GET",
        gw.mcp("echo"),
        {
            "Accept": "text/event-stream",
            "Mcp-Session-Id": session,
            "MCP-Protocol-Version": "2025-11-25",
            **bearer(token),
        },
    )
    sse = OpenStream("GET", f"{gw.mcp('echo')}/sse", {"Accept": "text/event-stream", **bearer(token)})
    listen = OpenStream(
        "POST",
        gw.mcp("echo"),
        {**modern_headers(token, "subscriptions/listen"), "Accept": "application/json, text/event-stream"},
        modern_body(1, "subscriptions/listen", {"notifications": {"toolsListChanged": True}}),
    )
    streams = [get, sse, listen]
    assert [s.status for s in streams] == [200, 200, 200]
    wait_until(lambda: len(gw.app.gateway.sessions) == 2, 5)  # the Streamable and the HTTP+SSE sessions
    return streams


def test_item_10_revoking_through_the_dashboard_ends_sessions_and_streams_at_once(tmp_path: Path) -> None:
    """Issue 8 item 10: DELETE /api/tokens/NAME ends that token's MCP sessions and every open stream (Streamable
    GET, HTTP+SSE, 2026-07-28 listen) at once, not at the next periodic check, and audits each; another token's
    session stays."""
    admin = admin_token()
    servers = [spec("echo", DEMO)]
    with secure_gateway(servers, tmp_path, auth_token=admin, revocation_check_s=3600) as gw:
        doomed = add_token(gw, "doomed", "server:echo")
        streams = open_streams(gw, doomed)
        with httpx.Client(timeout=10) as client:
            keeper = open_legacy_session(client, gw.mcp("echo"), admin)
            revoked = client.delete(f"{gw.url}/api/tokens/doomed", headers=bearer(admin))
            assert revoked.status_code == 200, revoked.text
        started = time.monotonic()
        for stream in streams:
            assert stream.ended.wait(END_BOUND_S), "a stream of the revoked token stayed open"
        assert time.monotonic() - started < END_BOUND_S
        assert list(gw.app.gateway.sessions) == [keeper]
        kinds = sorted(line["kind"] for line in audit_events(tmp_path, "session.revoked"))
        assert kinds == ["mcp", "mcp", "stream"]


def test_item_10_a_revocation_made_elsewhere_ends_sessions_streams_and_logins_within_the_check_period(
    tmp_path: Path,
) -> None:
    """Issue 8 item 10: a token deleted from the store by another process (the CLI, another instance) is found by
    the periodic check: its sessions, streams and login sessions end within REVOCATION_CHECK_S, audited."""
    admin = admin_token()
    with secure_gateway([spec("echo", DEMO)], tmp_path, auth_token=admin, revocation_check_s=0.2) as gw:
        doomed = add_token(gw, "doomed", "admin")
        with httpx.Client(timeout=10) as client:
            assert client.post(f"{gw.url}/auth/login", json={"token": doomed}).status_code == 200
        assert len(gw.app.store.sessions) == 1  # type: ignore[attr-defined]
        streams = open_streams(gw, doomed)
        record = next(t for t in gw.app.store.tokens.values() if t.name == "doomed")  # type: ignore[attr-defined]
        gw.app.store.tokens.pop(record.token_hash)  # type: ignore[attr-defined]  # as `token revoke` does
        for stream in streams:
            assert stream.ended.wait(END_BOUND_S)
        wait_until(lambda: gw.app.store.sessions == {}, END_BOUND_S)  # type: ignore[attr-defined]
        assert gw.app.gateway.sessions == {}
        kinds = sorted(line["kind"] for line in audit_events(tmp_path, "session.revoked"))
        assert kinds == ["login", "mcp", "mcp", "stream"]


def test_item_10_a_valid_token_keeps_its_sessions_across_checks(tmp_path: Path) -> None:
    """Issue 8 item 10 (the other side): the periodic check ends nothing while the token is valid."""
    admin = admin_token()
    with secure_gateway([spec("echo", DEMO)], tmp_path, auth_token=admin, revocation_check_s=0.05) as gw:
        kept = add_token(gw, "kept", "server:echo")
        with httpx.Client(timeout=10) as client:
            session = open_legacy_session(client, gw.mcp("echo"), kept)
            watcher = gw.app.revocation
            seen = watcher.sweeps
            wait_until(lambda: watcher.sweeps >= seen + 5, 5)  # five checks ran while the session was open
            ping = client.post(
                gw.mcp("echo"),
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={
                    **JSON_ACCEPT,
                    **bearer(kept),
                    "Mcp-Session-Id": session,
                    "MCP-Protocol-Version": "2025-11-25",
                },
            )
        assert ping.status_code == 200
        assert audit_events(tmp_path, "session.revoked") == []
