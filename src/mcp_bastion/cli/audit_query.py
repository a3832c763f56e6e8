"""`audit`: answers to the operator's questions from the audit log (rotated files included).

Every command reads `AUDIT_LOG.N … AUDIT_LOG.1, AUDIT_LOG` (oldest first) as a stream, keeps the lines inside
`--since`/`--until`, skips (and counts) lines that are not audit entries, and prints a Rich table or, with
`--json`, one JSON object. Text from the log is never Rich markup and control characters are shown escaped, so
a crafted request cannot forge a line on the operator's terminal.

Security events live in a file of their own (SECURITY_LOG, by default `security.jsonl` next to AUDIT_LOG; Issue 9
item 8); every command reads both files, rotated ones included, merged by time, and `tail --follow` follows both.

Several instances behind one balancer write a pair of files each (Issue 12 item 6): `--log` is repeatable and takes
globs (`--log 'logs/*/audit.jsonl'`), every log is read with the security file beside it, all merged by time, and
each line's `instance` says which gateway wrote it.

Refusals past a client IP's quota are not written one by one but counted in an `audit.suppressed` line per IP
and window (Issue 8 item 8); `failures`, `denied`, `ratelimits` and `summary` unfold those counts, so their
totals are the number of refused requests, not of lines.
"""

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from mcp_bastion.audit_reader import (
    WEIGHT,
    Entry,
    Filter,
    Log,
    Scan,
    Window,
    entries,
    iso,
    log_paths,
    open_log,
    parse_time,
    rotated_files,
    unfold,
    with_security,
)
from mcp_bastion.cli.base import EnvFile, JsonFlag, cli, err, fail, out
from mcp_bastion.cli.output import MISSING, Col, Row, emit_json, new_table, print_table, safe, text
from mcp_bastion.config import load_settings
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

Since = Annotated[
    str | None,
    typer.Option("--since", help="Only entries from this point on: 15m, 24h, 7d, or an ISO time (UTC if no offset)."),
]
Until = Annotated[str | None, typer.Option("--until", help="Only entries up to this point (same forms as --since).")]
AuditLogPath = Annotated[
    list[str] | None,
    typer.Option(
        "--log",
        "--audit-log",
        help="An audit file or a quoted glob, repeatable: several instances' logs are read as one (default: "
        "AUDIT_LOG from the environment or --env-file). The security file beside each is read too.",
    ),
]
Instances = Annotated[
    list[str] | None, typer.Option("--instance", help="Only lines of this instance (INSTANCE_ID; glob; repeatable).")
]
Top = Annotated[int, typer.Option("--top", min=1, help="Rows per table (JSON lists every group, except summary).")]


# ---------------------------------------------------------------------------------------------------------------
# Reading


def parse_point(option: str, text: str | None, now: float) -> float | None:
    """`--since`/`--until`: a duration back from now (15m, 24h, 7d, 2w, 30s) or an ISO time."""
    if text is None:
        return None
    match = DURATION.fullmatch(text.strip().lower())
    if match:
        return now - int(match[1]) * UNITS[match[2]]
    stamp = parse_time(text)
    if stamp is None:
        fail(
            f"{option} {text!r} is neither a duration nor an ISO time", "use e.g. 15m, 24h, 7d or 2025-05-01T12:00:00Z"
        )
    return stamp


def resolve_logs(given: list[str] | None, env_file: Path) -> list[Path]:
    """--log (paths and globs), else AUDIT_LOG from the settings (flags > environment > --env-file > default)."""
    if not given:
        try:
            return [load_settings(env_file).audit_log]
        except ConfigError as exc:
            fail(exc.message, f"fix {env_file} or pass --log PATH")
    try:
        found, unmatched = log_paths(given)
    except OSError as exc:
        fail(f"cannot list the files of {given[0]}: {exc.strerror}", "run as the user the gateway runs as")
    if unmatched:
        fail(f"--log {unmatched[0]!r} matches no file", "quote the glob and check the path, e.g. 'logs/*/audit.jsonl'")
    return found


