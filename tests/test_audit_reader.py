"""The one audit reader (mcp_bastion.audit_reader) under the `audit` CLI and the dashboard's /api/audit (Issue 10,
code health): rotated files oldest first, both logs merged by time, one glob filter language, pages by cursor."""

import json
from pathlib import Path
from typing import Any

from mcp_bastion.audit_reader import (
    Filter,
    Log,
    Scan,
    Window,
    entries,
    log_paths,
    read_page,
    rotated_files,
    with_security,
)
from mcp_bastion.dashboard.routes import _filter


def line(second: int, event: str, **fields: Any) -> str:
    return json.dumps({"time": f"2030-01-01T00:00:{second:02d}.000Z", "event": event, **fields}) + "\n"


def test_rotated_files_are_oldest_first_then_the_current_file_and_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    for name in ("audit.jsonl.1", "audit.jsonl.10", "audit.jsonl.2", "audit.jsonl", "audit.jsonl.bak", "x.jsonl.3"):
        (tmp_path / name).write_text("")
    (tmp_path / "audit.jsonl.3").mkdir()  # not a file: not a rotated log
    assert [p.name for p in rotated_files(log)] == ["audit.jsonl.10", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
    assert rotated_files(tmp_path / "absent.jsonl") == []


def test_both_logs_are_read_across_rotation_merged_by_time_with_bad_lines_counted(tmp_path: Path) -> None:
    calls, security = tmp_path / "audit.jsonl", tmp_path / "security.jsonl"
    (tmp_path / "audit.jsonl.1").write_text(line(1, "mcp.call") + "not json\n")
    calls.write_text(line(4, "mcp.call") + line(6, "mcp.call"))
    security.write_text(line(2, "auth.failure") + line(5, "auth.success") + '{"event": "no.time"}\n')
    scan = Scan([Log(p, rotated_files(p)) for p in (calls, security)], Window(since=None, until=None))
    assert [(e["time"][17:19], e["event"]) for _, e in entries(scan)] == [
        ("01", "mcp.call"),
        ("02", "auth.failure"),
        ("04", "mcp.call"),
        ("05", "auth.success"),
        ("06", "mcp.call"),
    ]
    assert (scan.read, scan.in_window, scan.malformed) == (7, 5, 2)
    assert scan.first_malformed == "audit.jsonl.1 line 2"


def test_one_filter_language_globs_per_field_and_exact_values_quoted() -> None:
    """The CLI's --server/--tool/... and the dashboard's query use the same globs; the dashboard's old `auth.`
    prefix is the glob `auth.*`; an exact value (a principal id) matches only itself, glob characters and all."""
    entry = {"event": "auth.success", "server": "toolbox", "principal": "ops*"}
    assert Filter({"event": ["auth.*"], "server": ["tool*", "github"]})(entry)
    assert not Filter({"event": ["auth.*"], "server": ["github"]})(entry)
    assert Filter({"principal": [Filter.exact("ops*")]})(entry)
    assert not Filter({"principal": [Filter.exact("ops*")]})({**entry, "principal": "opsX"})
    assert not Filter({"tool": ["*"]})(entry)  # a field the entry lacks matches no glob
    assert _filter({"event": "auth."})(entry)
    assert _filter({"event": "auth.*"})(entry)
    assert not _filter({"event": "auth"})(entry)  # no prefix without the dot or a glob
    assert Filter({})(entry)


def test_a_page_and_its_cursor_cover_both_files(tmp_path: Path) -> None:
    calls, security = tmp_path / "audit.jsonl", tmp_path / "security.jsonl"
    calls.write_text(line(1, "mcp.call") + line(3, "mcp.call"))
    security.write_text(line(2, "auth.failure"))
    events, cursor = read_page([calls, security], 10, None, Filter())
    assert [e["time"][17:19] for e in events] == ["01", "02", "03"]
    with security.open("a") as f:
        f.write(line(4, "auth.success") + line(5, "auth.failure"))
    events, _ = read_page([calls, security], 10, cursor, Filter({"event": ["auth.success"]}))
    assert [e["event"] for e in events] == ["auth.success"]


def test_several_instances_logs_from_globs_each_with_its_security_file_merged_by_time(tmp_path: Path) -> None:
    """Issue 12 item 6: a glob may also match the security files and rotated files; each is read once, as part of
    its log, and every instance's lines come out in time order."""
    for n in (1, 2):
        folder = tmp_path / f"gw{n}"
        folder.mkdir()
        (folder / "audit.jsonl.1").write_text(line(n, "mcp.call", instance=f"gw{n}"))
        (folder / "audit.jsonl").write_text(line(n + 2, "mcp.call", instance=f"gw{n}"))
        (folder / "security.jsonl").write_text(line(n + 4, "auth.failure", instance=f"gw{n}"))
    found, unmatched = log_paths([str(tmp_path / "gw*" / "*.jsonl*"), str(tmp_path / "none*"), "plain.jsonl"])
    assert found == [tmp_path / "gw1" / "audit.jsonl", tmp_path / "gw2" / "audit.jsonl", Path("plain.jsonl")]
    assert unmatched == [str(tmp_path / "none*")]
    logs = with_security(found[:2], named=tmp_path / "ignored-for-several.jsonl")
    assert logs == [tmp_path / f"gw{n}" / name for n in (1, 2) for name in ("audit.jsonl", "security.jsonl")]
    assert with_security(found[:1], named=tmp_path / "s.jsonl") == [found[0], tmp_path / "s.jsonl"]
    scan = Scan([Log(p, rotated_files(p)) for p in logs], Window())
    assert [(e["time"][17:19], e["instance"]) for _, e in entries(scan)] == [
        ("01", "gw1"),
        ("02", "gw2"),
        ("03", "gw1"),
        ("04", "gw2"),
        ("05", "gw1"),
        ("06", "gw2"),
    ]
    assert scan.as_json()["logs"] == [str(p) for p in logs]
