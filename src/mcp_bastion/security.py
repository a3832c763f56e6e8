"""Pure security helpers: token generation and hashing, constant-time checks, bearer parsing, scopes.

No I/O. A token value is never logged or returned by anything here except `new_token`.
"""

import fnmatch
import hashlib
import secrets
from collections.abc import Iterable

TOKEN_PREFIX = "mcpb_"  # noqa: S105 - a visible prefix so leaked tokens are recognisable to scanners
TOKEN_BYTES = 32  # 256 bits from the CSPRNG
MIN_ADMIN_TOKEN_LEN = 32
WEAK_TOKENS = frozenset({"change-this-default-token", "your-secret-token-here", "changeme", "secret", "token"})
ADMIN_SCOPE = "admin"


def new_token() -> str:
    """A fresh bearer token (shown once, stored only as its hash)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_session_id() -> str:
    """A login-session id: 256 bits from the CSPRNG."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """SHA-256 hex of a token: tokens are 256-bit random, so a fast hash is enough and lookups stay O(1)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def weakness(token: str) -> str | None:
    """Why a configured admin token is too weak to start with, or None."""
    if token.strip().lower() in WEAK_TOKENS:
        return "it is a well-known default"
    if len(token) < MIN_ADMIN_TOKEN_LEN:
        return f"it is shorter than {MIN_ADMIN_TOKEN_LEN} characters"
    if len(set(token)) < 8:
        return "it has too few distinct characters"
    return None


def bearer(header: bytes | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header: scheme case-insensitive, exactly one space."""
    if header is None:
        return None
    scheme, sep, value = header.partition(b" ")
    if not sep or scheme.lower() != b"bearer" or not value or value != value.strip() or b" " in value:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def may_use_server(scopes: Iterable[str], server: str) -> bool:
    """Whether a token's scopes allow talking to `server` at all."""
    for scope in scopes:
        if scope in (ADMIN_SCOPE, "server:*", f"server:{server}"):
            return True
        if scope.startswith("tool:") and scope[5:].split("/", 1)[0] in (server, "*"):
            return True
    return False


def may_call_tool(scopes: Iterable[str], server: str, tool: str) -> bool:
    """Whether a token's scopes allow calling `tool` on `server` (`tool:server/pattern`, globs allowed)."""
    for scope in scopes:
        if scope in (ADMIN_SCOPE, "server:*", f"server:{server}"):
            return True
        if scope.startswith("tool:"):
            pattern = scope[5:]
            scope_server, _, tool_pattern = pattern.partition("/")
            if fnmatch.fnmatchcase(server, scope_server) and fnmatch.fnmatchcase(tool, tool_pattern or "*"):
                return True
    return False


def valid_scope(scope: str) -> bool:
    """A scope the gateway understands: admin, server:NAME, tool:SERVER/PATTERN."""
    if scope == ADMIN_SCOPE:
        return True
    kind, _, rest = scope.partition(":")
    return kind in ("server", "tool") and bool(rest) and all(c.isprintable() and c != " " for c in rest)
