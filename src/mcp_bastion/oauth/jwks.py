"""The issuer's signing keys (a JWK Set), fetched off the request path's critical section and cached.

One fetch at a time (every request that needs keys awaits the same one, shielded, so a client that leaves does not
cancel it for the others), bounded by the fetcher's timeout; requests whose key is known never wait for it. The set
is kept for the response's `Cache-Control: max-age` (clamped); a `kid` not in the set triggers at most one refresh
per `JWKS_REFRESH_MIN_S` (forged kids cannot make the gateway hammer the IdP); while the IdP is unreachable the last
good set serves for `JWKS_STALE_MAX_S`, then requests fail closed (503).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp_bastion.oauth.discovery import discover
from mcp_bastion.oauth.http import JsonFetcher, OAuthFetchError

log = logging.getLogger("mcp_bastion.oauth")

JWKS_REFRESH_MIN_S = 30.0  # an unknown kid refreshes the set at most this often: a rotation shows within 30 s
JWKS_DEFAULT_TTL_S = 300.0  # kept this long when the response says nothing: a removed key stops working within 5 min
JWKS_TTL_MIN_S = 30.0  # a max-age below this (or no-store) still holds for 30 s, or every request would fetch
JWKS_TTL_MAX_S = 86_400.0  # a day at most: a key the IdP withdrew must not stay trusted for longer
JWKS_STALE_MAX_S = 3_600.0  # the last good set serves this long past its lifetime while the IdP cannot be reached
JWKS_RETRY_S = 5.0  # after a failed fetch, requests fail fast (503) for this long instead of each waiting a timeout
JWKS_MAX_KEYS = 100  # keys read from one set; IdPs publish a handful


class KeysUnavailable(Exception):
    """No usable key set: the IdP cannot be reached and nothing good is cached (the request fails closed)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Cached:
    keys: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    fetched: float = float("-inf")  # when the set was last fetched successfully
    fresh_until: float = float("-inf")
    failed: float = float("-inf")  # when the last fetch failed
    generation: int = 0  # bumped on every new set: lets the validator cache parsed keys per set


class KeySource:
    """The JWK Set of one issuer: `key(kid)` answers from the cache, refreshing it when it is stale or lacks `kid`."""

    def __init__(
        self, fetcher: JsonFetcher, *, issuer: str, jwks_url: str | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fetcher = fetcher
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.clock = clock
        self._cache = _Cached()
        self._refresh: asyncio.Task[None] | None = None
        self.fetches = 0  # JWKS fetches made (tests and doctor read it)

    @property
    def generation(self) -> int:
        """Changes whenever a new key set is in use."""
        return self._cache.generation

    @property
    def fresh(self) -> bool:
        """Whether the cached set is within its lifetime (past it, the next key look-up refreshes it)."""
        return self.clock() < self._cache.fresh_until

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK named `kid` (None: the set's only key), or None when the issuer has no such key.

        Raises:
            KeysUnavailable: the set could not be fetched and no usable copy is cached.
        """
        cache, now = self._cache, self.clock()
        if now >= cache.fresh_until:
            await self._ensure(now)
        found = self._cache.keys.get(kid)
        if found is None and self.clock() - self._cache.fetched >= JWKS_REFRESH_MIN_S:
            await self._ensure(self.clock(), unknown_kid=True)
            found = self._cache.keys.get(kid)
        return found

    async def _ensure(self, now: float, *, unknown_kid: bool = False) -> None:
        cache = self._cache
        if now - cache.failed < JWKS_RETRY_S:
            self._stale_or_fail(now)
            return
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._fetch(), name="oauth-jwks-refresh")
            self._refresh.add_done_callback(_retrieve)
        try:
            await asyncio.shield(self._refresh)
        except OAuthFetchError as exc:
            log.warning("JWKS of %s not refreshed: %s", self.issuer, exc)
            if not unknown_kid:
                self._stale_or_fail(self.clock())

    def _stale_or_fail(self, now: float) -> None:
        cache = self._cache
        if cache.keys and now < cache.fresh_until + JWKS_STALE_MAX_S:
            return  # the last good set still serves
        retry = max(1, int(cache.failed + JWKS_RETRY_S - now + 0.999))
        raise KeysUnavailable("the identity provider's signing keys cannot be fetched", retry)

    async def close(self) -> None:
        """Stop a refresh still in flight (the gateway's shutdown)."""
        task, self._refresh = self._refresh, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OAuthFetchError):
                await task

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            url = self.jwks_url or await self._discovered_jwks_url()
            fetched = await self.fetcher.get(url, "JWKS")
            keys = parse_key_set(fetched.document)
        except OAuthFetchError:
            self._cache.failed = self.clock()
            raise
        now = self.clock()
        ttl = JWKS_DEFAULT_TTL_S if fetched.max_age_s is None else float(fetched.max_age_s)
        ttl = min(max(ttl, JWKS_TTL_MIN_S), JWKS_TTL_MAX_S)
        self._cache = _Cached(keys, now, now + ttl, float("-inf"), self._cache.generation + 1)

    async def _discovered_jwks_url(self) -> str:
        document = await discover(self.fetcher, self.issuer)
        self.jwks_url = str(document["jwks_uri"])  # checked by discover; found once, kept for the process
        return self.jwks_url


def parse_key_set(document: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    """The signing keys of a JWK Set by kid; a set of one key is also found under None (tokens without a kid).

    Raises:
        OAuthFetchError: not a JWK Set, or no signing key in it.
    """
    raw = document.get("keys")
    if not isinstance(raw, list):
        raise OAuthFetchError("JWKS: no keys array")
    keys: dict[str | None, dict[str, Any]] = {}
    for jwk in raw[:JWKS_MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or "d" in jwk or "k" in jwk:
            continue  # encryption keys, private or symmetric keys are never verification keys
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) else None] = jwk
    if not keys:
        raise OAuthFetchError("JWKS: no signing key")
    if len(keys) == 1:
        keys[None] = next(iter(keys.values()))
    return keys


def _retrieve(task: "asyncio.Task[None]") -> None:
    """Mark a refresh's failure as seen even when every request that awaited it has left."""
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()
