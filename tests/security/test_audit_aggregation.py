"""Refusal noise is aggregated per client IP and window, so it cannot rotate decisions out of the audit log.

The peer is always 127.0.0.1; with 127.0.0.1 as a trusted proxy, X-Forwarded-For stands in for other clients.
A window may end in the middle of a flood, so exact counts are checked as "lines written + summaries' counts".
"""

import json
from pathlib import Path
from typing import Any

import httpx

from mcp_bastion.audit import MANY_ADDRESSES, REFUSAL_TABLE_MAX, AuditLog
from tests.harness import spec, wait_until
from tests.security.support import admin_token, audit_lines, bearer, run_cli, secure_gateway, write_env

FLOOD = 10_000
PER_IP = 20
HOUR_S = 3600.0  # a window long enough that a flood of a few seconds seldom spans two
SMALL_LOG = {"audit_max_bytes": 64 * 1024, "audit_backups": 1}  # 10,000 refusal lines would fill it 30 times over


def flood(client: httpx.Client, url: str, count: int, headers: dict[str, str]) -> set[int]:
    """`count` refused requests; the set of statuses they got."""
    return {client.get(url, headers=headers).status_code for _ in range(count)}


def summaries(lines: list[dict[str, Any]], ip: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == "audit.suppressed" and line["ip"] == ip]


def refusals(lines: list[dict[str, Any]], ip: str, event: str) -> int:
    """Refusals of `event` from `ip`: lines written plus what the summaries counted."""
    written = sum(1 for line in lines if line["event"] == event and line.get("ip") == ip)
    counted = sum(sum(s["events"].get(event, {}).values()) for s in summaries(lines, ip))
    return written + counted


def login(url: str, token: str) -> None:
    """A login from its own client, so the flood's client stays anonymous (no session cookie)."""
    answer = httpx.post(f"{url}/auth/login", json={"token": token}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_ten_thousand_anonymous_refusals_leave_the_login_record_and_write_a_bounded_number_of_bytes(
    tmp_path: Path,
) -> None:
    """Issue 8 item 8: 10,000 unauthenticated requests from one IP write the first 20 refusal lines and one
    summary line that counts the rest exactly; the log does not rotate, the login before the flood is still in
    the current file and the login after it is written (decisions are never suppressed)."""
    admin = admin_token()
    settings = {**SMALL_LOG, "audit_refusals_per_ip": PER_IP, "audit_refusal_window_s": HOUR_S}
    log = tmp_path / "logs" / "audit.jsonl"
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        with httpx.Client(timeout=10) as client:
            login(gw.url, admin)
            before = log.stat().st_size
            assert flood(client, f"{gw.url}/auth/session", FLOOD, {}) == {401}
            flood_bytes = log.stat().st_size - before
            login(gw.url, admin)
    lines = audit_lines(tmp_path)
    assert not log.with_name("audit.jsonl.1").exists()
    assert [line["event"] for line in lines].count("session.login") == 2
    written = [line for line in lines if line["event"] == "auth.failure"]
    counted = summaries(lines, "127.0.0.1")
    assert len(counted) in (1, 2)  # two only if an hour boundary fell inside the flood
    assert len(written) == PER_IP * len(counted)
    assert sum(s["count"] for s in counted) == FLOOD - len(written)
    assert refusals(lines, "127.0.0.1", "auth.failure") == FLOOD
    assert all(s["outcome"] == "denied" and s["window_start"] < s["window_end"] for s in counted)
    assert flood_bytes < 2 * PER_IP * 256  # 20 short lines per window; ~2 MB if every refusal were written
    assert all(len(json.dumps(line)) < 256 for line in written)


def test_audit_queries_count_suppressed_refusals_and_each_ip_separately(tmp_path: Path) -> None:
    """Issue 8 item 8: `audit failures`, `denied` and `summary` add the summaries' counts, so they report every
    refused request; two IPs refused at once are aggregated and reported separately."""
    admin = admin_token()
    settings = {
        "audit_refusals_per_ip": PER_IP,
        "audit_refusal_window_s": HOUR_S,
        "trusted_proxies": "127.0.0.1",
        "allowed_ips": "127.0.0.1, 198.51.100.0/24",
    }
    counts = {"198.51.100.7": 1500, "198.51.100.8": 300}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        with httpx.Client(timeout=10) as client:
            for ip, count in counts.items():
                assert flood(client, f"{gw.url}/auth/session", count, {"X-Forwarded-For": ip, **bearer("bad")}) == {401}
            assert flood(client, f"{gw.url}/auth/session", 700, {"X-Forwarded-For": "203.0.113.9"}) == {403}
    lines = audit_lines(tmp_path)
    for ip, count in counts.items():
        assert refusals(lines, ip, "auth.failure") == count
        assert summaries(lines, ip)
    assert refusals(lines, "203.0.113.9", "ip.denied") == 700
    env = write_env(tmp_path)

    def query(command: str) -> dict[str, Any]:
        result = run_cli(tmp_path, env, "audit", command, "--json")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    failures = query("failures")
    by_ip: dict[str, int] = {}
    for group in failures["groups"]:
        by_ip[group["ip"]] = by_ip.get(group["ip"], 0) + group["count"]
    assert by_ip == counts
    assert failures["total"] == sum(counts.values())
    denied = query("denied")
    assert [(g["ip"], g["count"], g["events"]) for g in denied["groups"]] == [("203.0.113.9", 700, {"ip.denied": 700})]
    summary = query("summary")
    refused = {row["ip"]: row["refused"] for row in summary["top_ips"]}
    assert refused["198.51.100.7"] == 1500
    assert refused["198.51.100.8"] == 300
    assert refused["203.0.113.9"] == 700


def test_a_quiet_ip_gets_its_summary_line_when_the_window_ends(tmp_path: Path) -> None:
    """Issue 8 item 8: an IP that stops after its flood still gets its summary line soon after the window ends,
    with no further request and before shutdown (the log flushes itself on the event loop)."""
    admin = admin_token()
    settings = {"audit_refusals_per_ip": 5, "audit_refusal_window_s": 1.0}
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **settings) as gw:
        with httpx.Client(timeout=10) as client:
            assert flood(client, f"{gw.url}/auth/session", 60, {}) == {401}
        wait_until(lambda: refusals(audit_lines(tmp_path), "127.0.0.1", "auth.failure") == 60, timeout=10)
        assert summaries(audit_lines(tmp_path), "127.0.0.1")


