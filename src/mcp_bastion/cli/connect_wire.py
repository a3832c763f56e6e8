"""The pure parts of `mcp-bastion connect` (Issue 11 item 8): no sockets, no event loop, tested on their own.

Where a token comes from and whether it may be used, whether a URL may carry it, how one message becomes the
headers of its POST, how an SSE body becomes messages, the JSON-RPC errors the shim answers with itself, and
how long it waits before trying an unreachable gateway again.
"""

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

from mcp_bastion.config import is_loopback
from mcp_bastion.errors import ConfigError
from mcp_bastion.protocol import HANDSHAKE_VERSIONS, NAME_BEARING, PROTOCOL_VERSION_META

DEFAULT_TOKEN_ENV: Final = "MCP_BASTION_TOKEN"  # noqa: S105 - the name of a variable, not a value
TOKEN_FILE_MAX_BYTES: Final = 4096  # a token is a line; anything bigger is the wrong file
SSE_EVENT_MAX_BYTES: Final = 64 * 1024 * 1024  # one event holds one message; the gateway caps results below this
BACKOFF_FIRST_S: Final = 0.25  # first wait before trying an unreachable gateway again
BACKOFF_MAX_S: Final = 5.0  # longest wait between two tries, so a gateway back up is found within seconds
GATEWAY_UNAVAILABLE: Final = -32000  # implementation-defined server error: the gateway could not be reached
SESSION_ID_HEADER: Final = "mcp-session-id"
VERSION_HEADER: Final = "mcp-protocol-version"


def check_url(url: str) -> str:
    """`url` if it may carry a bearer token: https anywhere, http only to this machine (as `doctor --live`)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        raise ConfigError(f"{url!r} is not a URL (e.g. https://gateway.example/mcp/NAME)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url!r}: expected an http:// or https:// URL (e.g. https://gateway.example/mcp/NAME)")
    if scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{url}: refusing to send a token in clear text off this machine; use https://, or an SSH tunnel to "
            "loopback (ssh -L 3001:127.0.0.1:3001 HOST, then http://127.0.0.1:3001/mcp/NAME)"
        )
    return url


def token_from_file(path: Path) -> str:
    """The token in `path`, refused when other users could read it (the fix is in the message)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"--token-file {path}: not a regular file")
    if os.name == "posix" and info.st_mode & 0o077:
        raise ConfigError(
            f"--token-file {path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"fix it with: chmod 600 {path}"
        )
    if info.st_size > TOKEN_FILE_MAX_BYTES:
        raise ConfigError(f"--token-file {path}: {info.st_size} bytes is not a token")
    token = path.read_text(encoding="utf-8", errors="strict").strip()
    if not token:
        raise ConfigError(f"--token-file {path} is empty")
    return token


def token_from_env(environ: dict[str, str] | os._Environ[str], name: str) -> str | None:
    """The token in environment variable `name`, or None when it is unset or blank."""
    value = environ.get(name, "").strip()
    return value or None


def is_request(message: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(message, dict) and "method" in message and "id" in message


def is_notification(message: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(message, dict) and "method" in message and "id" not in message


def modern_version(message: dict[str, Any]) -> str | None:
    """The 2026-07-28 revision a stateless request names in its `_meta`, or None for a session-era message."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
    if isinstance(version, str) and version not in HANDSHAKE_VERSIONS:
        return version
    return None


def routing_headers(message: dict[str, Any], version: str, param_headers: dict[str, str]) -> dict[str, str]:
    """The headers a 2026-07-28 POST must carry, mirrored from its body (the gateway checks they agree)."""
    from mcp.shared.inbound import encode_header_value  # the SDK's codec, so both ends agree to the letter

    headers = {VERSION_HEADER: version, "mcp-method": str(message["method"])}
    name_key = NAME_BEARING.get(str(message["method"]))
    params = message.get("params")
    if name_key is not None and isinstance(params, dict) and isinstance(params.get(name_key), str):
        headers["mcp-name"] = encode_header_value(params[name_key])
    headers.update(param_headers)
    return headers


def error_reply(request_id: Any, message: str, code: int = GATEWAY_UNAVAILABLE) -> dict[str, Any]:
    """The JSON-RPC error the shim answers a request with when the gateway cannot."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def status_error(request_id: Any, status: int, body: Any) -> dict[str, Any]:
    """A gateway refusal as the answer to `request_id`: its own JSON-RPC error when it sent one, else the status."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return {"jsonrpc": "2.0", "id": request_id, "error": body["error"]}
    if status in (401, 403):
        return error_reply(request_id, f"the gateway refused the token (HTTP {status})")
    return error_reply(request_id, f"the gateway answered HTTP {status}")


def backoff_delays(first: float = BACKOFF_FIRST_S, most: float = BACKOFF_MAX_S) -> Iterator[float]:
    """Waits between tries: doubling from `first`, never longer than `most`."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


@dataclass
class SseEvent:
    data: str
    event_id: str | None = None
    event: str = "message"


@dataclass
class SseParser:
    """Server-sent events from a body's lines (as `aiter_lines` gives them, without line breaks)."""

    data: list[str] = field(default_factory=list)
    size: int = 0
    event_id: str | None = None
    event: str = "message"
    last_event_id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        """Take one line; a blank line completes the event being built, which is returned."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keepalives
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.size += len(value) + 1
            if self.size > SSE_EVENT_MAX_BYTES:
                raise ValueError(f"an SSE event over {SSE_EVENT_MAX_BYTES} bytes")
            self.data.append(value)
        elif name == "id" and "\0" not in value:
            self.event_id = value
        elif name == "event":
            self.event = value
        return None

    def _dispatch(self) -> SseEvent | None:
        if self.event_id is not None:
            self.last_event_id = self.event_id
        event = SseEvent("\n".join(self.data), self.event_id, self.event) if self.data else None
        self.data, self.size, self.event_id, self.event = [], 0, None, "message"
        return event