def resolve_security_log(env_file: Path) -> Path | None:
    """SECURITY_LOG when the settings name one (read beside a single log); None: `security.jsonl` beside each."""
    try:
        return load_settings(env_file).security_log
    except ConfigError:
        return None  # already reported when it matters (no --log); a flag-given log needs no settings


def log_files(path: Path, *, required: bool = True) -> list[Path]:
    """The rotated files, oldest (highest number) first, then the current file; exit 2 when there is none (and
    one is required)."""
    if path.is_dir():
        fail(f"the audit log {path} is a directory", "pass the file, e.g. --log logs/audit.jsonl")
    try:
        files = rotated_files(path)
    except OSError as exc:
        fail(f"cannot list {path.parent}: {exc.strerror}", "run as the user the gateway runs as")
    if not files and required:
        fail(
            f"no audit log at {path}",
            "the gateway writes it on its first event; pass --log PATH or set AUDIT_LOG (see --env-file)",
        )
    return files


def start_scan(audit_log: list[str] | None, env_file: Path, since: str | None, until: str | None) -> Scan:
    now = time.time()
    window = Window(parse_point("--since", since, now), parse_point("--until", until, now))
    paths = resolve_logs(audit_log, env_file)
    logs = [Log(path, log_files(path, required=False)) for path in with_security(paths, resolve_security_log(env_file))]
    if not any(log.files for log in logs):
        log_files(paths[0])  # exits with the message and hint for a missing log
    return Scan(logs, window, opener=open_or_die)


def open_or_die(path: Path) -> IO[bytes] | None:
    """The reader's opener for a command: a file that exists but cannot be read is one error line, exit 2."""
    try:
        return open_log(path)
    except PermissionError:
        fail(f"cannot read {path}: permission denied", "the audit log is mode 0600: run as the gateway's user")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", "check the path given by --audit-log or AUDIT_LOG")


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
    for log in scan.logs:
        if log.files:
            rotated = len(log.files) - (1 if log.path in log.files else 0)
            where.append(f"{log.path}" + (f" (+{rotated} rotated)" if rotated else ""))
    listed = " and ".join(where) if len(where) <= 2 else ", ".join(where[:-1]) + " and " + where[-1]
    parts = [f"{scan.in_window} entries in {listed}"]
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
    print_table(table)
    if rows > top:
        out.print(Text(f"… {rows - top} more rows (use --top {rows} or --json)", style="dim"), soft_wrap=True)


def report(
    command: str, scan: Scan, rows: list[Row], columns: list[Col], *, as_json: bool, top: int, **json: Any
) -> Table | None:
    """A grouped answer: with --json the whole document (every group, `total` unless given), else the table of the
    first `top` rows, returned so a caller can add a footer before `show` prints it (None when JSON was printed)."""
    if as_json:
        warn_skipped(scan)
        total = json.pop("total", sum(r["count"] for r in rows))
        emit_json({"command": command, **scan.as_json(), "total": total, "groups": rows, **json})
        return None
    table = new_table(*columns, title=json.pop("title", None))
    for row in rows[:top]:
        table.add_row(*(column.cell(row) for column in columns))
    return table


def outcomes_cell(outcomes: dict[str, int]) -> Text:
    """Outcome counts, each in its colour."""
    line = Text()
    for index, (name, count) in enumerate(outcomes.items()):
        line.append(("  " if index else "") + f"{safe(name)} {count}", style=outcome_style(name))
    return line


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


def call_row(key: tuple[str, ...], group: Group) -> Row:
    outcomes = group.counts("outcome")
    return {
        "server": key[0],
        "method": key[1],
        "tool": key[2],
        "principal": key[3],
        **group.seen(),
        "outcomes": outcomes,
        "errors": group.count - outcomes.get("ok", 0),
        "p50_ms": percentile(group.latencies, 50),
        "p95_ms": percentile(group.latencies, 95),
        "max_ms": max(group.latencies or [], default=None),
    }


def call_totals(groups: list[tuple[tuple[str, ...], Group]]) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    for _, group in groups:
        outcomes.update(group.tally.get("outcome", Counter()))
        latencies += group.latencies or []
    return {
        "count": sum(g.count for _, g in groups),
        "outcomes": dict(outcomes.most_common()),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
    }


