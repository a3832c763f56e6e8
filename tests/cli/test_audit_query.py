"""`mcp-bastion audit failures|denied|ratelimits|calls|summary|tail`: the operator's questions answered from the
audit log, rotated files included (oldest first), malformed lines skipped and counted, one error line with a hint.

Most tests write a realistic log (two rotated files written by hand with older times, the current file written by
the real `AuditLog`) and run the command in-process; the end-to-end tests drive a real gateway and run the real
console script as a subprocess.
"""

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from mcp_bastion.audit import AuditLog
from mcp_bastion.cli import cli
from tests.harness import default_sigint, run_gateway, spec
from tests.security.support import bearer, modern_call

CLI = Path(sys.executable).parent / "mcp-bastion"
BOUND_S = 20.0  # every wait on a subprocess is bounded by this
CRLF_REASON = "ünïcode ☃\r\n2030-01-01T00:00:00.000Z  auth.success  [bold red]forged[/]\u2028end"
ESCAPE_PATH = "/mcp/gh\x1b[2J"  # a terminal escape, no space (printed unquoted)


def ago(seconds: float) -> str:
    """An audit-format UTC time `seconds` before now."""
    stamp = time.time() - seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"


def entry(seconds_ago: float, event: str, **fields: Any) -> bytes:
    return json.dumps({"time": ago(seconds_ago), "event": event, **fields}).encode() + b"\n"


