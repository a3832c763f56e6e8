"""Store for several gateway instances (`redis://host:port/db`): tokens and sessions as JSON, sessions with a TTL."""

import dataclasses
import json
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mcp_bastion.store.base import DuplicateName, LoginSession, StoreError, TokenRecord, require_valid_name

PREFIX = "bastion:"


class RedisStore:
    """Keys: bastion:token:{hash} → JSON, bastion:token-name:{name} → hash, bastion:session:{hash} → JSON (TTL),
    bastion:revoked:{hash} → revocation time (no TTL: a revoked hash stays revoked)."""

    def __init__(self, url: str) -> None:
        self._redis = aioredis.from_url(url, decode_responses=True)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._redis, method)(*args, **kwargs)
        except RedisError as exc:
            raise StoreError(f"redis {method} failed: {type(exc).__name__}") from exc

    async def _keys(self, pattern: str) -> list[str]:
        try:
            return [key async for key in self._redis.scan_iter(pattern)]
        except RedisError as exc:
            raise StoreError(f"redis scan failed: {type(exc).__name__}") from exc

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


def _token(raw: str) -> TokenRecord:
    data = json.loads(raw)
    data["scopes"] = tuple(data["scopes"])
    return TokenRecord(**data)


def _session(raw: str) -> LoginSession:
    data = json.loads(raw)
    data["scopes"] = tuple(data["scopes"])
    return LoginSession(**data)