def test_refusals_from_more_addresses_than_the_table_holds_share_one_bucket(tmp_path: Path) -> None:
    """Issue 8 item 8: a flood from rotating addresses cannot grow the per-IP table: past REFUSAL_TABLE_MAX
    addresses, refusals are aggregated under "many addresses", and every one is still counted."""
    now = [1_000_000.0]
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=10**9, backups=0, refusals_per_ip=1, clock=lambda: now[0])
    extra = 1000
    for n in range(REFUSAL_TABLE_MAX + extra):
        ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        audit.record("auth.failure", outcome="denied", reason="missing credentials", ip=ip)
    now[0] += 60.0
    audit.record("session.login", outcome="ok", ip="127.0.0.1", principal="admin")  # the next line flushes
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    bucket = summaries(lines, MANY_ADDRESSES)
    assert len(bucket) == 1
    assert bucket[0]["count"] == extra - 1
    assert bucket[0]["events"] == {"auth.failure": {"missing credentials": extra - 1}}
    assert sum(1 for line in lines if line["event"] == "auth.failure") == REFUSAL_TABLE_MAX + 1
    assert lines[-1]["event"] == "session.login"
    audit.close()


def test_each_window_starts_a_fresh_quota_and_close_writes_the_last_summary(tmp_path: Path) -> None:
    """Issue 8 item 8: the first N refusals of every window are written, the summary of a window that is over is
    written before the next line, and close() writes the current window's summary."""
    now = [1_000_000.0]
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, max_bytes=10**9, backups=0, refusals_per_ip=3, refusal_window_s=60.0, clock=lambda: now[0])
    for _ in range(10):
        audit.record("ratelimit.exceeded", outcome="denied", reason="per-ip", ip="192.0.2.1")
    audit.record("auth.forbidden", outcome="denied", reason="needs admin", ip="192.0.2.1", principal="ci")
    now[0] += 60.0
    for _ in range(5):
        audit.record("ratelimit.exceeded", outcome="denied", reason="per-ip", ip="192.0.2.1")
    audit.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["ratelimit.exceeded"] * 3 + ["audit.suppressed"] + [
        "ratelimit.exceeded"
    ] * 3 + ["audit.suppressed"]
    first, second = lines[3], lines[7]
    assert first["count"] == 8
    assert first["events"] == {"ratelimit.exceeded": {"per-ip": 7}, "auth.forbidden": {"needs admin": 1}}
    assert (first["window_start"], first["window_end"]) == ("1970-01-12T13:46:00.000Z", "1970-01-12T13:47:00.000Z")
    assert second["count"] == 2
    assert second["window_start"] == first["window_end"]