DAY = 86400.0
HOUR = 3600.0


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """audit.jsonl.2 (3 days old), audit.jsonl.1 (5 hours old, with 3 malformed lines and a blank one) and the
    current audit.jsonl written by the gateway's own AuditLog (now)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "audit.jsonl"
    (logs / "audit.jsonl.2").write_bytes(
        entry(3 * DAY + 2, "auth.failure", outcome="denied", reason="invalid token", ip="203.0.113.9", path="/mcp/gh")
        + entry(3 * DAY + 1, "auth.failure", outcome="denied", reason="invalid token", ip="203.0.113.9", path="/health")
        + entry(3 * DAY, "server.start", server="github", pid=4242)
    )
    (logs / "audit.jsonl.1").write_bytes(
        entry(5 * HOUR + 5, "ip.denied", outcome="denied", ip="198.51.100.7", path="/mcp/gh", method="POST")
        + entry(5 * HOUR + 4, "ip.denied", outcome="denied", ip="198.51.100.7", path="/mcp/gh", method="POST")
        + b'{"time": "2025-01-01T00:00:00.000Z", "event": "auth.fai\n'  # cut short (disk full, crash)
        + b"\n"  # blank: not an entry, not malformed either
        + entry(
            5 * HOUR + 3,
            "origin.denied",
            outcome="denied",
            reason="foreign origin",
            ip="127.0.0.1",
            value="https://evil.example",
        )
        + b"[1, 2]\n"  # JSON, but not an entry
        + entry(
            5 * HOUR + 2,
            "ratelimit.exceeded",
            outcome="denied",
            reason="too many failed authentications",
            ip="203.0.113.9",
        )
        + b'{"time": "not a time", "event": "mcp.call"}\n'
        + entry(
            5 * HOUR,
            "mcp.call",
            outcome="ok",
            ip="127.0.0.1",
            principal="ci-bot",
            server="github",
            method="tools/call",
            tool="get_issue",
            latency_ms=100.0,
            args={"number": "number"},
        )
    )
    audit = AuditLog(path, max_bytes=10**7, backups=2)
    audit.record("auth.failure", outcome="denied", reason="invalid token", ip="203.0.113.9", path="/mcp/gh")
    audit.record("auth.failure", outcome="denied", reason=CRLF_REASON, ip="203.0.113.9", path=ESCAPE_PATH)
    audit.record("auth.forbidden", outcome="denied", reason="needs admin", ip="10.0.0.5", principal="ci-bot")
    call = {"ip": "127.0.0.1", "principal": "ci-bot", "server": "github", "method": "tools/call", "tool": "get_issue"}
    for latency in (10.0, 20.0, 30.0, 40.0):
        audit.record("mcp.call", outcome="ok", latency_ms=latency, args={"number": "number"}, **call)
    audit.record("mcp.call", outcome="error", code=-32603, latency_ms=500.0, **call)
    audit.record("mcp.call", **{**call, "tool": "create_issue"}, outcome="forbidden")
    audit.record(
        "mcp.call",
        outcome="ok",
        ip="127.0.0.1",
        principal="laptop",
        server="demo",
        method="tools/call",
        tool="echo",
        latency_ms=5.0,
    )
    audit.record("ratelimit.exceeded", outcome="denied", reason="per-token", ip="10.0.0.5", principal="ci-bot")
    audit.record("server.crash", server="demo", reason="exit code 1", attempt=1)
    audit.close()
    assert b"\\r\\n" in path.read_bytes()  # the CRLF is escaped inside one line, as the gateway writes it
    return path


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, ["audit", *args], env=env, catch_exceptions=False)


def query(log: Path, command: str, *args: str) -> dict[str, Any]:
    result = invoke(command, *args, "--audit-log", str(log), "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def pick(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: row[key] for key in keys}


def test_failures_groups_auth_failure_and_forbidden_by_ip_and_reason_across_rotated_files(log: Path) -> None:
    data = query(log, "failures")
    assert data["files"] == [str(log) + ".2", str(log) + ".1", str(log)]
    assert data["malformed"] == 3
    assert data["total"] == 5
    assert [pick(g, "ip", "reason", "event", "count") for g in data["groups"]] == [
        {"ip": "203.0.113.9", "reason": "invalid token", "event": "auth.failure", "count": 3},
        {"ip": "10.0.0.5", "reason": "needs admin", "event": "auth.forbidden", "count": 1},
        {"ip": "203.0.113.9", "reason": CRLF_REASON, "event": "auth.failure", "count": 1},
    ]
    first = data["groups"][0]
    assert first["paths"] == {"/mcp/gh": 2, "/health": 1}
    assert first["first"] < first["last"]
    assert data["groups"][1]["principals"] == {"ci-bot": 1}


def test_since_keeps_only_the_window_as_a_duration_or_an_iso_time(log: Path) -> None:
    recent = query(log, "failures", "--since", "1h")
    assert sorted((g["reason"], g["count"]) for g in recent["groups"]) == [  # equal counts: order by recency
        ("invalid token", 1),
        ("needs admin", 1),
        (CRLF_REASON, 1),
    ]
    assert recent["total"] == 3
    assert recent["since"] is not None
    assert recent["since"].endswith("Z")
    day = query(log, "summary", "--since", "24h")
    assert day["entries"] == 12 + 5  # the current file (12) and the 5 entries of audit.jsonl.1
    iso = query(log, "summary", "--since", ago(4 * DAY).replace("Z", "+00:00"))
    assert iso["entries"] == 3 + 5 + 12
    old = query(log, "summary", "--until", ago(2 * DAY))
    assert [(e["event"], e["count"]) for e in old["events"]] == [("auth.failure", 2), ("server.start", 1)]
    assert query(log, "summary", "--since", "2030-01-01")["entries"] == 0  # a bare date is UTC midnight


def test_denied_counts_ip_and_origin_refusals_per_ip(log: Path) -> None:
    data = query(log, "denied")
    assert data["total"] == 3
    assert [pick(g, "ip", "count", "events", "reasons") for g in data["groups"]] == [
        {"ip": "198.51.100.7", "count": 2, "events": {"ip.denied": 2}, "reasons": {}},
        {"ip": "127.0.0.1", "count": 1, "events": {"origin.denied": 1}, "reasons": {"foreign origin": 1}},
    ]
    assert query(log, "denied", "--since", "1h")["groups"] == []


def test_ratelimits_by_ip_principal_and_limit(log: Path) -> None:
    data = query(log, "ratelimits")
    assert [pick(g, "ip", "principal", "reason", "count") for g in data["groups"]] == [
        {"ip": "10.0.0.5", "principal": "ci-bot", "reason": "per-token", "count": 1},
        {"ip": "203.0.113.9", "principal": "-", "reason": "too many failed authentications", "count": 1},
    ]


def test_calls_count_outcomes_and_latency_percentiles_with_filters(log: Path) -> None:
    data = query(log, "calls")
    rows = [pick(g, "server", "tool", "principal", "count", "outcomes", "p50_ms", "p95_ms") for g in data["groups"]]
    assert rows == [
        # latencies 100 (5 h ago), 10, 20, 30, 40, 500: nearest rank p50 = 3rd = 30, p95 = 6th = 500
        {
            "server": "github",
            "tool": "get_issue",
            "principal": "ci-bot",
            "count": 6,
            "outcomes": {"ok": 5, "error": 1},
            "p50_ms": 30.0,
            "p95_ms": 500.0,
        },
        {
            "server": "demo",
            "tool": "echo",
            "principal": "laptop",
            "count": 1,
            "outcomes": {"ok": 1},
            "p50_ms": 5.0,
            "p95_ms": 5.0,
        },
        {
            "server": "github",
            "tool": "create_issue",
            "principal": "ci-bot",
            "count": 1,
            "outcomes": {"forbidden": 1},
            "p50_ms": None,
            "p95_ms": None,
        },
    ]
    assert data["total"]["count"] == 8
    assert data["total"]["outcomes"] == {"ok": 6, "error": 1, "forbidden": 1}
    assert data["groups"][0]["errors"] == 1

    only = query(log, "calls", "--server", "github", "--tool", "get_*", "--principal", "ci-bot", "--since", "1h")
    assert [(g["tool"], g["count"], g["p50_ms"], g["p95_ms"]) for g in only["groups"]] == [
        ("get_issue", 5, 30.0, 500.0)
    ]
    assert [g["server"] for g in query(log, "calls", "--principal", "laptop")["groups"]] == ["demo"]
    assert query(log, "calls", "--outcome", "error")["total"]["count"] == 1
    assert query(log, "calls", "--server", "nope")["groups"] == []


def test_summary_counts_events_outcomes_top_ips_principals_and_errors(log: Path) -> None:
    data = query(log, "summary", "--top", "2")
    assert data["entries"] == 20
    assert data["malformed"] == 3
    events = {e["event"]: (e["count"], e["outcomes"]) for e in data["events"]}
    assert events == {
        "mcp.call": (8, {"ok": 6, "error": 1, "forbidden": 1}),
        "auth.failure": (4, {"denied": 4}),
        "ip.denied": (2, {"denied": 2}),
        "ratelimit.exceeded": (2, {"denied": 2}),
        "auth.forbidden": (1, {"denied": 1}),
        "origin.denied": (1, {"denied": 1}),
        "server.start": (1, {}),
        "server.crash": (1, {}),
    }
    assert data["top_ips"] == [
        {"ip": "127.0.0.1", "count": 9, "refused": 2, "last": data["top_ips"][0]["last"]},
        {"ip": "203.0.113.9", "count": 5, "refused": 5, "last": data["top_ips"][1]["last"]},
    ]
    assert [(p["principal"], p["count"], p["refused"]) for p in data["top_principals"]] == [
        ("ci-bot", 9, 3),
        ("laptop", 1, 0),
    ]
    assert sorted((e["event"], e["server"], e["tool"], e["detail"], e["count"]) for e in data["errors"]) == [
        ("mcp.call", "github", "get_issue", "-32603", 1),
        ("server.crash", "demo", "-", "exit code 1", 1),
    ]


def test_malformed_lines_are_skipped_counted_and_located_on_stderr(log: Path) -> None:
    result = invoke("failures", "--audit-log", str(log), "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout stays one JSON document
    assert "skipped 3 malformed lines (first: audit.jsonl.1 line 3)" in result.stderr


def test_human_tables_show_the_answers(log: Path) -> None:
    result = invoke("failures", "--audit-log", str(log), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Failed authentication" in result.stdout
    assert "203.0.113.9" in result.stdout
    assert "invalid token" in result.stdout
    assert "20 entries in" in result.stdout
    assert "(+2 rotated)" in result.stdout
    calls = invoke("calls", "--audit-log", str(log), env={"COLUMNS": "200"}).stdout
    assert "get_issue" in calls
    assert "ok 5" in calls
    assert "500.0" in calls
    summary = invoke("summary", "--audit-log", str(log), env={"COLUMNS": "200"}).stdout
    for heading in ("Events", "Top IPs", "Top principals", "Errors", "exit code 1"):
        assert heading in summary
    empty = invoke("ratelimits", "--since", "2030-01-01", "--audit-log", str(log))
    assert empty.exit_code == 0
    assert "No rate limit violations" in empty.stdout


def test_tail_prints_entries_oldest_file_first_and_the_last_n(log: Path) -> None:
    everything = invoke("tail", "-n", "100", "--json", "--audit-log", str(log))
    assert everything.exit_code == 0
    lines = [json.loads(line) for line in everything.stdout.splitlines()]
    assert len(lines) == 20
    assert lines[0]["event"] == "auth.failure"
    assert lines[0]["path"] == "/mcp/gh"
    assert lines[2]["event"] == "server.start"
    assert lines[-1]["event"] == "server.crash"
    last_calls = invoke("tail", "-n", "2", "--event", "mcp.*", "--json", "--audit-log", str(log))
    assert [(e["server"], e["tool"]) for e in map(json.loads, last_calls.stdout.splitlines())] == [
        ("github", "create_issue"),
        ("demo", "echo"),
    ]


def test_tail_shows_crlf_escaped_unicode_kept_and_markup_literal(log: Path) -> None:
    result = invoke("tail", "-n", "100", "--event", "auth.failure", "--audit-log", str(log))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # the CRLF in a reason cannot start a forged line
    assert "\r" not in result.stdout
    forged = lines[-1]
    assert "ünïcode ☃\\r\\n2030-01-01T00:00:00.000Z  auth.success  [bold red]forged[/]" in forged
    assert " auth.failure " in forged
    assert "[bold red]forged[/]\\u2028end" in forged
    assert forged.endswith("path=/mcp/gh\\u001b[2J")
    assert "\x1b" not in result.stdout
    assert "\u2028" not in result.stdout
    table = invoke("failures", "--audit-log", str(log), env={"COLUMNS": "300"}).stdout
    assert "\r" not in table
    assert "ünïcode ☃\\r\\n2030-01-01T00:00:00.000Z  auth.success  [bold red]forged[/]" in table


def test_audit_log_defaults_to_audit_log_from_the_env_file(log: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "bastion.env"
    env_file.write_text(f"AUDIT_LOG={log}\n", encoding="utf-8")
    result = invoke("summary", "--json", "--env-file", str(env_file), env={"AUDIT_LOG": None})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"] == 20


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (("failures", "--audit-log", "{missing}"), "error: no audit log at {missing}", "pass --log PATH"),
        (("summary", "--since", "yesterday", "--audit-log", "{log}"), "--since 'yesterday' is neither", "e.g. 15m"),
        (("calls", "--until", "soon", "--audit-log", "{log}"), "--until 'soon' is neither", "e.g. 15m"),
        (("tail", "--for", "1", "--audit-log", "{log}"), "--for only applies with --follow", "add --follow"),
        (("denied", "--audit-log", "{dir}"), "is a directory", "pass the file"),
    ],
)
def test_errors_are_one_line_with_a_hint_and_exit_2(
    log: Path, tmp_path: Path, args: tuple[str, ...], message: str, hint: str
) -> None:
    values = {"missing": str(tmp_path / "nowhere" / "audit.jsonl"), "log": str(log), "dir": str(log.parent)}
    result = invoke(*(a.format(**values) for a in args))
    assert result.exit_code == 2
    assert result.stdout == ""
    text = result.stderr.strip()
    assert "\n" not in text
    assert message.format(**values) in text
    assert "(hint: " in text
    assert hint in text.partition("(hint: ")[2]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["failures", "denied", "ratelimits", "calls", "summary", "tail"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = invoke(command, "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    flat = " ".join(result.stdout.split())
    assert f"Example: mcp-bastion audit {command}" in flat
    for option in ("--since", "--json", "--audit-log", "--env-file", "AUDIT_LOG"):
        assert option in flat


def test_the_audit_group_lists_every_command_with_an_example() -> None:
    result = CliRunner().invoke(cli, ["audit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in ("failures", "denied", "ratelimits", "calls", "summary", "tail"):
        assert f"{command} " in result.stdout
    assert "Example: mcp-bastion audit summary --since 24h" in " ".join(result.stdout.split())


# ---------------------------------------------------------------------------------------------------------------
# End to end: a real gateway writes the log, the real console script reads it.


def run_audit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "audit", *args],
        capture_output=True,
        text=True,
        timeout=BOUND_S * 2,
        check=False,
        env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", **env},
    )


def cli_json(*args: str) -> dict[str, Any]:
    done = run_audit(*args, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_a_real_gateway_log_answers_failures_calls_and_summary(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(30)
    assert len(token) == 40
    path = tmp_path / "logs" / "audit.jsonl"
    with (
        run_gateway([spec("toolbox")], tmp_path, insecure_no_auth=False, auth_token=token) as gw,
        httpx.Client(timeout=10) as client,
    ):
        wrong = client.post(
            gw.mcp("toolbox"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=bearer("x" * 40)
        )
        assert wrong.status_code == 401
        missing = client.get(f"{gw.url}/health")
        assert missing.status_code == 401
        call = modern_call(
            client, gw.mcp("toolbox"), token, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}
        )
        assert call.status_code == 200, call.text
        assert "hi" in call.text
    log = str(path)

    failures = cli_json("failures", "--audit-log", log)
    assert failures["total"] == 2
    assert failures["malformed"] == 0
    assert sorted((pick(g, "ip", "event", "reason", "count", "paths") for g in failures["groups"]), key=str) == [
        {
            "ip": "127.0.0.1",
            "event": "auth.failure",
            "reason": "invalid token",
            "count": 1,
            "paths": {"/mcp/toolbox": 1},
        },
        {
            "ip": "127.0.0.1",
            "event": "auth.failure",
            "reason": "missing credentials",
            "count": 1,
            "paths": {"/health": 1},
        },
    ]

    calls = cli_json("calls", "--audit-log", log)
    assert [pick(g, "server", "method", "tool", "principal", "count", "outcomes") for g in calls["groups"]] == [
        {
            "server": "toolbox",
            "method": "tools/call",
            "tool": "echo",
            "principal": "admin",
            "count": 1,
            "outcomes": {"ok": 1},
        }
    ]
    assert calls["groups"][0]["p50_ms"] is not None
    assert calls["groups"][0]["p50_ms"] > 0

    summary = cli_json("summary", "--audit-log", log, "--since", "15m")
    events = {e["event"]: e["count"] for e in summary["events"]}
    assert events["auth.failure"] == 2
    assert events["auth.success"] == 1
    assert events["server.start"] == 1
    assert events["server.stop"] == 1
    assert summary["top_ips"][0]["ip"] == "127.0.0.1"
    assert summary["top_ips"][0]["refused"] == 2
    assert cli_json("summary", "--audit-log", log, "--until", "1h")["entries"] == 0

    table = run_audit("failures", "--audit-log", log, COLUMNS="200")
    assert table.returncode == 0
    assert "127.0.0.1" in table.stdout
    assert "missing credentials" in " ".join(table.stdout.split())


def test_missing_log_exits_2_with_the_path_and_a_hint_from_the_console_script(tmp_path: Path) -> None:
    missing = tmp_path / "logs" / "audit.jsonl"
    done = run_audit("summary", "--audit-log", str(missing))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert f"no audit log at {missing}" in done.stderr
    assert "hint:" in done.stderr


class Lines:
    """A subprocess's stdout and stderr read line by line on threads, so the test can wait on output, bounded."""

    def __init__(self, proc: "subprocess.Popen[str]") -> None:
        self.proc = proc
        self.queues: dict[str, queue.Queue[str]] = {"out": queue.Queue(), "err": queue.Queue()}
        self.seen: dict[str, list[str]] = {"out": [], "err": []}
        self.threads = [
            threading.Thread(target=self._pump, args=(name, stream), daemon=True)
            for name, stream in (("out", proc.stdout), ("err", proc.stderr))
        ]
        for thread in self.threads:
            thread.start()

    def _pump(self, name: str, stream: Any) -> None:
        for line in stream:
            self.queues[name].put(line)

    def rest(self, name: str) -> list[str]:
        """After the process ended: every line not yet taken."""
        for thread in self.threads:
            thread.join(BOUND_S)
        left: list[str] = []
        while not self.queues[name].empty():
            left.append(self.queues[name].get_nowait())
        return left

    def wait_for(self, name: str, needle: str) -> str:
        deadline = time.monotonic() + BOUND_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queues[name].get(timeout=left)
            except queue.Empty:
                break
            self.seen[name].append(line)
            if needle in line:
                return line
        raise AssertionError(f"{needle!r} never appeared on std{name}; saw {self.seen[name]!r}")


