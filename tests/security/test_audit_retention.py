"""Issue 9 item 8: security events live in their own file (SECURITY_LOG, by default `security.jsonl` next to
AUDIT_LOG), so a flood of `mcp.call` lines rotating the calls file cannot take a login with it; the `audit` CLI and
the dashboard's /api/audit read both files, merged by time, rotated ones included.

The flood is 50,000 `mcp.call` lines written by the running gateway's own AuditLog (what the relay calls once per
call: 50,000 real calls would take minutes); everything else goes through the real HTTP surface and the CLI.
"""

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_bastion.audit import AuditLog, is_security
from mcp_bastion.config import Settings
from tests.cli.test_audit_query import BOUND_S, CLI, Lines, query
from tests.harness import spec, wait_until
from tests.security.support import admin_token, bearer, modern_call, secure_gateway

CALL_LINES = 50_000
CALLS_MAX_BYTES = 64 * 1024  # a few hundred call lines per file: 50,000 rotate it ~150 times
CALLS_BACKUPS = 2
POLL_S = 10.0


def lines_of(*paths: Path) -> list[dict[str, Any]]:
    """The parsed lines of the given files (missing ones skipped)."""
    found: list[dict[str, Any]] = []
    for path in paths:
        if path.exists():
            found += [json.loads(line) for line in path.read_text().splitlines()]
    return found