CALL_COLUMNS = [
    Col("server", "server", "bold"),
    Col("method", "method"),
    Col("tool", "tool"),
    Col("principal", "principal"),
    Col("calls", "count"),
    Col("outcomes", lambda row: outcomes_cell(row["outcomes"])),
    Col("p50 ms", lambda row: ms(row["p50_ms"])),
    Col("p95 ms", lambda row: ms(row["p95_ms"])),
    Col("last", "last"),
]


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
        "instance",
    )
    rows = [
        {
            "ip": k[0],
            "reason": k[1],
            "event": k[2],
            **g.seen(),
            "principals": g.counts("principal"),
            "paths": g.counts("path"),
            "instances": g.counts("instance"),
        }
        for k, g in groups
    ]
    columns = [
        Col("IP", "ip", "bold"),
        Col("reason", "reason"),
        Col("event", "event"),
        Col("count", "count", "red"),
        Col("last seen", "last"),
        Col("principals", lambda row: ", ".join(row["principals"]) or MISSING),
    ]
    table = report("failures", scan, rows, columns, as_json=as_json, top=top, title="Failed authentication")
    if table is None:
        return
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
        "instance",
    )
    rows = [
        {
            "ip": k[0],
            **g.seen(),
            "events": g.counts("event"),
            "reasons": g.counts("reason"),
            "paths": g.counts("path"),
            "instances": g.counts("instance"),
        }
        for k, g in groups
    ]
    columns = [
        Col("IP", "ip", "bold"),
        Col("count", "count", "red"),
        Col("ip.denied", lambda row: row["events"].get("ip.denied", 0)),
        Col("origin.denied", lambda row: row["events"].get("origin.denied", 0)),
        Col("reasons", lambda row: ", ".join(f"{r} ({n})" for r, n in row["reasons"].items()) or MISSING),
        Col("last seen", "last"),
    ]
    table = report("denied", scan, rows, columns, as_json=as_json, top=top, title="Denied requests")
    if table is None:
        return
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
        "instance",
    )
    rows = [
        {
            "ip": k[0],
            "principal": k[1],
            "reason": k[2],
            **g.seen(),
            "paths": g.counts("path"),
            "instances": g.counts("instance"),
        }
        for k, g in groups
    ]
    columns = [
        Col("IP", "ip", "bold"),
        Col("principal", "principal"),
        Col("limit", "reason"),
        Col("count", "count", "red"),
        Col("first seen", "first"),
        Col("last seen", "last"),
    ]
    table = report("ratelimits", scan, rows, columns, as_json=as_json, top=top, title="Rate limit violations")
    if table is None:
        return
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
    instance: Instances = None,
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
    only = Filter(
        {
            "server": server,
            "tool": tool,
            "principal": principal,
            "method": method,
            "outcome": outcome,
            "instance": instance,
        }
    )
    groups = grouped(
        (item for item in of("mcp.call")(entries(scan)) if only(item[1])),
        lambda e: (field_of(e, "server"), field_of(e, "method"), field_of(e, "tool"), field_of(e, "principal")),
        "outcome",
        timed=True,
    )
    rows = [call_row(k, g) for k, g in groups]
    totals = call_totals(groups)
    table = report("calls", scan, rows, CALL_COLUMNS, as_json=as_json, top=top, total=totals, title="MCP calls")
    if table is None:
        return
    if rows:
        table.add_section()
        footer = {**totals, "server": "all", "method": "", "tool": "", "principal": "", "last": ""}
        table.add_row(*(column.cell(footer) for column in CALL_COLUMNS))
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
    found = Summary(top).read(unfold(entries(scan)))
    data = {"command": "summary", **scan.as_json(), **found}  # the scan's counts are final once it was read
    warn_skipped(scan)
    if as_json:
        emit_json(data)
        return
    if not scan.in_window:
        out.print(Text(f"No audit entries ({caption(scan)})"), soft_wrap=True)
        return
    out.print(Text(f"{caption(scan)}; first {data['first']}, last {data['last']}", style="bold"), soft_wrap=True)
    print_rows(data["events"], EVENT_COLUMNS, title="Events")
    print_rows(data["top_ips"], busiest_columns("ip"), title="Top IPs")
    print_rows(data["top_principals"], busiest_columns("principal"), title="Top principals")
    if len(data["instances"]) > 1:
        print_rows(data["instances"], INSTANCE_COLUMNS, title="Instances")
    if data["errors"]:
        print_rows(data["errors"], ERROR_COLUMNS, title="Errors")
    else:
        out.print(Text("No errors.", style="green"))


