"""`audit`: answers to the operator's questions from the audit log (rotated files included).

Every command reads `AUDIT_LOG.N … AUDIT_LOG.1, AUDIT_LOG` (oldest first) as a stream, keeps the lines inside
`--since`/`--until`, skips (and counts) lines that are not audit entries, and prints a Rich table or, with
`--json`, one JSON object. Text from the log is never Rich markup and control characters are shown escaped, so
a crafted request cannot forge a line on the operator's terminal.

Security events live in a file of their own (SECURITY_LOG, by default `security.jsonl` next to AUDIT_LOG; Issue 9
item 8); every command reads both files, rotated ones included, merged by time, and `tail --follow` follows both.

Refusals past a client IP's quota are not written one by one but counted in an `audit.suppressed` line per IP
and window (Issue 8 item 8); `failures`, `denied`, `ratelimits` and `summary` unfold those counts, so their
totals are the number of refused requests, not of lines.
"""

import json
import math
import re
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn

import typer
from rich.table import Table
from rich.text import Text

from mcp_bastion.audit_reader import (
    WEIGHT,
    Entry,
    Follower,
    Scan,
    Window,
    by_time,
    entries,
    follow_all,
    iso,
    matches,
    open_log,
    parse_time,
    rotated_files,
    stream_entries,
    unfold,
)
from mcp_bastion.cli.base import EXIT_CONFIG, EnvFile, JsonFlag, cli, err, fail, out
from mcp_bastion.cli.output import MISSING, cell, emit_json, safe, text
from mcp_bastion.config import load_settings, security_log_for
from mcp_bastion.errors import ConfigError

audit_cli = typer.Typer(
    help="Answer the operator's questions from the audit log: who failed to authenticate, who was denied or "
    "rate-limited, which tools were called and how fast. Rotated files are read too.\n\n"
    "Example: mcp-bastion audit summary --since 24h",
    no_args_is_help=True,
)
cli.add_typer(audit_cli, name="audit")

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION = re.compile(r"(\d+)\s*([smhdw])")
ERROR_OUTCOMES = ("error", "tool_error", "cancelled")
TAIL_FIELDS = ("outcome", "ip", "principal", "server", "method", "tool", "reason", "latency_ms", "path", "request_id")

Since = Annotated[
    str | None,
    typer.Option("--since", help="Only entries from this point on: 15m, 24h, 7d, or an ISO time (UTC if no offset)."),
]
Until = Annotated[str | None, typer.Option("--until", help="Only entries up to this point (same forms as --since).")]
AuditLogPath = Annotated[
    Path | None,
    typer.Option("--audit-log", help="The audit file (default: AUDIT_LOG from the environment or --env-file)."),
]
Top = Annotated[int, typer.Option("--top", min=1, help="Rows per table (JSON lists every group, except summary).")]


# ---------------------------------------------------------------------------------------------------------------
# Reading


def die(message: str, hint: str) -> NoReturn:
    """`fail` for the type checker: one line with its hint, exit code 2."""
    fail(message, hint)
    raise typer.Exit(EXIT_CONFIG)  # unreachable: fail() exits


def parse_point(option: str, text: str | None, now: float) -> float | None:
    """`--since`/`--until`: a duration back from now (15m, 24h, 7d, 2w, 30s) or an ISO time."""
    if text is None:
        return None
    match = DURATION.fullmatch(text.strip().lower())
    if match:
        return now - int(match[1]) * UNITS[match[2]]
    stamp = parse_time(text)
    if stamp is None:
        die(f"{option} {text!r} is neither a duration nor an ISO time", "use e.g. 15m, 24h, 7d or 2025-05-01T12:00:00Z")
    return stamp


def resolve_log(audit_log: Path | None, env_file: Path) -> Path:
    """--audit-log, else AUDIT_LOG from the settings (flags > environment > --env-file > default)."""
    if audit_log is not None:
        return audit_log
    try:
        return load_settings(env_file).audit_log
    except ConfigError as exc:
        die(exc.message, f"fix {env_file} or pass --audit-log PATH")


