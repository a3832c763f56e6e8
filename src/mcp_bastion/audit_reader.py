"""Reading the audit log back: the one reader under the `audit` CLI and the dashboard's /api/audit.

What `audit.AuditLog` writes: two files (AUDIT_LOG for calls, SECURITY_LOG for security events; Issue 9 item 8),
each rotated by size into `.1` … `.N` (`.N` oldest). This module reads them as time-ordered streams of entries:
every file of one log oldest first (`rotated_files`), both logs merged by time (`entries`), `audit.suppressed`
lines unfolded into the refusals they count (`unfold`), new lines followed across rotation and truncation
(`Follower`), and pages of the newest lines since a cursor of (inode, offset) per file (`read_page`). One filter
language for both users: a field matches when its text matches one of the field's globs (`Filter`).

Several instances of a cluster (Issue 12 item 6) write a pair of logs each; a scan reads any number of logs
(`log_paths` expands the globs an operator gives, `with_security` pairs each calls log with its security file)
and merges them all by time, exactly as it merges one instance's two files.

Pure file reading: no printing, no exit codes. OSError reaches the caller, which knows how to say it.
"""

import datetime as dt
import fnmatch
import glob
import heapq
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from mcp_bastion.config import security_log_for

Entry = tuple[float, dict[str, Any]]  # (UTC epoch seconds, the parsed line)
Cursor = tuple[int, int]  # (inode, offset after the last whole line read) of one file
Matcher = Callable[[dict[str, Any]], bool]

FOLLOW_POLL_S = 0.1  # how often a follower looks for new lines when there were none
SUPPRESSED = "audit.suppressed"  # one line standing for many refusals of one IP in one window
WEIGHT = "_suppressed"  # on an entry unfolded from a SUPPRESSED line: how many refusals it stands for
NO_REASON = "-"  # the reason key the audit log uses for a refusal without one
GLOB_CHARS = frozenset("*?[")  # a --log value holding one of these is a pattern, expanded here (quoted from the shell)