@pytest.fixture
def follow(log: Path) -> Iterator[Lines]:
    proc = subprocess.Popen(
        [str(CLI), "audit", "tail", "--follow", "--for", "60", "-n", "1", "--json", "--audit-log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
        preexec_fn=default_sigint,  # the test sends SIGINT; the suite may run with it ignored
    )
    try:
        yield Lines(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(BOUND_S)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_follow_prints_lines_appended_after_it_started_across_rotation(log: Path, follow: Lines) -> None:
    assert json.loads(follow.wait_for("out", "server.crash"))["event"] == "server.crash"  # -n 1: the last entry
    follow.wait_for("err", f"following {log}")
    writer = AuditLog(log, max_bytes=10**7, backups=2)
    writer.record("auth.failure", outcome="denied", reason="appended after start", ip="192.0.2.1")
    writer.close()
    line = json.loads(follow.wait_for("out", "appended after start"))
    assert (line["event"], line["ip"]) == ("auth.failure", "192.0.2.1")

    # The next line fills the file past max_bytes: the writer renames it to .1 and starts a new one.
    rotating = AuditLog(log, max_bytes=log.stat().st_size + 1, backups=3)
    rotating.record("auth.failure", outcome="denied", reason="last line before rotation", ip="192.0.2.2")
    assert not log.exists()
    rotating.record("auth.failure", outcome="denied", reason="first line after rotation", ip="192.0.2.3")
    rotating.close()
    assert log.exists()
    follow.wait_for("out", "last line before rotation")
    follow.wait_for("out", "first line after rotation")

    follow.proc.send_signal(signal.SIGINT)  # Ctrl-C ends a follow quietly
    assert follow.proc.wait(BOUND_S) == 0
    assert len(follow.seen["out"] + follow.rest("out")) == 4  # nothing printed twice
    assert "Traceback" not in "".join(follow.rest("err"))


def test_follow_stops_by_itself_after_for_seconds(log: Path) -> None:
    started = time.monotonic()
    done = run_audit("tail", "--follow", "--for", "0.5", "-n", "0", "--audit-log", str(log))
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 0.5
    assert done.stdout == ""
    assert f"following {log}" in done.stderr