def resolve_security_log(audit_log: Path, env_file: Path) -> Path:
    """SECURITY_LOG when the settings name one, else `security.jsonl` next to the audit log being read."""
    try:
        named = load_settings(env_file).security_log
    except ConfigError:
        named = None  # already reported when it matters (no --audit-log); a flag-given log needs no settings
    return named if named is not None else security_log_for(audit_log)


def log_files(path: Path, *, required: bool = True) -> list[Path]:
    """The rotated files, oldest (highest number) first, then the current file; exit 2 when there is none (and
    one is required)."""
    if path.is_dir():
        die(f"the audit log {path} is a directory", "pass the file, e.g. --audit-log logs/audit.jsonl")
    try:
        files = rotated_files(path)
    except OSError as exc:
        die(f"cannot list {path.parent}: {exc.strerror}", "run as the user the gateway runs as")
    if not files and required:
        die(
            f"no audit log at {path}",
            "the gateway writes it on its first event; pass --audit-log PATH or set AUDIT_LOG (see --env-file)",
        )
    return files


def start_scan(audit_log: Path | None, env_file: Path, since: str | None, until: str | None) -> Scan:
    now = time.time()
    window = Window(parse_point("--since", since, now), parse_point("--until", until, now))
    path = resolve_log(audit_log, env_file)
    security = resolve_security_log(path, env_file)
    streams = [log_files(path, required=False), log_files(security, required=False)]
    if not any(streams):
        log_files(path)  # exits with the message and hint for a missing log
    return Scan(path, security, streams, window, opener=open_or_die)


def open_or_die(path: Path) -> IO[bytes] | None:
    """The reader's opener for a command: a file that exists but cannot be read is one error line, exit 2."""
    try:
        return open_log(path)
    except PermissionError:
        die(f"cannot read {path}: permission denied", "the audit log is mode 0600: run as the gateway's user")
    except OSError as exc:
        die(f"cannot read {path}: {exc.strerror}", "check the path given by --audit-log or AUDIT_LOG")


def warn_skipped(scan: Scan) -> None:
    """One line on stderr when lines were skipped (stdout stays clean for --json)."""
    if scan.malformed:
        plural = "s" if scan.malformed > 1 else ""
        err.print(
            Text(f"warning: skipped {scan.malformed} malformed line{plural} (first: {scan.first_malformed})"),
            style="yellow",
            soft_wrap=True,
        )


# ---------------------------------------------------------------------------------------------------------------
# Aggregation


class Group:
    """Counts of one group of entries, when it was first and last seen, and (if timed) its latencies."""

    __slots__ = ("count", "first", "last", "latencies", "tally")

    def __init__(self, timed: bool = False) -> None:
        self.count = 0
        self.first = math.inf
        self.last = -math.inf
        self.tally: dict[str, Counter[str]] = {}
        self.latencies: list[float] | None = [] if timed else None

    def add(self, stamp: float, entry: dict[str, Any], *tallied: str) -> None:
        weight: int = entry.get(WEIGHT, 1)
        self.count += weight
        if stamp < self.first:
            self.first = stamp
        if stamp > self.last:
            self.last = stamp
        for key in tallied:
            value = entry.get(key)
            if value is not None:
                counter = self.tally.get(key)
                if counter is None:
                    counter = self.tally[key] = Counter()
                counter[value if type(value) is str else text(value)] += weight
        if self.latencies is not None:
            latency = entry.get("latency_ms")
            if isinstance(latency, (int, float)) and not isinstance(latency, bool):
                self.latencies.append(float(latency))

    def counts(self, key: str) -> dict[str, int]:
        return dict(self.tally.get(key, Counter()).most_common())

    def seen(self) -> dict[str, Any]:
        return {"count": self.count, "first": iso(self.first), "last": iso(self.last)}


