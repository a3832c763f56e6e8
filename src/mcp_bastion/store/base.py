"""What every store backend provides: named tokens (hashed), login sessions (hashed ids), revoked hashes."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from mcp_bastion.errors import DependencyUnavailable, GatewayError
from mcp_bastion.security import token_name_problem

Record = dict[str, Any]  # a JSON object kept by `put_record` (the built-in authorization server's state)


class StoreError(GatewayError):
    """The store failed; authentication fails closed on it."""

    http_status = 503


class StoreUnavailable(StoreError, DependencyUnavailable):
    """The store is down or too slow (its breaker is open, or the call failed or timed out); 503 + Retry-After."""


class DuplicateName(StoreError):
    """An active token already has that name."""

    http_status = 409


class InvalidName(StoreError):
    """A token name outside the one grammar (`security.token_name_problem`), or a reserved one."""

    http_status = 400


def require_valid_name(name: str) -> None:
    """Every backend's create_token calls this first, so no path stores a name the rest cannot handle.

    Raises:
        InvalidName
    """
    problem = token_name_problem(name)
    if problem is not None:
        raise InvalidName(problem)


@dataclass(frozen=True)
class TokenRecord:
    """A named token. `token_hash` is SHA-256 of the value; the value itself is never stored."""

    name: str
    token_hash: str
    scopes: tuple[str, ...]
    created: float
    expires: float | None = None
    last_used: float | None = None


@dataclass(frozen=True)
class LoginSession:
    """A dashboard/management login. `id_hash` is SHA-256 of the cookie value."""

    id_hash: str
    principal: str
    scopes: tuple[str, ...]
    created: float
    expires: float
    client_ip: str = ""
    csrf_hash: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Store(Protocol):
    """One async interface over memory, SQLite and Redis."""

    async def create_token(self, record: TokenRecord) -> None:
        """Add a token; DuplicateName if an active token has that name."""

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The active token with that hash."""

    async def list_tokens(self) -> list[TokenRecord]:
        """Every active token, by name."""

    async def revoke_token(self, name: str) -> bool:
        """Delete a token by name; False if there was none."""

    async def revoke_all_tokens(self) -> int:
        """Delete every token; returns how many."""

    async def touch_token(self, name: str, when: float) -> None:
        """Record a use."""

    async def create_session(self, session: LoginSession) -> None:
        """Add a login session."""

    async def session_by_hash(self, id_hash: str) -> LoginSession | None:
        """The session with that id hash (expired ones included; the caller decides)."""

    async def delete_session(self, id_hash: str) -> bool:
        """End one session."""

    async def list_sessions(self) -> list[LoginSession]:
        """Every stored session."""

    async def delete_all_sessions(self) -> int:
        """End every session."""

    async def revoke_hash(self, token_hash: str) -> None:
        """Record a token hash as revoked for good (the .env admin token after a lockdown); idempotent."""

    async def is_revoked(self, token_hash: str) -> bool:
        """Whether that hash was recorded by `revoke_hash` (named tokens are revoked by deleting them instead)."""

    async def put_record(
        self, kind: str, key: str, value: Record, expires: float | None, *, only_new: bool = False
    ) -> bool:
        """Keep a JSON record under (kind, key) until `expires` (epoch seconds); whether it was written. With
        `only_new`, only when no unexpired record is there, atomically on every backend: how single-use values
        (authorization codes, refresh tokens) are claimed across instances."""

    async def get_record(self, kind: str, key: str) -> Record | None:
        """The unexpired record under (kind, key)."""

    async def delete_record(self, kind: str, key: str) -> bool:
        """Forget one record; False if there was none."""

    async def list_records(self, kind: str) -> list[Record]:
        """Every unexpired record of a kind."""

    async def close(self) -> None:
        """Release connections."""