def as_text(value: object) -> str:
    """A field's value as the text filters match and tables show (lists and objects as compact JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return str(value)


def iso(stamp: float | None) -> str | None:
    """Epoch seconds → the audit log's own format (UTC, milliseconds, Z)."""
    if stamp is None:
        return None
    whole, millis = divmod(round(stamp * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def parse_time(text: object) -> float | None:
    """An ISO 8601 time → epoch seconds (UTC when it carries no offset); None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def decode(line: bytes) -> dict[str, Any] | None:
    """A line as a JSON object, or None."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


def parse_line(line: bytes) -> Entry | None:
    """One audit entry, or None for a line that is not one (bad JSON, not an object, no event or time)."""
    entry = decode(line)
    if entry is None or not isinstance(entry.get("event"), str):
        return None
    stamp = parse_time(entry.get("time"))
    return None if stamp is None else (stamp, entry)


class Filter:
    """Field → globs: an entry matches when, for every field, its text matches one of that field's globs.

    Exact names are globs too; `exact` quotes a value that must match only itself. No field: everything matches.
    """

    def __init__(self, fields: Mapping[str, Sequence[str] | None] | None = None) -> None:
        self.fields = {key: tuple(globs) for key, globs in (fields or {}).items() if globs}

    @staticmethod
    def exact(value: str) -> str:
        return glob.escape(value)

    def __call__(self, entry: dict[str, Any]) -> bool:
        return all(matches(entry.get(key), globs) for key, globs in self.fields.items())


def matches(value: object, globs: Sequence[str] | None) -> bool:
    """No globs: everything; else the value matches one of them (case-sensitive)."""
    if not globs:
        return True
    return value is not None and any(fnmatch.fnmatchcase(as_text(value), g) for g in globs)


@dataclass
class Window:
    """The time window a reader keeps (epoch seconds, either end open)."""

    since: float | None = None
    until: float | None = None

    def holds(self, stamp: float) -> bool:
        return (self.since is None or stamp >= self.since) and (self.until is None or stamp <= self.until)

    def as_json(self) -> dict[str, str | None]:
        return {"since": iso(self.since), "until": iso(self.until)}


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of a log, oldest (highest number) first, then the current file, those that exist.

    Raises:
        OSError: the directory cannot be listed.
    """
    prefix = path.name + "."
    rotated: list[tuple[int, Path]] = []
    siblings = list(path.parent.iterdir()) if path.parent.is_dir() else []
    for sibling in siblings:
        suffix = sibling.name[len(prefix) :]
        if sibling.name.startswith(prefix) and suffix.isascii() and suffix.isdigit() and sibling.is_file():
            rotated.append((int(suffix), sibling))
    files = [p for _, p in sorted(rotated, reverse=True)]
    return [*files, path] if path.is_file() else files


def open_log(path: Path) -> IO[bytes] | None:
    """The file, or None when it went away since it was listed (rotated while we read: its lines moved on).

    Raises:
        OSError: it exists but cannot be read.
    """
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def log_paths(patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The audit logs named by paths and globs (each once, in the order given), and the globs that matched nothing.

    A glob may match a log's rotated files (`audit.jsonl.1`) or its security file as well as the log: those are
    read as part of their log, so they are left out here.

    Raises:
        OSError: a directory a glob walks cannot be listed.
    """
    found: list[Path] = []
    unmatched: list[str] = []
    for pattern in patterns:
        if GLOB_CHARS.isdisjoint(pattern):
            found.append(Path(pattern))
            continue
        matched = sorted(Path(hit) for hit in glob.glob(pattern) if Path(hit).is_file())
        if not matched:
            unmatched.append(pattern)
        found += matched
    unique = list(dict.fromkeys(found))
    chosen = set(unique)
    parts = {security_log_for(path) for path in unique if security_log_for(path) != path}
    return [p for p in unique if p not in parts and _rotated_of(p) not in chosen], unmatched


def _rotated_of(path: Path) -> Path | None:
    """The log a rotated file (`audit.jsonl.3`) belongs to, or None for a file that is not one."""
    stem, dot, number = path.name.rpartition(".")
    return path.with_name(stem) if dot and stem and number.isascii() and number.isdigit() else None


def with_security(logs: Sequence[Path], named: Path | None = None) -> list[Path]:
    """Each calls log followed by its security file: `named` (SECURITY_LOG) for a single log when the settings name
    one, else `security.jsonl` beside each log (as each instance writes it by default); every file once."""
    pairs: list[Path] = []
    for path in logs:
        security = named if named is not None and len(logs) == 1 else security_log_for(path)
        pairs += [path, security]
    return list(dict.fromkeys(pairs))


@dataclass(frozen=True)
class Log:
    """One audit log: its current file, and the files of it to read (rotated ones oldest first, then the current)."""

    path: Path
    files: list[Path]


@dataclass
class Scan:
    """One read of the audit logs: the files, the window, how many entries fell in it, which lines were skipped.

    `logs` holds the logs read (for one instance: the calls file, then the security file; Issue 12: those of
    several instances). `opener` opens a file (None when it vanished); a CLI passes one that turns an unreadable
    file into its own error.
    """

    logs: list[Log]
    window: Window
    opener: Callable[[Path], IO[bytes] | None] = open_log
    read: int = 0
    in_window: int = 0
    malformed: int = 0
    first_malformed: str | None = field(default=None)

    def skip(self, where: str) -> None:
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = where

    def take(self, line: bytes, where: str) -> Entry | None:
        """Count one non-blank line; its entry when it is one inside the window."""
        self.read += 1
        entry = parse_line(line)
        if entry is None:
            self.skip(where)
            return None
        if not self.window.holds(entry[0]):
            return None
        self.in_window += 1
        return entry

    @property
    def files(self) -> list[Path]:
        """Every file read, log by log."""
        return [path for log in self.logs for path in log.files]

    def as_json(self) -> dict[str, Any]:
        first = [str(log.path) for log in self.logs[:2]]
        return {
            "log": first[0] if first else None,
            "security_log": first[-1] if len(first) > 1 else None,
            "logs": [str(log.path) for log in self.logs],
            "files": [str(f) for f in self.files],
            **self.window.as_json(),
            "entries": self.in_window,
            "malformed": self.malformed,
        }


def read_lines(handle: IO[bytes], name: str, scan: Scan) -> Iterator[Entry]:
    """Entries of complete lines from an open file (a last line without its newline is one too: rotated files
    end where the writer stopped)."""
    for number, raw in enumerate(handle, 1):
        line = raw.strip()
        if line and (entry := scan.take(line, f"{name} line {number}")) is not None:
            yield entry


def stream_entries(scan: Scan, files: list[Path]) -> Iterator[Entry]:
    """Every entry in the window of one log's files, oldest file first, streamed (never held in memory)."""
    for path in files:
        handle = scan.opener(path)
        if handle is not None:
            with handle:
                yield from read_lines(handle, path.name, scan)


def by_time(streams: Iterable[Iterable[Entry]]) -> Iterator[Entry]:
    """Several time-ordered streams as one, oldest first (each stream keeps its own order on equal times)."""
    return heapq.merge(*streams, key=lambda item: item[0])


def entries(scan: Scan) -> Iterator[Entry]:
    """Every entry in the window of every log (calls and security: Issue 9 item 8; every instance's: Issue 12),
    merged by time."""
    return by_time(stream_entries(scan, log.files) for log in scan.logs)


def unfold(items: Iterable[Entry]) -> Iterator[Entry]:
    """Entries as they are, except each `audit.suppressed` line, which becomes one weighted entry per event and
    reason it counted (its IP, outcome "denied", its time)."""
    for stamp, entry in items:
        counted = entry.get("events") if entry["event"] == SUPPRESSED else None
        if not isinstance(counted, dict):
            yield stamp, entry
            continue
        for event, reasons in counted.items():
            if not isinstance(reasons, dict):
                continue
            for reason, count in reasons.items():
                if type(count) is int and count > 0:
                    unfolded = {"time": entry.get("time"), "event": event, "outcome": "denied", "ip": entry.get("ip")}
                    unfolded["reason"] = None if reason == NO_REASON else reason
                    yield stamp, {**unfolded, WEIGHT: count}


class Follower:
    """Reads what is appended to the current file, following it across rotation (rename) and truncation."""

    def __init__(self, path: Path, handle: IO[bytes] | None, scan: Scan, sink: Callable[[Entry], None]) -> None:
        self.path = path
        self.handle = handle
        self.scan = scan
        self.sink = sink
        self.pending = b""
        self.line = 0

    def pump(self) -> bool:
        """Read what is there; whether anything was."""
        if self.handle is None:
            return False
        chunk = self.handle.read()
        if not chunk:
            return False
        *complete, self.pending = (self.pending + chunk).split(b"\n")
        for raw in complete:
            self.line += 1
            line = raw.strip()
            if line and (entry := self.scan.take(line, f"{self.path.name} line {self.line}")) is not None:
                self.sink(entry)
        return True

    def reopen_if_moved(self) -> None:
        try:
            now = os.stat(self.path)
        except OSError:
            return  # rotated and not yet recreated: keep the old handle until a new file appears
        if self.handle is not None:
            mine = os.fstat(self.handle.fileno())
            if (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino):
                if now.st_size < self.handle.tell():  # truncated in place
                    self.handle.seek(0)
                    self.pending, self.line = b"", 0
                return
            self.pump()  # the rest of the file that was rotated away
            self.handle.close()
        self.handle = self.scan.opener(self.path)
        self.pending, self.line = b"", 0

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def follow_all(
    followers: list[Follower], batch: list[Entry], sink: Callable[[Entry], None], deadline: float | None
) -> None:
    """Follow several files (the calls and the security log) until `deadline`; what each poll finds (the followers
    append it to `batch`) goes to `sink` in time order."""

    def drain() -> None:
        batch.sort(key=lambda item: item[0])  # stable: one file's lines keep their order
        for item in batch:
            sink(item)
        batch.clear()

    while deadline is None or time.monotonic() < deadline:
        if not any([follower.pump() for follower in followers]):
            for follower in followers:
                follower.reopen_if_moved()
                follower.pump()
            if not batch:
                time.sleep(FOLLOW_POLL_S)
        drain()
    for follower in followers:
        follower.pump()
    drain()


def end_of(path: Path) -> Cursor:
    """Where a file ends now ((0, 0) when it does not exist)."""
    try:
        info = os.stat(path)
    except OSError:
        return 0, 0
    return info.st_ino, info.st_size


def read_page(
    paths: Sequence[Path], limit: int, after: Sequence[Cursor] | None, wanted: Matcher
) -> tuple[list[dict[str, Any]], list[Cursor]]:
    """The last `limit` wanted lines of the logs (the calls log, then the security log), merged by time, oldest
    first, each with its `line` id; and the cursor after them, one (inode, offset) per file.

    A cursor that does not cover a file (an older one-file cursor) reads that file from its end. Any JSON object
    is a line here (the time is compared as text): the page shows what was written, malformed lines aside.
    """
    pages: list[list[dict[str, Any]]] = []
    ends: list[Cursor] = []
    for index, path in enumerate(paths):
        mark = None if after is None else (after[index] if index < len(after) else end_of(path))
        found, end = _page_of(path, limit, mark, wanted)
        pages.append(found)
        ends.append(end)
    merged = deque(heapq.merge(*pages, key=lambda entry: str(entry.get("time", ""))), maxlen=limit)
    return list(merged), ends


def _page_of(path: Path, limit: int, after: Cursor | None, wanted: Matcher) -> tuple[list[dict[str, Any]], Cursor]:
    """The last `limit` wanted lines of one file (and of its `.1` when needed), oldest first, and its end.

    With `after`: only lines written since; when the file rotated meanwhile, the rest of the old file (now `.1`)
    and then the new file from its start. The end points after the last complete line read, so a line being
    written is read whole by the next poll.
    """
    found: deque[dict[str, Any]] = deque(maxlen=limit)
    backup = path.with_name(f"{path.name}.1")
    if after is None:
        end = _collect(path, 0, found, wanted, start_inode=None)
        if len(found) < limit:
            older: deque[dict[str, Any]] = deque(maxlen=limit - len(found))
            _collect(backup, 0, older, wanted, start_inode=None)
            found.extendleft(reversed(older))
        return list(found), end
    old_inode, offset = after
    current, size = end_of(path)
    if current == old_inode:
        # The same file: only what was appended (a file shorter than the cursor was rewritten: start over).
        end = _collect(path, offset if offset <= size else 0, found, wanted, start_inode=current)
    else:
        _collect(backup, offset, found, wanted, start_inode=old_inode)  # the rest of the rotated file, if it is .1
        end = _collect(path, 0, found, wanted, start_inode=None)
    return list(found), end


def _collect(
    path: Path, offset: int, found: deque[dict[str, Any]], wanted: Matcher, *, start_inode: int | None
) -> Cursor:
    """Append the wanted lines of `path` from `offset`; returns (inode, offset after the last full line).

    With `start_inode`, the file is read only if it is still that inode (else nothing, and (0, 0)).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return 0, 0
    with os.fdopen(fd, "rb") as file:
        inode = os.fstat(fd).st_ino
        if start_inode is not None and inode != start_inode:
            return 0, 0
        file.seek(offset)
        data = file.read()
    complete = data.rfind(b"\n") + 1
    position = offset
    for raw in data[:complete].split(b"\n")[:-1]:
        line_id = f"{inode}.{position}"
        position += len(raw) + 1
        entry = decode(raw)
        if entry is not None and wanted(entry):
            entry["line"] = line_id
            found.append(entry)
    return inode, offset + complete