def bucket(groups: dict[Any, Group], key: Any) -> Group:
    group = groups.get(key)
    if group is None:
        group = groups[key] = Group()
    return group


def grouped(
    items: Iterable[Entry], key: Callable[[dict[str, Any]], tuple[str, ...]], *tallied: str, timed: bool = False
) -> list[tuple[tuple[str, ...], Group]]:
    """Group entries by `key`, biggest group first (ties: most recent first)."""
    groups: dict[tuple[str, ...], Group] = {}
    for stamp, entry in items:
        k = key(entry)
        group = groups.get(k)
        if group is None:
            group = groups[k] = Group(timed)
        group.add(stamp, entry, *tallied)
    return sorted(groups.items(), key=lambda kv: (-kv[1].count, -kv[1].last, kv[0]))


def percentile(values: list[float] | None, pct: float) -> float | None:
    """Nearest-rank percentile (p50 of [1, 2, 3, 4] is 2); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def of(*events: str) -> Callable[[Iterable[Entry]], Iterator[Entry]]:
    wanted = frozenset(events)

    def keep(items: Iterable[Entry]) -> Iterator[Entry]:
        return (item for item in items if item[1]["event"] in wanted)

    return keep


def field_of(entry: dict[str, Any], key: str) -> str:
    return text(entry.get(key))


# ---------------------------------------------------------------------------------------------------------------
# Output


def caption(scan: Scan) -> str:
    where = []
    for current, files in zip((scan.path, scan.security_path), scan.streams, strict=True):
        if files:
            rotated = len(files) - (1 if current in files else 0)
            where.append(f"{current}" + (f" (+{rotated} rotated)" if rotated else ""))
    parts = [f"{scan.in_window} entries in " + " and ".join(where)]
    if scan.window.since is not None:
        parts.append(f"since {iso(scan.window.since)}")
    if scan.window.until is not None:
        parts.append(f"until {iso(scan.window.until)}")
    return ", ".join(parts)


def show(table: Table, rows: int, top: int, scan: Scan, empty: str) -> None:
    """Print a table (or a one-line 'nothing found'), its caption, and how many rows were left out."""
    warn_skipped(scan)
    if rows == 0:
        out.print(Text(f"{empty} ({caption(scan)})"), soft_wrap=True)
        return
    table.caption = caption(scan)
    out.print(table)
    if rows > top:
        out.print(Text(f"… {rows - top} more rows (use --top {rows} or --json)", style="dim"), soft_wrap=True)


def outcome_style(outcome: object) -> str:
    if outcome == "ok":
        return "green"
    if outcome in ("denied", "forbidden"):
        return "red"
    if outcome in ERROR_OUTCOMES:
        return "yellow"
    return ""


def ms(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


# ---------------------------------------------------------------------------------------------------------------
# Commands


@audit_cli.command("failures")
def audit_failures(
    since: Since = None,
    until: Until = None,
    top: Top = 20,
    as_json: JsonFlag = False,
    audit_log: AuditLogPath = None,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Failed authentication (auth.failure, auth.forbidden) grouped by client IP and reason.

    Example: mcp-bastion audit failures --since 24h
    """
    scan = start_scan(audit_log, env_file, since, until)
    groups = grouped(
        of("auth.failure", "auth.forbidden")(unfold(entries(scan))),
        lambda e: (field_of(e, "ip"), field_of(e, "reason"), e["event"]),
        "principal",
        "path",
    )
    rows = [
        {
            "ip": k[0],
            "reason": k[1],
            "event": k[2],
            **g.seen(),
            "principals": g.counts("principal"),
            "paths": g.counts("path"),
        }
        for k, g in groups
    ]
    if as_json:
        warn_skipped(scan)
        emit_json({"command": "failures", **scan.as_json(), "total": sum(r["count"] for r in rows), "groups": rows})
        return
    table = Table("IP", "reason", "event", "count", "last seen", "principals", title="Failed authentication")
    for row in rows[:top]:
        table.add_row(
            cell(row["ip"], "bold"),
            cell(row["reason"]),
            cell(row["event"]),
            cell(row["count"], "red"),
            cell(row["last"]),
            cell(", ".join(row["principals"]) or MISSING),
        )
    show(table, len(rows), top, scan, "No failed authentication")


