"""The one error tree of mcp-bastion.

    GatewayError                 http_status / jsonrpc_code
    ├── ConfigError              (exit code 2 at the CLI; names file, server and key)
    ├── ProtocolError            400 / -32600 and friends: a request we refuse to relay
    │   ├── ParseError           400 / -32700
    │   ├── HeaderMismatch       400 / -32020
    │   └── UnsupportedVersion   400 / -32022
    ├── QuotaExceeded            429 / -32029: a principal or session is over one of its caps (Retry-After)
    ├── DependencyUnavailable    503 / -32000: a shared dependency (store, shared rate limiter) is down (Retry-After)
    ├── AtCapacity               503 / -32000: the gateway holds MAX_SESSIONS sessions (Retry-After)
    ├── ShuttingDown             503 / -32000: the gateway is shutting down (Retry-After)
    └── ChildError               502 / -32603: the child is not there or broke the call
        ├── ChildUnavailable     503 / -32000 (Retry-After while it restarts)
        └── CallTimeout          504 / -32001

Nothing here does I/O. Foreign exceptions are translated where they occur.
"""

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_UNAVAILABLE = -32000
REQUEST_TIMEOUT = -32001
SESSION_NOT_FOUND = -32001  # what the official TypeScript SDK server answers (HTTP 404) for an unknown session
REQUEST_CANCELLED = -32800
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022
QUOTA_EXCEEDED = -32029  # implementation-defined server error; 29 as in HTTP 429


class GatewayError(Exception):
    """Base of every error mcp-bastion raises on purpose."""

    http_status = 500
    jsonrpc_code = INTERNAL_ERROR
    retry_after_s: int | None = None  # when set, every answer carrying this error has a Retry-After header

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.request_id: Any = None  # set once the failing request's id is known, so the error can carry it


class ConfigError(GatewayError):
    """The configuration cannot be used; the message names file, server and key."""


class ProtocolError(GatewayError):
    """A message that breaks the JSON-RPC or MCP rules; never reaches a child."""

    http_status = 400
    jsonrpc_code = INVALID_REQUEST

    def __init__(self, message: str, *, code: int = INVALID_REQUEST, status: int = 400, data: Any = None) -> None:
        super().__init__(message, data=data)
        self.jsonrpc_code = code
        self.http_status = status


class ParseError(ProtocolError):
    """The body is not JSON (or not UTF-8, or too deep)."""

    def __init__(self, message: str = "Parse error") -> None:
        super().__init__(message, code=PARSE_ERROR)


class QuotaExceeded(GatewayError):
    """A principal holds too many sessions or streams, or a session too many requests; never reaches a child.

    `data` carries the quota's name and `retryAfterSeconds`, so a JSON-RPC client sees the hint too.
    """

    http_status = 429
    jsonrpc_code = QUOTA_EXCEEDED
    retry_after_s: int

    def __init__(self, message: str, *, quota: str, limit: int, retry_after_s: int) -> None:
        super().__init__(message, data={"quota": quota, "limit": limit, "retryAfterSeconds": retry_after_s})
        self.quota = quota
        self.limit = limit
        self.retry_after_s = retry_after_s


class DependencyUnavailable(GatewayError):
    """A dependency the request needs (`dependency`: "store", "ratelimit") failed or its breaker is open.

    The request is refused (fail closed), never let through; `retry_after_s` is when the next probe may succeed.
    """

    http_status = 503
    jsonrpc_code = SERVER_UNAVAILABLE
    retry_after_s: int

    def __init__(self, message: str, *, dependency: str, retry_after_s: int) -> None:
        super().__init__(message, data={"dependency": dependency, "retryAfterSeconds": retry_after_s})
        self.dependency = dependency
        self.retry_after_s = retry_after_s


class AtCapacity(GatewayError):
    """Every session slot of the gateway is taken (MAX_SESSIONS): refused for now, not forbidden (Issue 9 item 9)."""

    http_status = 503
    jsonrpc_code = SERVER_UNAVAILABLE
    retry_after_s: int

    def __init__(self, message: str, *, limit: int, retry_after_s: int) -> None:
        super().__init__(message, data={"limit": limit, "retryAfterSeconds": retry_after_s})
        self.retry_after_s = retry_after_s


class ShuttingDown(GatewayError):
    """The gateway is shutting down: the request is not started, or did not finish within SHUTDOWN_GRACE_S.

    Issue 9 item 6. A client retries after `retry_after_s` (a restarted or replacement instance answers by then).
    """

    http_status = 503
    jsonrpc_code = SERVER_UNAVAILABLE
    retry_after_s: int

    def __init__(self, retry_after_s: int, message: str = "the gateway is shutting down; retry shortly") -> None:
        super().__init__(message, data={"reason": "shutting down", "retryAfterSeconds": retry_after_s})
        self.retry_after_s = retry_after_s


class ChildError(GatewayError):
    """The child could not answer."""

    http_status = 502


class ChildUnavailable(ChildError):
    """The child is not running (stopped, restarting or failed).

    With `retry_after_s` (it is restarting, or a retry is scheduled) `data` carries `retryAfterSeconds` and the
    answer a Retry-After header (Issue 9 item 2).
    """

    http_status = 503
    jsonrpc_code = SERVER_UNAVAILABLE

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message, data={"retryAfterSeconds": retry_after_s} if retry_after_s is not None else None)
        self.retry_after_s = retry_after_s
