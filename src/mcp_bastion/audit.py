"""The audit log: one JSON line per security event and per MCP call, appended to a size-rotated file.

A line records who (principal name, never a token), from where (client IP), what and how it ended. Tool
arguments are recorded by shape (keys and types), never values. Every line is valid JSON whatever bytes the
request carried: strings are made valid UTF-8 and orjson escapes control characters.

Refusal noise is aggregated (Issue 8 item 8): a line with outcome "denied" counts against its client IP in a
fixed window of `refusal_window_s`; the first `refusals_per_ip` are written as usual, the rest become one
`audit.suppressed` line per IP and window (count, per event and reason, window start and end), written on the
first record after the window, on `flush_refusals()` (also scheduled on the running event loop when suppression
starts) and on `close()`. Every other decision is always written, so a flood of anonymous requests cannot rotate
a login or an admin action out of the files.

Security events have a file of their own (Issue 9 item 8): at thousands of calls a second the `mcp.call` lines fill
a size-capped file in under a minute, and a login written next to them would rotate away with them. `is_security`
is the one rule that splits the stream: security lines go to SECURITY_LOG (its own size cap and backups), call
lines and the rest to AUDIT_LOG. Both files are the same JSON lines; readers merge them by time.

Several instances behind one balancer (Issue 12 item 6) each write their own files; every line names the instance
that wrote it (`instance`, INSTANCE_ID), so the files of all of them can be read as one stream.
"""

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from mcp_bastion.config import Settings
from mcp_bastion.files import open_append

log = logging.getLogger("mcp_bastion.audit")

FIELD_MAX_CHARS = 512  # a field longer than this is cut: an audit line is evidence, not a data dump
SHAPE_MAX_KEYS = 32  # argument keys recorded per call
REFUSAL = "denied"  # the outcome of a refusal: the only lines that may be aggregated
REFUSAL_FIELD_MAX_CHARS = 128  # a refusal's strings are cut shorter: noise must stay cheap to write and keep
REFUSALS_PER_IP = 20  # refusal lines written per client IP and window before they are only counted
REFUSAL_WINDOW_S = 60.0  # the aggregation window; a summary line is at most this late
REFUSAL_TABLE_MAX = 65_536  # client IPs tracked per window: rotating addresses cannot grow memory past it
REFUSAL_BREAKDOWN_MAX = 32  # distinct (event, reason) pairs per summary; further ones are counted as OTHER
MANY_ADDRESSES = "many addresses"  # the summary's ip for refusals from addresses past REFUSAL_TABLE_MAX
OTHER = "other"
FLUSH_SLACK_S = 0.05  # the scheduled flush runs just after the window ends

# Issue 9 item 8: which lines are security events (kept in SECURITY_LOG, away from the high-volume call lines).
SECURITY_PREFIXES = ("auth.", "session.", "token.", "admin.", "ratelimit.", "quota.", "server.", "audit.", "oauth.")
SECURITY_EVENTS = frozenset({"ip.denied", "origin.denied", "http.refused", "stream.overflow"})
SECURITY_OUTCOMES = frozenset({REFUSAL, "forbidden"})  # any refusal is a security decision, mcp.call ones included