@audit_cli.command("denied")
def audit_denied(
    since: Since = None,
    until: Until = None,
    top: Top = 20,
    as_json: JsonFlag = False,
    audit_log: AuditLogPath = None,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Requests refused before authentication (ip.denied: not in ALLOWED_IPS; origin.denied: foreign Origin or
    Host), by client IP.

    Example: mcp-bastion audit denied --since 7d --json
    """
    scan = start_scan(audit_log, env_file, since, until)
    groups = grouped(
        of("ip.denied", "origin.denied")(unfold(entries(scan))),
        lambda e: (field_of(e, "ip"),),
        "event",
        "reason",
        "path",
    )
    rows = [
        {
            "ip": k[0],
            **g.seen(),
            "events": g.counts("event"),
            "reasons": g.counts("reason"),
            "paths": g.counts("path"),
        }
        for k, g in groups
    ]
    if as_json:
        warn_skipped(scan)
        emit_json({"command": "denied", **scan.as_json(), "total": sum(r["count"] for r in rows), "groups": rows})
        return
    table = Table("IP", "count", "ip.denied", "origin.denied", "reasons", "last seen", title="Denied requests")
    for row in rows[:top]:
        table.add_row(
            cell(row["ip"], "bold"),
            cell(row["count"], "red"),
            cell(row["events"].get("ip.denied", 0)),
            cell(row["events"].get("origin.denied", 0)),
            cell(", ".join(f"{r} ({n})" for r, n in row["reasons"].items()) or MISSING),
            cell(row["last"]),
        )
    show(table, len(rows), top, scan, "No denied requests")


@audit_cli.command("ratelimits")
def audit_ratelimits(
    since: Since = None,
    until: Until = None,
    top: Top = 20,
    as_json: JsonFlag = False,
    audit_log: AuditLogPath = None,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Rate limit violations (ratelimit.exceeded) by client IP, principal and limit (per-ip, per-token, or the
    lockout after too many failed authentications).

    Example: mcp-bastion audit ratelimits --since 1h
    """
    scan = start_scan(audit_log, env_file, since, until)
    groups = grouped(
        of("ratelimit.exceeded")(unfold(entries(scan))),
        lambda e: (field_of(e, "ip"), field_of(e, "principal"), field_of(e, "reason")),
        "path",
    )
    rows = [{"ip": k[0], "principal": k[1], "reason": k[2], **g.seen(), "paths": g.counts("path")} for k, g in groups]
    if as_json:
        warn_skipped(scan)
        emit_json({"command": "ratelimits", **scan.as_json(), "total": sum(r["count"] for r in rows), "groups": rows})
        return
    table = Table("IP", "principal", "limit", "count", "first seen", "last seen", title="Rate limit violations")
    for row in rows[:top]:
        table.add_row(
            cell(row["ip"], "bold"),
            cell(row["principal"]),
            cell(row["reason"]),
            cell(row["count"], "red"),
            cell(row["first"]),
            cell(row["last"]),
        )
    show(table, len(rows), top, scan, "No rate limit violations")


@audit_cli.command("calls")
def audit_calls(
    server: Annotated[list[str] | None, typer.Option("--server", help="Only this server (glob; repeatable).")] = None,
    tool: Annotated[list[str] | None, typer.Option("--tool", help="Only this tool (glob; repeatable).")] = None,
    principal: Annotated[
        list[str] | None, typer.Option("--principal", help="Only this token name (glob; repeatable).")
    ] = None,
    method: Annotated[
        list[str] | None, typer.Option("--method", help="Only this MCP method, e.g. tools/call (glob; repeatable).")
    ] = None,
    outcome: Annotated[
        list[str] | None,
        typer.Option("--outcome", help="Only this outcome: ok, error, tool_error, forbidden, cancelled (repeatable)."),
    ] = None,
    since: Since = None,
    until: Until = None,
    top: Top = 20,
    as_json: JsonFlag = False,
    audit_log: AuditLogPath = None,
    env_file: EnvFile = Path(".env"),
) -> None:
    """MCP calls (mcp.call) counted by server, method, tool and principal, with outcomes and latency p50/p95.

    Example: mcp-bastion audit calls --server github --tool 'get_*' --since 24h
    """
    scan = start_scan(audit_log, env_file, since, until)

    def wanted(item: Entry) -> bool:
        entry = item[1]
        return (
            matches(entry.get("server"), server)
            and matches(entry.get("tool"), tool)
            and matches(entry.get("principal"), principal)
            and matches(entry.get("method"), method)
            and matches(entry.get("outcome"), outcome)
        )

    groups = grouped(
        filter(wanted, of("mcp.call")(entries(scan))),
        lambda e: (field_of(e, "server"), field_of(e, "method"), field_of(e, "tool"), field_of(e, "principal")),
        "outcome",
        timed=True,
    )
    all_outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    for _, group in groups:
        all_outcomes.update(group.tally.get("outcome", Counter()))
        latencies += group.latencies or []
    rows = [
        {
            "server": k[0],
            "method": k[1],
            "tool": k[2],
            "principal": k[3],
            **g.seen(),
            "outcomes": g.counts("outcome"),
            "errors": g.count - g.counts("outcome").get("ok", 0),
            "p50_ms": percentile(g.latencies, 50),
            "p95_ms": percentile(g.latencies, 95),
            "max_ms": max(g.latencies or [], default=None),
        }
        for k, g in groups
    ]
    totals: dict[str, Any] = {
        "count": sum(g.count for _, g in groups),
        "outcomes": dict(all_outcomes.most_common()),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
    }
    if as_json:
        warn_skipped(scan)
        emit_json({"command": "calls", **scan.as_json(), "total": totals, "groups": rows})
        return
    table = Table(
        "server", "method", "tool", "principal", "calls", "outcomes", "p50 ms", "p95 ms", "last", title="MCP calls"
    )
    for row in rows[:top]:
        outcomes = Text()
        for index, (name, count) in enumerate(row["outcomes"].items()):
            outcomes.append(("  " if index else "") + f"{safe(name)} {count}", style=outcome_style(name))
        table.add_row(
            cell(row["server"], "bold"),
            cell(row["method"]),
            cell(row["tool"]),
            cell(row["principal"]),
            cell(row["count"]),
            outcomes,
            cell(ms(row["p50_ms"])),
            cell(ms(row["p95_ms"])),
            cell(row["last"]),
        )
    if rows:
        table.add_section()
        table.add_row(
            cell("all", "bold"),
            "",
            "",
            "",
            cell(totals["count"], "bold"),
            cell("  ".join(f"{k} {v}" for k, v in totals["outcomes"].items())),
            cell(ms(totals["p50_ms"])),
            cell(ms(totals["p95_ms"])),
            "",
        )
    show(table, len(rows), top, scan, "No MCP calls")


@audit_cli.command("summary")
def audit_summary(
    since: Since = None,
    until: Until = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many IPs, principals and errors to list.")] = 10,
    as_json: JsonFlag = False,
    audit_log: AuditLogPath = None,
    env_file: EnvFile = Path(".env"),
) -> None:
    """An overview of a time window: entries per event and outcome, the busiest IPs and principals (with how
    often each was refused), and the errors (failed calls, crashed servers).

    Example: mcp-bastion audit summary --since 24h
    """
    scan = start_scan(audit_log, env_file, since, until)
    events: dict[str, Group] = {}
    ips: dict[str, Group] = {}
    principals: dict[str, Group] = {}
    errors: dict[tuple[str, ...], Group] = {}
    first, last = math.inf, -math.inf
    for stamp, entry in unfold(entries(scan)):
        if stamp < first:
            first = stamp
        if stamp > last:
            last = stamp
        event = entry["event"]
        bucket(events, event).add(stamp, entry, "outcome")
        if entry.get("ip") is not None:
            bucket(ips, text(entry["ip"])).add(stamp, entry, "outcome")
        if entry.get("principal") is not None:
            bucket(principals, text(entry["principal"])).add(stamp, entry, "outcome")
        if event == "server.crash" or entry.get("outcome") in ERROR_OUTCOMES:
            detail = field_of(entry, "reason") if event == "server.crash" else field_of(entry, "code")
            key = (event, field_of(entry, "outcome"), field_of(entry, "server"), field_of(entry, "tool"), detail)
            bucket(errors, key).add(stamp, entry)

    def refused(group: Group) -> int:
        outcomes = group.counts("outcome")
        return outcomes.get("denied", 0) + outcomes.get("forbidden", 0)

    def busiest(groups: dict[str, Group], name: str) -> list[dict[str, Any]]:
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1].count, kv[0]))[:top]
        return [{name: k, "count": g.count, "refused": refused(g), "last": iso(g.last)} for k, g in ranked]

    event_rows: list[dict[str, Any]] = [
        {"event": name, "count": g.count, "outcomes": g.counts("outcome")}
        for name, g in sorted(events.items(), key=lambda kv: (-kv[1].count, kv[0]))
    ]
    error_rows = [
        {"event": k[0], "outcome": k[1], "server": k[2], "tool": k[3], "detail": k[4], **g.seen()}
        for k, g in sorted(errors.items(), key=lambda kv: (-kv[1].count, -kv[1].last, kv[0]))[:top]
    ]
    data = {
        "command": "summary",
        **scan.as_json(),
        "first": iso(first) if scan.in_window else None,
        "last": iso(last) if scan.in_window else None,
        "events": event_rows,
        "top_ips": busiest(ips, "ip"),
        "top_principals": busiest(principals, "principal"),
        "errors": error_rows,
    }
    warn_skipped(scan)
    if as_json:
        emit_json(data)
        return
    if not scan.in_window:
        out.print(Text(f"No audit entries ({caption(scan)})"), soft_wrap=True)
        return
    out.print(Text(f"{caption(scan)}; first {data['first']}, last {data['last']}", style="bold"), soft_wrap=True)
    table = Table("event", "count", "outcomes", title="Events")
    for row in event_rows:
        outcomes = Text()
        for index, (name, count) in enumerate(row["outcomes"].items()):
            outcomes.append(("  " if index else "") + f"{safe(name)} {count}", style=outcome_style(name))
        table.add_row(cell(row["event"]), cell(row["count"]), outcomes)
    out.print(table)
    for title, rows, name in (
        ("Top IPs", data["top_ips"], "ip"),
        ("Top principals", data["top_principals"], "principal"),
    ):
        listing = Table(name, "entries", "refused", "last seen", title=title)
        for row in rows:
            listing.add_row(cell(row[name], "bold"), cell(row["count"]), cell(row["refused"], "red"), cell(row["last"]))
        out.print(listing)
    if error_rows:
        failing = Table("event", "outcome", "server", "tool", "code / reason", "count", "last seen", title="Errors")
        for row in error_rows:
            failing.add_row(
                cell(row["event"]),
                cell(row["outcome"], "yellow"),
                cell(row["server"]),
                cell(row["tool"]),
                cell(row["detail"]),
                cell(row["count"]),
                cell(row["last"]),
            )
        out.print(failing)
    else:
        out.print(Text("No errors.", style="green"))


