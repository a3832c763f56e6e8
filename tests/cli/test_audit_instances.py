"""`mcp-bastion audit` over several instances' logs (Issue 12 item 6): every line names the instance that wrote
it, `--log` is repeatable and takes globs, each log is read with the security file beside it, all merged by time."""

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mcp_bastion.audit import AuditLog
from mcp_bastion.cli import cli
from mcp_bastion.config import Settings

INSTANCES = ("gw-1", "gw-2", "gw-3")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args], env={"COLUMNS": "200"}, catch_exceptions=False)


def as_json(*args: str) -> dict[str, Any]:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """logs/gw-N/{audit,security}.jsonl as three gateways write them (their own AuditLog, from their settings)."""
    audits = {}
    for name in INSTANCES:
        settings = Settings(instance_id=name, audit_log=tmp_path / "logs" / name / "audit.jsonl")
        audits[name] = AuditLog.from_settings(settings)
    # Round-robin: each request lands on the next instance.
    for i in range(9):
        name = INSTANCES[i % 3]
        audits[name].record("mcp.call", outcome="ok", principal="ci", server="files", tool=f"t{i}", latency_ms=1.0)
        audits[name].record("auth.failure", outcome="denied", reason=f"r{i}", ip="203.0.113.9")
    for audit in audits.values():
        audit.close()
    return tmp_path / "logs"


def test_every_line_names_the_instance_that_wrote_it_in_both_files(logs: Path) -> None:
    for name in INSTANCES:
        for file in ("audit.jsonl", "security.jsonl"):
            lines = [json.loads(line) for line in (logs / name / file).read_text().splitlines()]
            assert lines, (name, file)
            assert {line["instance"] for line in lines} == {name}, (name, file)


def test_the_suppressed_refusals_summary_names_its_instance_too(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl", max_bytes=10**6, backups=1, refusals_per_ip=1, instance="gw-9")
    for _ in range(3):
        audit.record("auth.failure", outcome="denied", reason="bad", ip="198.51.100.1")
    audit.close()
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["auth.failure", "audit.suppressed"]
    assert {line["instance"] for line in lines} == {"gw-9"}


def test_a_glob_reads_every_instance_with_its_security_file_merged_by_time(logs: Path) -> None:
    result = invoke("tail", "-n", "100", "--json", "--log", str(logs / "*" / "audit.jsonl"))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 18
    assert [line["time"] for line in lines] == sorted(line["time"] for line in lines)
    assert {(line["instance"], line["event"]) for line in lines} == {
        (name, event) for name in INSTANCES for event in ("mcp.call", "auth.failure")
    }


def test_summary_counts_per_instance(logs: Path) -> None:
    data = as_json("summary", "--log", str(logs / "gw-*" / "*.jsonl"))
    assert data["entries"] == 18
    assert [(row["instance"], row["count"]) for row in data["instances"]] == [(n, 6) for n in INSTANCES]
    assert sorted(data["logs"]) == sorted(
        str(logs / n / f) for n in INSTANCES for f in ("audit.jsonl", "security.jsonl")
    )
    table = invoke("summary", "--log", str(logs / "gw-*" / "*.jsonl")).stdout
    assert "Instances" in table
    assert all(name in table for name in INSTANCES)


def test_log_is_repeatable_and_instance_filters(logs: Path) -> None:
    two = ["--log", str(logs / "gw-1" / "audit.jsonl"), "--audit-log", str(logs / "gw-3" / "audit.jsonl")]
    calls = as_json("calls", *two)
    assert calls["total"]["count"] == 6
    only = as_json("calls", *two, "--instance", "gw-3")
    assert only["total"]["count"] == 3
    assert {row["tool"] for row in only["groups"]} == {"t2", "t5", "t8"}
    failures = as_json("failures", *two)
    assert sum(row["instances"].get("gw-1", 0) for row in failures["groups"]) == 3
    assert sum(row["instances"].get("gw-3", 0) for row in failures["groups"]) == 3


def test_tail_shows_the_instance_and_follows_the_filter(logs: Path) -> None:
    result = invoke("tail", "-n", "100", "--instance", "gw-2", "--log", str(logs / "*" / "audit.jsonl"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 6, lines
    assert all("instance=gw-2" in line for line in lines), lines


def test_a_glob_that_matches_nothing_is_one_line_with_a_hint(logs: Path) -> None:
    result = invoke("summary", "--log", str(logs / "nope-*" / "audit.jsonl"))
    assert result.exit_code == 2
    assert "matches no file" in result.stderr
    assert "hint:" in result.stderr
