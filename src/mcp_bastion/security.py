"""Pure security helpers: token generation and hashing, constant-time checks, bearer parsing, token names.

No I/O. A token value is never logged or returned by anything here except `new_token`.
"""

import hashlib
import re
import secrets

TOKEN_PREFIX = "mcpb_"  # noqa: S105 - a visible prefix so leaked tokens are recognisable to scanners
REFRESH_PREFIX = "mcpr_"  # the built-in authorization server's refresh tokens
CODE_PREFIX = "mcpa_"  # and its authorization codes
# Secrets only this gateway issues: never sent to an identity provider (introspection) when not found here.
OWN_PREFIXES = (TOKEN_PREFIX, REFRESH_PREFIX, CODE_PREFIX)
TOKEN_BYTES = 32  # 256 bits from the CSPRNG
MIN_ADMIN_TOKEN_LEN = 32
WEAK_TOKENS = frozenset({"change-this-default-token", "your-secret-token-here", "changeme", "secret", "token"})
ADMIN_SCOPE = "admin"
TOKEN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Names of the gateway's own principals and words an operator would read as one: never a token's name.
RESERVED_NAMES = frozenset({"admin", "anonymous", "env", "system", "gateway", "mcp-bastion", "root", "unknown", "none"})


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


def token_name_problem(name: str) -> str | None:
    """Why `name` cannot name a token, or None. The one check the CLI, the API and every store use."""
    if not TOKEN_NAME.fullmatch(name):
        return "a token name is 1-64 ASCII characters of A-Z a-z 0-9 . _ -"
    if name.lower() in RESERVED_NAMES:
        return f"{name!r} is reserved for the gateway's own principals"
    return None
