"""The cluster's one Redis connection: instance records (keys with a TTL) and the revocation channel (pub/sub).

Every command goes through a circuit breaker named "cluster" (bounded, refused at once while Redis is known to be
down), like the store's; the subscription is a long-lived connection that is re-opened after an outage.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mcp_bastion.breaker import BREAKER_OPEN_S, DEPENDENCY_TIMEOUT_S, Breaker
from mcp_bastion.errors import DependencyUnavailable
from mcp_bastion.store.redis import connect

PREFIX = "bastion:instance:"
CHANNEL = "bastion:revoked"
DEPENDENCY = "cluster"
SCAN_COUNT = 1000  # keys asked for per SCAN step: a cluster has a handful of instances
LISTEN_POLL_S = 1.0  # a subscription waits this long per read, so a lost connection is noticed within it


class ClusterBus:
    """Instance records and the revocation channel on one Redis (REDIS_URL)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEPENDENCY_TIMEOUT_S,
        open_s: float = BREAKER_OPEN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._redis = self._client(socket_timeout=timeout_s)
        self.breaker = Breaker(DEPENDENCY, failures=(RedisError,), timeout_s=timeout_s, open_s=open_s, clock=clock)

    def _client(self, *, socket_timeout: float | None) -> "aioredis.Redis":
        return connect(self._url, timeout_s=self._timeout_s, socket_timeout=socket_timeout)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One Redis command through the breaker (DependencyUnavailable when it fails or Redis is down)."""
        return await self.breaker.run(lambda: getattr(self._redis, method)(*args, **kwargs))

    async def put_instance(self, instance_id: str, record: str, ttl_ms: int) -> None:
        """Write this instance's record; Redis forgets it `ttl_ms` after the last write."""
        await self._call("set", PREFIX + instance_id, record, px=ttl_ms)

    async def get_instance(self, instance_id: str) -> str | None:
        """One instance's record, or None when it is gone."""
        value: str | None = await self._call("get", PREFIX + instance_id)
        return value

    async def all_instances(self) -> list[str]:
        """Every live instance's record."""
        keys: list[str] = []
        cursor = 0
        while True:
            cursor, found = await self._call("scan", cursor, match=PREFIX + "*", count=SCAN_COUNT)
            keys.extend(found)
            if not cursor:
                break
        values = await self._call("mget", keys) if keys else []
        return [value for value in values if value]

    async def delete_instance(self, instance_id: str) -> None:
        """Remove this instance's record (it leaves)."""
        await self._call("delete", PREFIX + instance_id)

    async def publish(self, message: str) -> None:
        """Tell every instance about a revocation."""
        await self._call("publish", CHANNEL, message)

    async def messages(self) -> AsyncIterator[str]:
        """Revocation messages as they come; ends (raising DependencyUnavailable) when the connection is lost.

        A dedicated connection without a read timeout: the wait for a message is the poll below, not a failure.
        """
        client = self._client(socket_timeout=None)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await asyncio.wait_for(pubsub.subscribe(CHANNEL), self._timeout_s * 4)
            while True:
                message = await pubsub.get_message(timeout=LISTEN_POLL_S)
                if message is not None and isinstance(message.get("data"), str):
                    yield message["data"]
        except (RedisError, OSError, TimeoutError) as exc:
            raise DependencyUnavailable("cluster channel lost", dependency=DEPENDENCY, retry_after_s=1) from exc
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