# ---------------------------------------------------------------------------------------------------------------
# tail


def tail_line(entry: dict[str, Any]) -> Text:
    """One entry as one terminal line: time, event, then the known fields, then the others."""
    line = Text()
    line.append(safe(entry.get("time")), style="dim")
    line.append("  ")
    line.append(safe(entry.get("event")), style="bold " + outcome_style(entry.get("outcome")))
    rest = [k for k in TAIL_FIELDS if k in entry] + [
        k for k in entry if k not in TAIL_FIELDS and k not in ("time", "event")
    ]
    for key in rest:
        value = entry[key]
        if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
            value = json.dumps(value, ensure_ascii=False)  # quoted; \r \n and other controls escaped by JSON
        line.append(f"  {safe(key)}=")
        line.append(safe(value))
    return line


class Printer:
    """Prints entries that pass the --event filter, as lines or JSON lines, flushing each."""

    def __init__(self, as_json: bool, events: list[str] | None) -> None:
        self.as_json = as_json
        self.events = events
        self.printed = 0

    def wants(self, entry: dict[str, Any]) -> bool:
        return matches(entry.get("event"), self.events)

    def __call__(self, entry: dict[str, Any]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(entry) + "\n")
            sys.stdout.flush()
        else:
            out.print(tail_line(entry), soft_wrap=True)
            out.file.flush()
        self.printed += 1


