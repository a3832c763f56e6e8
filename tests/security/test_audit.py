"""The audit log: one JSON line per event with UTC time, request id, client IP and principal; argument shapes,
never values; valid JSON whatever bytes a request carried; size rotation."""

import json
import re
import socket
import stat
from pathlib import Path

import httpx

from tests.harness import spec, wait_until
from tests.security.support import (
    JSON_ACCEPT,
    add_token,
    admin_token,
    audit_events,
    audit_lines,
    bearer,
    legacy_headers,
    modern_call,
    open_legacy_session,
    rpc,
    secure_gateway,
)

UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_each_security_event_is_one_line_with_who_where_when(tmp_path: Path) -> None:
    """LOG-01, LOG-06: a scripted scenario yields auth.success, auth.failure, ip.denied, origin.denied,
    ratelimit.exceeded, session.login, session.logout, session.revoked, mcp.call and admin.server.restart with
    server.stop/start, each line with UTC time, request id (= X-Request-Id), client IP, principal, and no secret."""
    admin = admin_token()
    settings = {
        "rate_limit_token_max_requests": 40,
        "rate_limit_window_ms": 60_000,
        "trusted_proxies": "127.0.0.1",
        "allowed_ips": "127.0.0.0/8",
    }
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw, httpx.Client(timeout=10) as c:
        user = add_token(gw, "user", "server:toolbox")
        ids: dict[str, str] = {}
        ids["auth.success"] = c.get(f"{gw.url}/auth/session", headers=bearer(user)).headers["x-request-id"]
        ids["auth.failure"] = c.get(f"{gw.url}/auth/session", headers=bearer("nope")).headers["x-request-id"]
        r = c.get(f"{gw.url}/auth/session", headers={**bearer(user), "X-Forwarded-For": "198.51.100.7"})
        ids["ip.denied"] = r.headers["x-request-id"]
        r = c.get(f"{gw.url}/auth/session", headers={**bearer(user), "Origin": "https://evil.example"})
        ids["origin.denied"] = r.headers["x-request-id"]
        login = httpx.post(f"{gw.url}/auth/login", json={"token": user})
        ids["session.login"] = login.headers["x-request-id"]
        jar = {"Cookie": f"bastion_session={login.cookies['bastion_session']}"}
        out = c.post(f"{gw.url}/auth/logout", headers={**jar, "X-CSRF-Token": login.json()["csrf_token"]})
        ids["session.logout"] = out.headers["x-request-id"]
        second = httpx.post(f"{gw.url}/auth/login", json={"token": user})
        sessions = c.get(f"{gw.url}/admin/sessions", headers=bearer(admin)).json()["sessions"]
        target = next(s["id"] for s in sessions if s["principal"] == "user")
        ids["session.revoked"] = c.delete(f"{gw.url}/admin/sessions/{target}", headers=bearer(admin)).headers[
            "x-request-id"
        ]
        assert second.status_code == 200
        args = {
            "text": "SECRET-ARG-VALUE",
            "n": 4,
            "f": 1.5,
            "o": {"k": "SECRET-NESTED"},
            "l": [1],
            "b": True,
            "z": None,
        }
        call = modern_call(c, gw.mcp("toolbox"), user, "tools/call", {"name": "echo", "arguments": args})
        assert call.status_code == 200
        ids["mcp.call"] = call.headers["x-request-id"]
        restart = c.post(gw.mcp("toolbox") + "/restart", headers=bearer(admin))
        assert restart.status_code == 200
        ids["admin.server.restart"] = restart.headers["x-request-id"]
        while (r := c.get(f"{gw.url}/auth/session", headers=bearer(user))).status_code != 429:
            pass
        ids["ratelimit.exceeded"] = r.headers["x-request-id"]
        wait_until(lambda: str(gw.app.gateway.handles["toolbox"].state) == "running")
    lines = audit_lines(tmp_path)
    for event, request_id in ids.items():
        matching = [line for line in lines if line["event"] == event and line.get("request_id") == request_id]
        assert len(matching) == 1, (event, [line for line in lines if line["event"] == event])
        line = matching[0]
        assert UTC.match(line["time"]), line
        assert line["ip"] in ("127.0.0.1", "198.51.100.7"), line
        if event not in ("auth.failure", "ip.denied", "origin.denied"):
            assert line["principal"] in ("user", "admin"), line
    by_event = {line["event"]: line for line in lines}
    call_line = next(line for line in lines if line["event"] == "mcp.call" and line["request_id"] == ids["mcp.call"])
    assert call_line["method"] == "tools/call"
    assert call_line["server"] == "toolbox"
    assert call_line["tool"] == "echo"
    assert call_line["outcome"] == "ok"
    assert isinstance(call_line["latency_ms"], (int, float))
    assert call_line["args"] == {
        "text": "string",
        "n": "number",
        "f": "number",
        "o": "object",
        "l": "array",
        "b": "boolean",
        "z": "null",
    }
    assert by_event["ip.denied"]["ip"] == "198.51.100.7"
    assert {"server.stop", "server.start"} <= set(by_event)
    text = (tmp_path / "logs" / "audit.jsonl").read_text()
    for secret in ("SECRET-ARG-VALUE", "SECRET-NESTED", admin, user, second.cookies["bastion_session"]):
        assert secret not in text


