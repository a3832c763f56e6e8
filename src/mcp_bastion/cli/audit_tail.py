"""`audit tail`: the most recent audit entries, and (--follow) the new ones as they are written, across rotation.

Both logs (the calls and the security file) are read and followed, merged by time, through the one audit reader;
with several `--log`s (one per instance, Issue 12), all of them, each line showing the instance that wrote it.
"""

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from mcp_bastion.audit_reader import Entry, Follower, Scan, by_time, follow_all, matches, stream_entries
from mcp_bastion.cli.audit_query import (
    AuditLogPath,
    Instances,
    Since,
    Until,
    audit_cli,
    outcome_style,
    start_scan,
    warn_skipped,
)
from mcp_bastion.cli.base import EnvFile, err, fail, out
from mcp_bastion.cli.output import safe

TAIL_FIELDS = (
    "instance",
    "outcome",
    "ip",
    "principal",
    "server",
    "method",
    "tool",
    "reason",
    "latency_ms",
    "path",
    "request_id",
)


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

    def __init__(self, as_json: bool, events: list[str] | None, instances: list[str] | None = None) -> None:
        self.as_json = as_json
        self.events = events
        self.instances = instances
        self.printed = 0

    def wants(self, entry: dict[str, Any]) -> bool:
        return matches(entry.get("event"), self.events) and matches(entry.get("instance"), self.instances)

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
    instance: Instances = None,
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
        fail("--for only applies with --follow", "add --follow, e.g. mcp-bastion audit tail --follow --for 60")
    scan = start_scan(audit_log, env_file, since, until)
    printer = Printer(as_json, event, instance)
    followers: list[Follower] = []
    try:
        recents = [tail_start(scan, log.path, log.files, printer, lines, followers) for log in scan.logs]
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