@audit_cli.command("tail")
def audit_tail(
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many recent entries to print first.")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing entries as they are written.")] = False,
    for_seconds: Annotated[
        float | None, typer.Option("--for", min=0, help="With --follow: stop after this many seconds.")
    ] = None,
    event: Annotated[
        list[str] | None, typer.Option("--event", "-e", help="Only these events (glob, e.g. 'auth.*'; repeatable).")
    ] = None,
    since: Since = None,
    until: Until = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line (JSON Lines).")] = False,
    audit_log: AuditLogPath = None,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Print the most recent entries; with --follow, keep printing new ones (across rotation) until Ctrl-C or
    --for SECONDS.

    Example: mcp-bastion audit tail --follow --event 'auth.*'
    """
    if for_seconds is not None and not follow:
        die("--for only applies with --follow", "add --follow, e.g. mcp-bastion audit tail --follow --for 60")
    scan = start_scan(audit_log, env_file, since, until)
    printer = Printer(as_json, event)
    followers: list[Follower] = []
    try:
        recents = [
            tail_start(scan, current, files, printer, lines, followers)
            for current, files in zip((scan.path, scan.security_path), scan.streams, strict=True)
        ]
        for _, entry in deque(by_time(recents), maxlen=lines):
            printer(entry)
        warn_skipped(scan)
        if not follow:
            return
        watched = " and ".join(str(f.path) for f in followers)
        err.print(Text(f"following {watched} (Ctrl-C to stop)", style="dim"), soft_wrap=True)
        err.file.flush()
        batch: list[Entry] = []
        for follower in followers:
            follower.sink = batch.append
        malformed = scan.malformed
        deadline = None if for_seconds is None else time.monotonic() + for_seconds
        follow_all(followers, batch, lambda item: printer(item[1]) if printer.wants(item[1]) else None, deadline)
        if scan.malformed > malformed:
            warn_skipped(scan)
    except KeyboardInterrupt:
        pass  # Ctrl-C ends a follow: not an error
    finally:
        for follower in followers:
            follower.close()


def tail_start(
    scan: Scan, current: Path, files: list[Path], printer: Printer, lines: int, followers: list[Follower]
) -> deque[Entry]:
    """The last `lines` wanted entries of one log (rotated files, then the current file), and a follower (added to
    `followers`) that carries on from exactly where the current file was read."""
    recent: deque[Entry] = deque(maxlen=lines)

    def keep(item: Entry) -> None:
        if printer.wants(item[1]):
            recent.append(item)

    for item in stream_entries(scan, [f for f in files if f != current]):
        keep(item)
    follower = Follower(current, scan.opener(current), scan, keep)
    followers.append(follower)
    follower.pump()
    return recent