def test_server_crash_and_restart_are_audited(tmp_path: Path) -> None:
    """LOG-01, CP-01: a child crash writes server.crash then server.restart and server.start lines."""
    admin = admin_token()
    settings = {"restart_backoff_initial_s": 0.05}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw, httpx.Client(timeout=10) as c:
        answer = modern_call(c, gw.mcp("toolbox"), admin, "tools/call", {"name": "crash", "arguments": {}})
        assert answer.status_code in (200, 502, 503)
        wait_until(lambda: len(audit_events(tmp_path, "server.start")) >= 2)
    events = [line["event"] for line in audit_lines(tmp_path) if line["event"].startswith("server.")]
    assert events[:4] == ["server.start", "server.crash", "server.restart", "server.start"], events
    crash = audit_events(tmp_path, "server.crash")[0]
    assert crash["server"] == "toolbox"
    assert UTC.match(crash["time"])


def raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_hostile_bytes_never_break_a_line(tmp_path: Path) -> None:
    """LOG-02: CRLF, a forged JSON line, ESC sequences, quotes, backslashes, NUL, lone surrogates and invalid UTF-8
    in the path, Origin, token name and tool name: every audit line parses, one line per event, nothing forged."""
    admin = admin_token()
    forged = '\r\n{"event":"auth.success","principal":"admin"}\u001b[31m"\\\u0000'
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        scoped = add_token(gw, "scoped", "tool:toolbox/echo")
        path = "/mcp/%0D%0A%7B%22event%22%3A%22auth.success%22%7D%1B%5B31m%FF%FE%00%5C%22"
        raw(
            gw.url,
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        raw(
            gw.url,
            b'GET /auth/session HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://\xff\xfe"}{\\"event\\":1\x80\r\n'
            b"Authorization: Bearer " + admin.encode() + b"\r\nConnection: close\r\n\r\n",
        )
        session = open_legacy_session(client, gw.mcp("toolbox"), scoped)
        body = json.dumps(rpc(3, "tools/call", {"name": forged, "arguments": {forged: forged}}))
        answer = client.post(gw.mcp("toolbox"), content=body.encode(), headers=legacy_headers(scoped, session))
        assert answer.json()["error"]["code"] == -32003
        surrogate = b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"\\ud800"}}'
        lone = client.post(gw.mcp("toolbox"), content=surrogate, headers=legacy_headers(scoped, session))
        assert lone.status_code == 400
        client.post(gw.mcp("toolbox"), content=b'{"jsonrpc":"2.0","id":4,"method":"\xff\xfe"}', headers=JSON_ACCEPT)
    data = (tmp_path / "logs" / "audit.jsonl").read_bytes()
    data.decode("utf-8")  # every byte is valid UTF-8
    lines = data.split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert [p["event"] for p in parsed].count("auth.success") == 1  # the real one (scoped), not the forged ones
    assert [p.get("principal") for p in parsed if p["event"] == "auth.success"] == ["scoped"]
    [call] = [p for p in parsed if p["event"] == "mcp.call" and p.get("outcome") == "forbidden"]
    assert call["tool"] == forged
    origin = audit_events(tmp_path, "origin.denied")
    assert len(origin) == 1
    path_failure = [p for p in parsed if p["event"] == "http.refused" and "event" in p.get("path", "")]
    assert len(path_failure) == 1  # refused as a non-canonical path (400) before authentication
    assert path_failure[0]["status"] == 400
    assert "\r\n" in path_failure[0]["path"]  # kept as data, escaped by JSON, not as a line break
    assert b"\r" not in data
    assert b"\x1b" not in data


def test_audit_log_rotates_by_size_and_is_private(tmp_path: Path) -> None:
    """LOG-04, CFG-02: past AUDIT_MAX_BYTES the file rotates to .1, .2 (AUDIT_BACKUPS); every file's lines parse;
    the log is mode 0600."""
    with secure_gateway(
        [spec("toolbox")], tmp_path, auth_token=admin_token(), audit_max_bytes=4096, audit_backups=2
    ) as gw:
        with httpx.Client(timeout=10) as client:
            for i in range(120):
                client.get(f"{gw.url}/auth/session", headers=bearer(f"wrong-{i}"))
    folder = tmp_path / "logs"
    files = sorted(p.name for p in folder.glob("audit.jsonl*"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"], files
    total = 0
    for name in files:
        path = folder / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert path.stat().st_size <= 4096 + 1024
        lines = path.read_text().splitlines()
        total += len(lines)
        assert all(json.loads(line)["event"] in ("auth.failure", "server.start", "server.stop") for line in lines)
    assert 0 < total < 120