def is_security(event: str, outcome: object = None) -> bool:
    """Whether a line belongs in the security file: logins, sessions, tokens, admin actions, refusals of any kind,
    rate limits and quotas, server lifecycle, the audit log's own summaries (Issue 9 item 8)."""
    return event.startswith(SECURITY_PREFIXES) or event in SECURITY_EVENTS or outcome in SECURITY_OUTCOMES


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def shape(arguments: Any) -> dict[str, str] | str:
    """Keys and JSON types of tool arguments; never their values."""
    if not isinstance(arguments, dict):
        return type(arguments).__name__ if arguments is not None else "none"
    return {_clean(str(k))[:64]: _json_type(v) for k, v in list(arguments.items())[:SHAPE_MAX_KEYS]}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def _clean(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


def iso_utc(stamp: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds."""
    whole, millis = divmod(round(stamp * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class _Refusals:
    """One client IP's refusals in the current window: how many, and what the suppressed ones were."""

    __slots__ = ("breakdown", "pairs", "seen", "suppressed")

    def __init__(self) -> None:
        self.seen = 0
        self.suppressed = 0
        self.pairs = 0
        self.breakdown: dict[str, dict[str, int]] = {}

    def suppress(self, event: str, reason: str) -> None:
        self.suppressed += 1
        reasons = self.breakdown.get(event)
        if reasons is None or reason not in reasons:
            if self.pairs >= REFUSAL_BREAKDOWN_MAX:
                event = reason = OTHER
            else:
                self.pairs += 1
            reasons = self.breakdown.setdefault(event, {})
        reasons[reason] = reasons.get(reason, 0) + 1


class RefusalTally:
    """Per-IP refusal counts in fixed windows (Issue 8 item 8); not thread-safe: AuditLog holds its lock."""

    def __init__(self, per_ip: int, window_s: float) -> None:
        self.per_ip = per_ip
        self.window_s = window_s
        self.window_start = 0.0
        self.window_end = 0.0  # 0: no refusal counted since the last summaries
        self.suppressing = False
        self._ips: dict[str, _Refusals] = {}

    def due(self, now: float) -> bool:
        """Whether a window with counts is over (its summaries should be written)."""
        return self.window_end != 0.0 and now >= self.window_end

    def admit(self, now: float, ip: str, event: str, reason: str) -> bool:
        """Count one refusal; whether its line is written (False: the window's summary counts it)."""
        if self.window_end == 0.0:
            self.window_start = now - now % self.window_s
            self.window_end = self.window_start + self.window_s
        counts = self._ips.get(ip)
        if counts is None:
            if len(self._ips) >= REFUSAL_TABLE_MAX:
                ip = MANY_ADDRESSES
                counts = self._ips.get(ip)
            if counts is None:
                counts = self._ips[ip] = _Refusals()
        counts.seen += 1
        if counts.seen <= self.per_ip:
            return True
        counts.suppress(event, reason)
        self.suppressing = True
        return False

    def summaries(self) -> list[dict[str, Any]]:
        """The window's summary lines (one per IP that had lines suppressed), then a fresh, empty window."""
        start, end = iso_utc(self.window_start), iso_utc(self.window_end)
        lines = [
            {
                "outcome": REFUSAL,
                "ip": ip,
                "count": c.suppressed,
                "events": c.breakdown,
                "window_start": start,
                "window_end": end,
            }
            for ip, c in self._ips.items()
            if c.suppressed
        ]
        self._ips = {}
        self.window_start = self.window_end = 0.0
        self.suppressing = False
        return lines


class RotatingFile:
    """One append-only JSON-lines file, private (files.open_append), rotated by size into `.1` … `.N`."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd: int | None = None
        self._size = 0

    def write(self, line: bytes) -> None:
        """Append one line; rotate past the size cap; an I/O error is logged, never raised (audit must not 500)."""
        try:
            if self._fd is None:
                self._fd = open_append(self.path)
                self._size = os.fstat(self._fd).st_size
            os.write(self._fd, line)
            self._size += len(line)
            if self._size > self.max_bytes:
                self._rotate()
        except OSError as exc:
            log.error("cannot write the audit log %s: %s", self.path, exc.strerror)

    def _rotate(self) -> None:
        self.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()

    def close(self) -> None:
        """Close the descriptor (the next write reopens)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class AuditLog:
    """Appends audit lines to the calls file and the security file; thread-safe (the CLI and tests may share one).

    Without `security_path` (or with the same path) every line goes to the one file at `path`.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        backups: int,
        secrets: Iterable[str] = (),
        refusals_per_ip: int = REFUSALS_PER_IP,
        refusal_window_s: float = REFUSAL_WINDOW_S,
        clock: Callable[[], float] = time.time,
        security_path: Path | None = None,
        security_max_bytes: int | None = None,
        security_backups: int | None = None,
        instance: str | None = None,
    ) -> None:
        self.path = path
        self.instance = instance  # on every line when set: which instance of a cluster wrote it
        self._calls = RotatingFile(path, max_bytes=max_bytes, backups=backups)
        self._security = self._calls
        if security_path is not None and security_path != path:
            self._security = RotatingFile(
                security_path,
                max_bytes=max_bytes if security_max_bytes is None else security_max_bytes,
                backups=backups if security_backups is None else security_backups,
            )
        self.security_path = self._security.path
        known = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, known))) if known else None
        self._lock = threading.Lock()
        self._clock = clock
        self._refusals = RefusalTally(refusals_per_ip, refusal_window_s)
        self._flush_timer: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(cls, settings: Settings, secrets: Iterable[str] = ()) -> "AuditLog":
        """The audit log the settings describe: AUDIT_LOG for calls, SECURITY_LOG for security events."""
        return cls(
            settings.audit_log,
            max_bytes=settings.audit_max_bytes,
            backups=settings.audit_backups,
            secrets=secrets,
            refusals_per_ip=settings.audit_refusals_per_ip,
            refusal_window_s=settings.audit_refusal_window_s,
            security_path=settings.security_audit_log,
            security_max_bytes=settings.security_max_bytes,
            security_backups=settings.security_backups,
            instance=settings.instance_id,
        )

    @property
    def paths(self) -> list[Path]:
        """The files written: the calls file, then the security file when it is a separate one."""
        return [self.path] if self._security is self._calls else [self.path, self.security_path]

    def record(self, event: str, **fields: Any) -> None:
        """Write one event line (time, event, then the given fields; None values left out).

        A refusal (outcome "denied") is written short, and only while its IP is under the window's quota;
        past it, it is counted into the window's `audit.suppressed` line instead.
        """
        refusal = fields.get("outcome") == REFUSAL
        now = self._clock()
        with self._lock:
            if self._refusals.due(now):
                self._write_summaries()
            if refusal and not self._admit(now, event, fields):
                return
            line = self._line(event, fields, REFUSAL_FIELD_MAX_CHARS if refusal else FIELD_MAX_CHARS)
            (self._security if is_security(event, fields.get("outcome")) else self._calls).write(line)

    def flush_refusals(self) -> None:
        """Write the summaries of a window that is over, even when no line came since (safe to call often)."""
        with self._lock:
            if self._refusals.due(self._clock()):
                self._write_summaries()

    def _admit(self, now: float, event: str, fields: dict[str, Any]) -> bool:
        ip, reason = fields.get("ip"), fields.get("reason")
        ip_key = "unknown" if ip is None else self._scrub(str(ip), REFUSAL_FIELD_MAX_CHARS)
        reason_key = "-" if reason is None else self._scrub(str(reason), REFUSAL_FIELD_MAX_CHARS)
        if self._refusals.admit(now, ip_key, event, reason_key):
            return True
        if self._flush_timer is None:
            self._schedule_flush(now)
        return False

    def _schedule_flush(self, now: float) -> None:
        """A quiet IP's summary must not wait for the next line: flush on the event loop when the window ends."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (CLI, threads): the next record() or close() writes it
        delay = max(0.0, self._refusals.window_end - now) + FLUSH_SLACK_S
        self._flush_timer = loop.call_later(delay, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_timer = None
        self.flush_refusals()
        with self._lock:
            if self._refusals.suppressing and self._flush_timer is None:
                self._schedule_flush(self._clock())

    def _write_summaries(self) -> None:
        for summary in self._refusals.summaries():
            self._security.write(self._line("audit.suppressed", summary, FIELD_MAX_CHARS))

    def _line(self, event: str, fields: dict[str, Any], limit: int) -> bytes:
        entry: dict[str, Any] = {"time": utc_now(), "event": event}
        if self.instance is not None:
            entry["instance"] = self.instance
        for key, value in fields.items():
            if value is not None:
                entry[key] = self._scrub(value, limit)
        return orjson.dumps(entry) + b"\n"

    def _scrub(self, value: Any, limit: int = FIELD_MAX_CHARS) -> Any:
        kind = type(value)
        if kind is str:
            text: str = value if value.isascii() else _clean(value)
            if self._secrets is not None and self._secrets.search(text):  # before the cut: a secret across it leaks
                text = self._secrets.sub("****", text)
            if len(text) > limit:
                text = text[:limit]
            return text
        if kind is int or kind is float or kind is bool:
            return value
        if isinstance(value, dict):
            return {_clean(str(k))[:64]: self._scrub(v, limit) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._scrub(v, limit) for v in value]
        if isinstance(value, (int, float, bool)):
            return value
        return self._scrub(str(value), limit)

    def close(self) -> None:
        """Write the current window's summaries, then close the file."""
        with self._lock, contextlib.suppress(OSError):
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            self._write_summaries()
            self._calls.close()
            self._security.close()
