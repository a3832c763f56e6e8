"""Store for several gateway instances (`redis://host:port/db`): tokens and sessions as JSON, sessions with a TTL.

Every call goes through one circuit breaker (`breaker.Breaker`, named "store"): bounded by `timeout_s`, no client
retries (the breaker decides), refused at once while Redis is known to be down; failures become StoreUnavailable.
"""

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as LostConnection
from redis.exceptions import RedisError

from mcp_bastion.breaker import BREAKER_OPEN_S, DEPENDENCY_TIMEOUT_S, Breaker
from mcp_bastion.store.base import (
    DuplicateName,
    LoginSession,
    Record,
    StoreUnavailable,
    TokenRecord,
    require_valid_name,
)

PREFIX = "bastion:"
SCAN_COUNT = 1000  # keys asked for per SCAN step: few round trips, each one still short
DEPENDENCY = "store"


def connect(url: str, *, timeout_s: float, socket_timeout: float | None) -> "aioredis.Redis":
    """A client for `url` that connects within `timeout_s` (`socket_timeout` None: reads wait, as a subscription's)."""
    # One immediate retry, on a lost connection only: a pooled socket that died with a restarted Redis is
    # replaced at once, while redis-py's default loop (backing off for seconds) never runs behind the breaker.
    return aioredis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(LostConnection,)),
    )


class RedisStore:
    """Keys: bastion:token:{hash} → JSON, bastion:token-name:{name} → hash, bastion:session:{hash} → JSON (TTL),
    bastion:revoked:{hash} → revocation time (no TTL: a revoked hash stays revoked)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEPENDENCY_TIMEOUT_S,
        open_s: float = BREAKER_OPEN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = connect(url, timeout_s=timeout_s, socket_timeout=timeout_s)
        self.breaker = Breaker(
            DEPENDENCY, failures=(RedisError,), timeout_s=timeout_s, open_s=open_s, error=StoreUnavailable, clock=clock
        )

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One Redis command through the breaker.

        Raises:
            StoreUnavailable: Redis failed, timed out, or is known to be down.
        """
        return await self.breaker.run(lambda: getattr(self._redis, method)(*args, **kwargs))

    async def _keys(self, pattern: str) -> list[str]:
        """Every key matching `pattern`, one bounded SCAN step at a time."""
        found: list[str] = []
        cursor = 0
        while True:
            cursor, keys = await self._call("scan", cursor, match=pattern, count=SCAN_COUNT)
            found.extend(keys)
            if not cursor:
                return found

    async def create_token(self, record: TokenRecord) -> None:
        """Add a token (the name claim is atomic: SET NX)."""
        require_valid_name(record.name)
        if not await self._call("set", f"{PREFIX}token-name:{record.name}", record.token_hash, nx=True):
            raise DuplicateName(f"a token named {record.name!r} exists")
        await self._call("set", f"{PREFIX}token:{record.token_hash}", json.dumps(dataclasses.asdict(record)))

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """Find by hash."""
        raw = await self._call("get", f"{PREFIX}token:{token_hash}")
        return _token(raw) if raw else None

    async def list_tokens(self) -> list[TokenRecord]:
        """All tokens by name."""
        keys = await self._keys(f"{PREFIX}token:*")
        values = await self._call("mget", keys) if keys else []
        return sorted((_token(v) for v in values if v), key=lambda t: t.name)

    async def revoke_token(self, name: str) -> bool:
        """Delete by name."""
        token_hash = await self._call("getdel", f"{PREFIX}token-name:{name}")
        if not token_hash:
            return False
        await self._call("delete", f"{PREFIX}token:{token_hash}")
        return True

    async def revoke_all_tokens(self) -> int:
        """Delete all."""
        tokens = await self.list_tokens()
        for record in tokens:
            await self.revoke_token(record.name)
        return len(tokens)

    async def touch_token(self, name: str, when: float) -> None:
        """Record a use."""
        token_hash = await self._call("get", f"{PREFIX}token-name:{name}")
        record = await self.token_by_hash(token_hash) if token_hash else None
        if record is not None:
            updated = dataclasses.replace(record, last_used=when)
            await self._call("set", f"{PREFIX}token:{token_hash}", json.dumps(dataclasses.asdict(updated)), xx=True)

    async def create_session(self, session: LoginSession) -> None:
        """Add a session that Redis itself expires."""
        ttl = max(1, int(session.expires - time.time()))
        await self._call("set", f"{PREFIX}session:{session.id_hash}", json.dumps(dataclasses.asdict(session)), ex=ttl)

    async def session_by_hash(self, id_hash: str) -> LoginSession | None:
        """Find a session."""
        raw = await self._call("get", f"{PREFIX}session:{id_hash}")
        return _session(raw) if raw else None

    async def delete_session(self, id_hash: str) -> bool:
        """End a session."""
        return bool(await self._call("delete", f"{PREFIX}session:{id_hash}"))

    async def list_sessions(self) -> list[LoginSession]:
        """All sessions, oldest first."""
        keys = await self._keys(f"{PREFIX}session:*")
        values = await self._call("mget", keys) if keys else []
        return sorted((_session(v) for v in values if v), key=lambda s: s.created)

    async def delete_all_sessions(self) -> int:
        """End all."""
        keys = await self._keys(f"{PREFIX}session:*")
        return int(await self._call("delete", *keys)) if keys else 0

    async def revoke_hash(self, token_hash: str) -> None:
        """Record a revoked hash (the first revocation time is kept)."""
        await self._call("set", f"{PREFIX}revoked:{token_hash}", repr(time.time()), nx=True)

    async def is_revoked(self, token_hash: str) -> bool:
        """Whether the hash was revoked."""
        return bool(await self._call("exists", f"{PREFIX}revoked:{token_hash}"))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def put_record(
        self, kind: str, key: str, value: Record, expires: float | None, *, only_new: bool = False
    ) -> bool:
        """Keep a record that Redis itself expires (PXAT); `only_new` is SET NX, atomic across instances."""
        at_ms = int(expires * 1000) if expires is not None else None
        written = await self._call("set", f"{PREFIX}record:{kind}:{key}", json.dumps(value), pxat=at_ms, nx=only_new)
        return bool(written)

    async def get_record(self, kind: str, key: str) -> Record | None:
        """The unexpired record."""
        raw = await self._call("get", f"{PREFIX}record:{kind}:{key}")
        return _record(raw) if raw else None

    async def delete_record(self, kind: str, key: str) -> bool:
        """Forget a record."""
        return bool(await self._call("delete", f"{PREFIX}record:{kind}:{key}"))

    async def list_records(self, kind: str) -> list[Record]:
        """Unexpired records of a kind."""
        keys = await self._keys(f"{PREFIX}record:{kind}:*")
        values = await self._call("mget", keys) if keys else []
        return [_record(v) for v in values if v]


def _token(raw: str) -> TokenRecord:
    data = json.loads(raw)
    data["scopes"] = tuple(data["scopes"])
    return TokenRecord(**data)


def _session(raw: str) -> LoginSession:
    data = json.loads(raw)
    data["scopes"] = tuple(data["scopes"])
    return LoginSession(**data)


def _record(raw: str) -> Record:
    value: Record = json.loads(raw)
    return value