def rotated(current: Path) -> list[Path]:
    """`current` and its backups, oldest first."""
    backups = sorted(current.parent.glob(current.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, current]


@pytest.mark.parametrize(
    ("event", "outcome"),
    [
        ("auth.failure", "denied"),
        ("auth.success", "ok"),
        ("session.login", "ok"),
        ("session.expired", "denied"),
        ("token.created", "ok"),
        ("admin.lockdown", "ok"),
        ("ip.denied", "denied"),
        ("origin.denied", "denied"),
        ("ratelimit.exceeded", "denied"),
        ("http.refused", "denied"),
        ("audit.suppressed", "denied"),
        ("quota.exceeded", "denied"),
        ("stream.overflow", None),
        ("server.start", None),
        ("server.crash", None),
        ("mcp.call", "forbidden"),
    ],
)
def test_security_events_are_named_by_one_rule(event: str, outcome: str | None) -> None:
    """Issue 9 item 8: logins, sessions, tokens, admin actions, refusals, rate limits, quotas, server lifecycle and
    forbidden calls are security events."""
    assert is_security(event, outcome)


@pytest.mark.parametrize("outcome", ["ok", "error", "tool_error", "cancelled"])
def test_calls_that_were_not_refused_go_to_the_calls_file(outcome: str) -> None:
    """Issue 9 item 8: an mcp.call that was allowed (whatever its result) is a call line, not a security event."""
    assert not is_security("mcp.call", outcome)


def test_security_log_defaults_to_security_jsonl_next_to_the_audit_log(tmp_path: Path) -> None:
    """Issue 9 item 8: SECURITY_LOG unset means logs/security.jsonl beside AUDIT_LOG, never the audit log itself."""
    assert Settings(audit_log=tmp_path / "a" / "audit.jsonl").security_audit_log == tmp_path / "a" / "security.jsonl"
    assert Settings(audit_log=tmp_path / "security.jsonl").security_audit_log == tmp_path / "security.security.jsonl"
    named = Settings(audit_log=tmp_path / "audit.jsonl", security_log=tmp_path / "sec" / "s.jsonl")
    assert named.security_audit_log == tmp_path / "sec" / "s.jsonl"


def test_fifty_thousand_call_lines_rotate_the_calls_file_while_the_login_survives_and_both_stay_queryable(
    tmp_path: Path,
) -> None:
    """Issue 9 item 8: with AUDIT_MAX_BYTES small, 50,000 mcp.call lines rotate the calls file many times over; the
    login and the failed authentication stay in security.jsonl (0600), and the CLI queries and /api/audit (first
    page and cursor polls) find both kinds."""
    admin = admin_token()
    logs = tmp_path / "logs"
    calls_log, security_log = logs / "audit.jsonl", logs / "security.jsonl"
    settings = {"security_log": None, "audit_max_bytes": CALLS_MAX_BYTES, "audit_backups": CALLS_BACKUPS}
    with (
        secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw,
        httpx.Client(timeout=10) as client,
    ):
        assert client.post(f"{gw.url}/auth/login", json={"token": admin}).status_code == 200
        assert client.get(f"{gw.url}/health", headers=bearer("wrong-" + admin)).status_code == 401
        call = modern_call(client, gw.mcp("toolbox"), admin, "tools/call", {"name": "echo", "arguments": {"x": 1}})
        assert call.status_code == 200, call.text
        for _ in range(CALL_LINES):
            gw.app.audit.record(
                "mcp.call", outcome="ok", server="toolbox", method="tools/call", tool="echo", principal="load"
            )

        calls = lines_of(*rotated(calls_log))
        assert len(rotated(calls_log)) == CALLS_BACKUPS + 1
        assert 0 < len(calls) < CALL_LINES  # the calls file rotated: most call lines are gone
        assert {line["event"] for line in calls} == {"mcp.call"}
        kept = lines_of(*rotated(security_log))
        assert [line["principal"] for line in kept if line["event"] == "session.login"] == ["admin"]
        assert [line["reason"] for line in kept if line["event"] == "auth.failure"] == ["invalid token"]
        assert not [line for line in kept if line["event"] == "mcp.call"]
        assert stat.S_IMODE(security_log.stat().st_mode) == 0o600

        def api(**params: Any) -> dict[str, Any]:
            answer = client.get(f"{gw.url}/api/audit", params=params, headers=bearer(admin))
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        assert [e["principal"] for e in api(event="session.login")["events"]] == ["admin"]
        assert len(api(event="mcp.call", limit=5)["events"]) == 5
        newest = api(limit=500)
        assert {e["event"] for e in newest["events"]} == {"mcp.call"}  # the flood is what happened last

        # A new failure and a new call after the cursor: one poll sees both, in time order.
        cursor, seen = newest["cursor"], []
        assert client.get(f"{gw.url}/health", headers=bearer("again-" + admin)).status_code == 401
        assert modern_call(client, gw.mcp("toolbox"), admin, "tools/call", {"name": "echo", "arguments": {}}).is_success

        def both_arrived() -> bool:
            nonlocal cursor
            page = api(after=cursor)
            seen.extend(page["events"])
            cursor = page["cursor"]
            names = [e["event"] for e in seen]
            return "auth.failure" in names and "mcp.call" in names

        wait_until(both_arrived, POLL_S)
        assert [e["time"] for e in seen] == sorted(e["time"] for e in seen)

    failures = query(calls_log, "failures")
    assert {(g["ip"], g["reason"]) for g in failures["groups"]} == {("127.0.0.1", "invalid token")}
    assert failures["total"] == 2
    assert str(security_log) in failures["files"]
    assert query(calls_log, "calls")["total"]["count"] == len(lines_of(*rotated(calls_log)))
    summary = {row["event"]: row["count"] for row in query(calls_log, "summary")["events"]}
    assert summary["session.login"] == 1
    assert summary["mcp.call"] == len(lines_of(*rotated(calls_log)))
    tail = query(calls_log, "tail", "-n", "3", "--event", "session.*")  # --json on tail: JSON lines
    assert tail["event"] == "session.login"


@pytest.fixture
def split_log(tmp_path: Path) -> Iterator[tuple[AuditLog, Lines]]:
    """An AuditLog writing logs/audit.jsonl and logs/security.jsonl, and `audit tail --follow` on both."""
    logs = tmp_path / "logs"
    writer = AuditLog(logs / "audit.jsonl", max_bytes=10**7, backups=2, security_path=logs / "security.jsonl")
    writer.record("server.start", server="demo", pid=1)  # security.jsonl exists, audit.jsonl not yet
    proc = subprocess.Popen(
        [
            str(CLI),
            "audit",
            "tail",
            "--follow",
            "--for",
            "60",
            "-n",
            "1",
            "--json",
            "--audit-log",
            str(logs / "audit.jsonl"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
    )
    try:
        yield writer, Lines(proc)
    finally:
        writer.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(BOUND_S)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_tail_follow_follows_the_calls_and_the_security_file(split_log: tuple[AuditLog, Lines], tmp_path: Path) -> None:
    """Issue 9 item 8: `audit tail --follow` prints new lines of both files, including one created after it started."""
    writer, follow = split_log
    assert json.loads(follow.wait_for("out", "server.start"))["event"] == "server.start"
    follow.wait_for("err", "security.jsonl")
    writer.record("mcp.call", outcome="ok", server="demo", tool="first-call")
    assert json.loads(follow.wait_for("out", "first-call"))["event"] == "mcp.call"  # audit.jsonl appeared meanwhile
    writer.record("auth.failure", outcome="denied", reason="followed", ip="192.0.2.7")
    writer.record("mcp.call", outcome="ok", server="demo", tool="second-call")
    for needle in ("followed", "second-call"):  # written in the same millisecond: either may be printed first
        if not any(needle in line for line in follow.seen["out"]):
            follow.wait_for("out", needle)
    printed = [json.loads(line) for line in follow.seen["out"]]
    assert [e["time"] for e in printed] == sorted(e["time"] for e in printed)
    assert len(printed) == 4  # each line once


BUSY_DAY = {  # security lines a busy gateway writes in a day (docs/security.md), divided by SAMPLE_SCALE
    "auth.success": 1440,  # 100 (principal, address) pairs active all day: one line a minute each
    "session.login": 5,
    "session.expired": 50,
    "server.start": 50,
    "auth.failure": 20,
    "ratelimit.exceeded": 20,
    "mcp.call": 20,  # outcome forbidden
}
SAMPLE_SCALE = 100
WEEK_DAYS = 7


def test_the_default_security_caps_hold_a_week_of_a_busy_gateways_security_events(tmp_path: Path) -> None:
    """Issue 9 item 8: a sample of a busy day's security lines, written by the real AuditLog with realistic fields,
    times SAMPLE_SCALE, times a week, fits in SECURITY_MAX_BYTES x (SECURITY_BACKUPS + 1)."""
    settings = Settings(audit_log=tmp_path / "audit.jsonl")
    audit = AuditLog.from_settings(settings)
    who = {"request_id": "6f1c2a9e4b7d4c0e9a3b5d7f1e2c4a6b", "principal": "ci-bot-production"}
    outcomes = {"auth.failure": "denied", "ratelimit.exceeded": "denied", "mcp.call": "forbidden", "server.start": None}
    for event, count in BUSY_DAY.items():
        for n in range(count):  # many addresses: no refusal is folded into a summary line, every line is written
            fields = {"outcome": outcomes.get(event, "ok"), "ip": f"203.0.113.{n % 250}", **who}
            audit.record(event, reason="bearer", path="/mcp/github", server="github", **fields)
    audit.close()
    assert not (tmp_path / "audit.jsonl").exists()  # every one of them was a security line
    day_bytes = settings.security_audit_log.stat().st_size * SAMPLE_SCALE
    assert day_bytes * WEEK_DAYS <= settings.security_max_bytes * (settings.security_backups + 1)