class Summary:
    """What `summary` counts: entries per event, per IP and per principal, and the errors, in one pass."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.events: dict[str, Group] = {}
        self.ips: dict[str, Group] = {}
        self.principals: dict[str, Group] = {}
        self.instances: dict[str, Group] = {}
        self.errors: dict[tuple[str, ...], Group] = {}
        self.first, self.last = math.inf, -math.inf

    def read(self, items: Iterable[Entry]) -> dict[str, Any]:
        for stamp, entry in items:
            self.add(stamp, entry)
        seen = self.first <= self.last
        return {
            "first": iso(self.first) if seen else None,
            "last": iso(self.last) if seen else None,
            "events": [
                {"event": name, "count": g.count, "outcomes": g.counts("outcome")}
                for name, g in sorted(self.events.items(), key=lambda kv: (-kv[1].count, kv[0]))
            ],
            "top_ips": self.busiest(self.ips, "ip"),
            "top_principals": self.busiest(self.principals, "principal"),
            "instances": [{"instance": k, **g.seen()} for k, g in sorted(self.instances.items())],
            "errors": [
                {"event": k[0], "outcome": k[1], "server": k[2], "tool": k[3], "detail": k[4], **g.seen()}
                for k, g in sorted(self.errors.items(), key=lambda kv: (-kv[1].count, -kv[1].last, kv[0]))[: self.top]
            ],
        }

    def add(self, stamp: float, entry: dict[str, Any]) -> None:
        self.first, self.last = min(self.first, stamp), max(self.last, stamp)
        event = entry["event"]
        bucket(self.events, event).add(stamp, entry, "outcome")
        if entry.get("ip") is not None:
            bucket(self.ips, text(entry["ip"])).add(stamp, entry, "outcome")
        if entry.get("principal") is not None:
            bucket(self.principals, text(entry["principal"])).add(stamp, entry, "outcome")
        if entry.get("instance") is not None:
            bucket(self.instances, text(entry["instance"])).add(stamp, entry)
        if event == "server.crash" or entry.get("outcome") in ERROR_OUTCOMES:
            detail = field_of(entry, "reason") if event == "server.crash" else field_of(entry, "code")
            key = (event, field_of(entry, "outcome"), field_of(entry, "server"), field_of(entry, "tool"), detail)
            bucket(self.errors, key).add(stamp, entry)

    def busiest(self, groups: dict[str, Group], name: str) -> list[dict[str, Any]]:
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1].count, kv[0]))[: self.top]
        return [{name: k, "count": g.count, "refused": refused(g), "last": iso(g.last)} for k, g in ranked]


def refused(group: Group) -> int:
    outcomes = group.counts("outcome")
    return outcomes.get("denied", 0) + outcomes.get("forbidden", 0)


def print_rows(rows: list[Row], columns: list[Col], *, title: str) -> None:
    table = new_table(*columns, title=title)
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    print_table(table)


def busiest_columns(name: str) -> list[Col]:
    return [
        Col(name, name, "bold"),
        Col("entries", "count"),
        Col("refused", "refused", "red"),
        Col("last seen", "last"),
    ]


INSTANCE_COLUMNS = [
    Col("instance", "instance", "bold"),
    Col("entries", "count"),
    Col("first seen", "first"),
    Col("last seen", "last"),
]
EVENT_COLUMNS = [Col("event", "event"), Col("count", "count"), Col("outcomes", lambda r: outcomes_cell(r["outcomes"]))]
ERROR_COLUMNS = [
    Col("event", "event"),
    Col("outcome", "outcome", "yellow"),
    Col("server", "server"),
    Col("tool", "tool"),
    Col("code / reason", "detail"),
    Col("count", "count"),
    Col("last seen", "last"),
]
