"""The pure parts of `mcp-bastion connect` (Issue 11 item 8): no sockets."""

import itertools
from pathlib import Path

import pytest

from mcp_bastion.cli.connect_wire import (
    BACKOFF_MAX_S,
    SseParser,
    backoff_delays,
    check_url,
    modern_version,
    routing_headers,
    status_error,
    token_from_env,
    token_from_file,
)
from mcp_bastion.errors import ConfigError
from mcp_bastion.protocol import PROTOCOL_VERSION_META


def test_sse_lines_become_events_with_multiline_data_ids_and_comments_skipped() -> None:
    """Issue 11 item 8: keepalive comments yield nothing; a blank line completes an event; the last id is kept."""
    parser = SseParser()
    lines = [": keepalive", "", "id: 7", "event: message", 'data: {"a":', "data: 1}", "", 'data: {"b":2}', ""]
    events = [event for line in lines if (event := parser.feed(line)) is not None]
    assert [(e.data, e.event_id) for e in events] == [('{"a":\n1}', "7"), ('{"b":2}', None)]
    assert parser.last_event_id == "7"


def test_only_https_or_loopback_http_may_carry_a_token() -> None:
    """Issue 11 item 8: the same rule as doctor --live."""
    assert check_url("https://gw.example/mcp/x") == "https://gw.example/mcp/x"
    assert check_url("http://127.0.0.1:3001/mcp/x") == "http://127.0.0.1:3001/mcp/x"
    assert check_url("http://localhost/mcp/x") == "http://localhost/mcp/x"
    for bad in ("http://gw.example/mcp/x", "ftp://127.0.0.1/x", "http://127.0.0.1:99999/x", "not a url"):
        with pytest.raises(ConfigError):
            check_url(bad)


def test_a_token_file_must_be_private_regular_and_non_empty(tmp_path: Path) -> None:
    """Issue 11 item 8: mode 0600 and a token inside; the refusal names the chmod fix."""
    path = tmp_path / "t"
    path.write_text("  secret-value\n", encoding="utf-8")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=f"chmod 600 {path}"):
        token_from_file(path)
    path.chmod(0o600)
    assert token_from_file(path) == "secret-value"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        token_from_file(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        token_from_file(tmp_path)
    with pytest.raises(ConfigError):
        token_from_file(tmp_path / "missing")
    assert token_from_env({"T": " v "}, "T") == "v"
    assert token_from_env({"T": " "}, "T") is None


def test_a_2026_request_gets_routing_headers_mirrored_from_its_body() -> None:
    """Issue 11 item 8: Mcp-Method, Mcp-Name (base64-wrapped when not plain ASCII) and the version from _meta."""
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "héllo", "_meta": {PROTOCOL_VERSION_META: "2026-07-28"}},
    }
    version = modern_version(message)
    assert version == "2026-07-28"
    headers = routing_headers(message, version, {"Mcp-Param-Region": "eu"})
    assert headers["mcp-protocol-version"] == "2026-07-28"
    assert headers["mcp-method"] == "tools/call"
    assert headers["mcp-name"].startswith("=?base64?")
    assert headers["Mcp-Param-Region"] == "eu"
    handshake = {"id": 1, "method": "tools/list", "params": {"_meta": {PROTOCOL_VERSION_META: "2025-11-25"}}}
    assert modern_version(handshake) is None
    assert modern_version({"id": 1, "method": "tools/list"}) is None


def test_a_refusal_keeps_the_gateways_own_error_under_the_clients_id() -> None:
    """Issue 11 item 8: a JSON-RPC error body is passed on (id null becomes the request's); else the status speaks."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "Session not found"}}
    assert status_error(5, 404, body) == {"jsonrpc": "2.0", "id": 5, "error": body["error"]}
    assert "refused the token" in status_error(5, 401, None)["error"]["message"]
    assert "HTTP 502" in status_error(5, 502, b"<html>")["error"]["message"]


def test_backoff_doubles_up_to_its_cap() -> None:
    """Issue 11 item 8: bounded waits between tries."""
    delays = list(itertools.islice(backoff_delays(), 8))
    assert delays[:3] == [0.25, 0.5, 1.0]
    assert max(delays) == BACKOFF_MAX_S
