"""The audit log: one JSON line per security event and per MCP call, appended to a size-rotated file.

A line records who (principal name, never a token), from where (client IP), what and how it ended. Tool
arguments are recorded by shape (keys and types), never values. Every line is valid JSON whatever bytes the
request carried: strings are made valid UTF-8 and orjson escapes control characters.
"""

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from mcp_bastion.files import open_append

log = logging.getLogger("mcp_bastion.audit")

FIELD_MAX_CHARS = 512  # a field longer than this is cut: an audit line is evidence, not a data dump
SHAPE_MAX_KEYS = 32  # argument keys recorded per call


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


class AuditLog:
    """Appends audit lines; thread-safe (the CLI and tests may share one)."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int, secrets: Iterable[str] = ()) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        known = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, known))) if known else None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0

    def _open(self) -> int:
        return open_append(self.path)

    def record(self, event: str, **fields: Any) -> None:
        """Write one event line (time, event, then the given fields; None values left out)."""
        entry: dict[str, Any] = {"time": utc_now(), "event": event}
        for key, value in fields.items():
            if value is not None:
                entry[key] = self._scrub(value)
        line = orjson.dumps(entry) + b"\n"
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = self._open()
                    self._size = os.fstat(self._fd).st_size
                os.write(self._fd, line)
                self._size += len(line)
                if self._size > self.max_bytes:
                    self._rotate()
            except OSError as exc:
                log.error("cannot write the audit log %s: %s", self.path, exc.strerror)

    def _scrub(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            text: str = value if value.isascii() else _clean(value)
            if len(text) > FIELD_MAX_CHARS:
                text = text[:FIELD_MAX_CHARS]
            if self._secrets is not None and self._secrets.search(text):
                text = self._secrets.sub("****", text)
            return text
        if kind is int or kind is float or kind is bool:
            return value
        if isinstance(value, dict):
            return {_clean(str(k))[:64]: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._scrub(v) for v in value]
        if isinstance(value, (int, float, bool)):
            return value
        return self._scrub(str(value))

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()

    def close(self) -> None:
        """Close the file."""
        with self._lock, contextlib.suppress(OSError):
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
