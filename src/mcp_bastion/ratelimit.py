"""Rate limits: per client IP, per principal, per tool, and failed authentications per IP, in fixed windows.

Two counter backends behind one small interface:
- `LocalCounters`, in-process (the default). Hand-written on purpose: the `limits` library's memory storage was
  measured here at ~110 us of gateway CPU per proxied call for two hits (its expiry timer and locks run on every
  request), a third of the whole per-call budget; this dict of windows costs ~1 us.
- `SharedCounters`, the `limits` library's fixed-window strategy over Redis (REDIS_URL), so several gateway
  instances share one count. There the network round trip dominates and the library's atomic scripts are the
  right tool. Every Redis call goes through one circuit breaker (named "ratelimit"): bounded by REDIS_TIMEOUT_S,
  refused at once while Redis is known to be down, so a request that needs the shared count gets a 503
  (`DependencyUnavailable`) and is never let through uncounted.
Fixed windows, as the Express server's express-rate-limit had.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as LostConnection

from mcp_bastion.breaker import OK, Breaker
from mcp_bastion.config import Settings
from mcp_bastion.errors import ConfigError

DEPENDENCY = "ratelimit"
SUSPECTS_MAX = 100_000  # addresses remembered for lockout checks; a flood of sources resets the memory, not us
PURGE_EVERY = 4096  # local counters drop finished windows every this many hits, so memory follows live clients
PRINCIPAL_STEP_S = 60  # the per-principal budget is enforced per minute: a burst cannot spend the whole window
CALL_WINDOW_S = 60  # mcp.json's rateLimit counts per minute (`perMinute`)


NUMBERS_CACHED = 4096  # counts and seconds below this are written from a table: no str() per response
_NUMBERS = tuple(str(n).encode() for n in range(NUMBERS_CACHED))


def number(value: int) -> bytes:
    """The ASCII digits of a non-negative int (a table lookup for the common small ones)."""
    return _NUMBERS[value] if value < NUMBERS_CACHED else str(value).encode()


@dataclass(frozen=True)
class Limit:
    """`amount` requests per `window_s` seconds, counted under `namespace`; `name` is the policy clients see.

    The RateLimit-Policy header (draft-ietf-httpapi-ratelimit-headers-08 and later) is fixed per limit, so its
    bytes are built once here, not per response.
    """

    namespace: str
    amount: int
    window_s: int
    name: str = "default"
    policy: tuple[bytes, bytes] = field(init=False, compare=False, repr=False)
    label: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        label = b'"' + self.name.encode() + b'"'
        object.__setattr__(self, "label", label)
        value = label + b";q=" + number(self.amount) + b";w=" + number(self.window_s)
        object.__setattr__(self, "policy", (b"ratelimit-policy", value))


class Verdict(NamedTuple):
    """The outcome of one hit, with what the RateLimit headers say (a named tuple: built per request)."""

    allowed: bool
    limit: Limit
    remaining: int
    reset_s: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit-Policy and RateLimit (draft -08 and later), plus Retry-After when refused."""
        limit = self.limit
        current = limit.label + b";r=" + number(self.remaining) + b";t=" + number(self.reset_s)
        if self.allowed:
            return [limit.policy, (b"ratelimit", current)]
        return [limit.policy, (b"ratelimit", current), (b"retry-after", number(max(1, self.reset_s)))]


class Counters(Protocol):
    """Fixed-window counters."""

    async def hit(self, limit: Limit, key: str) -> int:
        """Count one and return the count in the current window."""

    async def count(self, limit: Limit, key: str) -> int:
        """The count in the current window."""


class LocalCounters:
    """In-process fixed windows aligned to the epoch: {(namespace, key): [window index, count, window length]}."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], list[int]] = {}
        self._hits = 0

    async def hit(self, limit: Limit, key: str) -> int:
        """Count one."""
        index = int(time.time()) // limit.window_s
        slot = self._windows.get((limit.namespace, key))
        if slot is None or slot[0] != index:
            slot = self._windows[(limit.namespace, key)] = [index, 0, limit.window_s]
        slot[1] += 1
        self._hits += 1
        if self._hits % PURGE_EVERY == 0:
            now = int(time.time())
            self._windows = {k: v for k, v in self._windows.items() if v[0] >= now // v[2]}
        return slot[1]

    async def count(self, limit: Limit, key: str) -> int:
        """The current count."""
        slot = self._windows.get((limit.namespace, key))
        return slot[1] if slot is not None and slot[0] == int(time.time()) // limit.window_s else 0


class SharedCounters:
    """The `limits` library's fixed-window strategy on shared (Redis) storage, behind a circuit breaker."""

    def __init__(self, storage: Storage, breaker: Breaker, pool: ConnectionPool | None = None) -> None:
        self.strategy = FixedWindowRateLimiter(storage)
        self.breaker = breaker
        self.pool = pool  # the storage's Redis connections: `limits` has no close of its own, so we own the pool
        self._items: dict[Limit, RateLimitItemPerSecond] = {}

    async def close(self) -> None:
        """Close the Redis connections (left open, each is an unclosed socket at the event loop's end)."""
        if self.pool is not None:
            await self.pool.aclose()

    def _item(self, limit: Limit) -> RateLimitItemPerSecond:
        item = self._items.get(limit)
        if item is None:
            # A huge amount: we only want the count; the decision is ours, the same for both backends.
            item = self._items[limit] = RateLimitItemPerSecond(2**31, limit.window_s, namespace=limit.namespace)
        return item

    async def hit(self, limit: Limit, key: str) -> int:
        """Count one (atomically in Redis).

        Raises:
            DependencyUnavailable: Redis failed, timed out, or is known to be down.
        """
        item = self._item(limit)
        return await self.breaker.run(lambda: self._hit(item, key))

    async def count(self, limit: Limit, key: str) -> int:
        """The current count.

        Raises:
            DependencyUnavailable: Redis failed, timed out, or is known to be down.
        """
        item = self._item(limit)
        return await self.breaker.run(lambda: self._count(item, key))

    async def _hit(self, item: RateLimitItemPerSecond, key: str) -> int:
        await self.strategy.hit(item, key)
        return await self._count(item, key)

    async def _count(self, item: RateLimitItemPerSecond, key: str) -> int:
        stats = await self.strategy.get_window_stats(item, key)
        return item.amount - stats.remaining


class Limiter:
    """The gateway's limits over one set of counters (Issue 10 item 1).

    - `per_ip`: RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW_MS, what the Express server's limit protected:
      unauthenticated traffic (public routes, login attempts) and refused authentications. A request that
      authenticates never counts here; once an address is over, its requests are refused before the store is asked
      (`flooded`), except those carrying a credential already known good from it.
    - `per_principal`: RATE_LIMIT_TOKEN_MAX_REQUESTS per window, enforced as a per-minute share of it (fixed
      one-minute windows of ceil(amount x 60 / window)): a burst spends one minute's share, never the whole
      window, and a principal that runs out waits at most a minute.
    - `auth_failures`: the failed-authentication lockout.
    - `call_limit`: the per-minute limits of mcp.json's `rateLimit` (per principal, server and tool).
    """

    def __init__(self, settings: Settings, counters: Counters | None = None) -> None:
        window_s = max(1, settings.rate_limit_window_ms // 1000)
        self.window_s = window_s
        self.per_ip = Limit("bastion-ip", settings.rate_limit_max_requests, window_s, "ip")
        step_s = min(PRINCIPAL_STEP_S, window_s)
        per_step = math.ceil(settings.rate_limit_token_max_requests * step_s / window_s)
        self.per_principal = Limit("bastion-principal", per_step, step_s, "principal")
        self.auth_failures = Limit("bastion-authfail", settings.auth_failure_limit, window_s, "auth-failures")
        self.counters = counters or self._counters(settings)
        self._suspects: dict[str, float] = {}  # addresses with a failed authentication seen by this instance
        self._flooded: dict[str, float] = {}  # addresses over their per-IP limit -> when their window ends
        self._call_limits: dict[int, Limit] = {}
        self.known = KnownCredentials(window_s, self.counters)  # the lockout's exception (Issue 9 item 10)

    async def close(self) -> None:
        """Release the shared counters' connections (nothing to do for in-process counters)."""
        if isinstance(self.counters, SharedCounters):
            await self.counters.close()

    @property
    def breaker(self) -> Breaker | None:
        """The breaker guarding shared counters (None when they are in-process)."""
        return self.counters.breaker if isinstance(self.counters, SharedCounters) else None

    @property
    def state(self) -> str:
        """ "ok", or "down" while the shared counters' breaker is open."""
        return self.breaker.state if self.breaker is not None else OK

    @staticmethod
    def _counters(settings: Settings) -> Counters:
        if settings.redis_url is None:
            return LocalCounters()
        url = settings.redis_url.get_secret_value()
        timeout_s = settings.redis_timeout_s
        # Options of limits' redis-py client: one immediate retry on a lost connection only (a pooled socket that
        # died with a restarted Redis), never redis-py's default loop backing off for seconds behind the breaker.
        # Errors are wrapped in limits' StorageError, which the breaker turns into DependencyUnavailable.
        retry = Retry(NoBackoff(), 1, supported_errors=(LostConnection,))
        options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, "retry": retry}
        pool = ConnectionPool.from_url(url, **options)  # a pool's retry and timeouts are its connections'
        owned: dict[str, Any] = {"connection_pool": pool}  # `limits` types its options as scalars; it passes this on
        found = storage_from_string(f"async+{url}", implementation="redispy", wrap_exceptions=True, **owned)
        if not isinstance(found, Storage):
            raise ConfigError("REDIS_URL: the rate-limit storage is not asynchronous")
        breaker = Breaker(
            DEPENDENCY, failures=(StorageError,), timeout_s=timeout_s, open_s=settings.redis_breaker_open_s
        )
        return SharedCounters(found, breaker, pool)

    def call_limit(self, per_minute: int) -> Limit:
        """The limit object of a `perMinute` from mcp.json (one per distinct amount; the key tells callers apart)."""
        found = self._call_limits.get(per_minute)
        if found is None:
            found = self._call_limits[per_minute] = Limit("bastion-call", per_minute, CALL_WINDOW_S, "tool")
        return found

    async def hit(self, limit: Limit, key: str) -> Verdict:
        """Count one request against `limit` for `key`; the verdict carries what the RateLimit headers say.

        The reset is the end of the current epoch-aligned window (the local counters' own; the shared ones align
        to their first hit, so there it is an estimate within one window).
        """
        count = await self.counters.hit(limit, key)
        window_s = limit.window_s
        reset_s = window_s - int(time.time()) % window_s
        amount = limit.amount
        return Verdict(count <= amount, limit, amount - count if count < amount else 0, reset_s)

    async def hit_address(self, key: str) -> Verdict:
        """Count one unauthenticated request from address `key` (a public route, or a refused authentication).

        Once over, the address is remembered as flooded until its window ends, so `flooded` refuses it for free.
        """
        verdict = await self.hit(self.per_ip, key)
        if not verdict.allowed:
            if len(self._flooded) > SUSPECTS_MAX:
                self._flooded.clear()
            self._flooded[key] = time.monotonic() + verdict.reset_s
        return verdict

    def flooded(self, key: str) -> Verdict | None:
        """A refusal if address `key` went over its per-IP limit in this window (as this instance saw), else None.

        A dictionary look-up, no counter I/O: authenticated requests pay nothing for the per-IP limit.
        """
        until = self._flooded.get(key)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._flooded[key]
            return None
        return Verdict(False, self.per_ip, 0, math.ceil(left))

    async def locked_out(self, key: str) -> Verdict | None:
        """A refusal if `key` has used up its failed-authentication allowance, else None.

        Only addresses that failed here within the window are looked up, so a clean request costs nothing.
        """
        suspect_until = self._suspects.get(key)
        if suspect_until is None:
            return None
        if suspect_until < time.monotonic():
            del self._suspects[key]
            return None
        count = await self.counters.count(self.auth_failures, key)
        return self._verdict(self.auth_failures, count) if count >= self.auth_failures.amount else None

    async def failed_auth(self, key: str) -> None:
        """Count one failed authentication."""
        if len(self._suspects) > SUSPECTS_MAX:
            self._suspects.clear()
        self._suspects[key] = time.monotonic() + self.window_s
        await self.counters.hit(self.auth_failures, key)

    def _verdict(self, limit: Limit, count: int) -> Verdict:
        now = time.time()
        reset = max(1, math.ceil((int(now) // limit.window_s + 1) * limit.window_s - now))
        return Verdict(False, limit, max(0, limit.amount - count), reset)


# Issue 9 item 10: credentials known good per address, so one client's failed guesses cannot lock out the others
# behind the same address (NAT). Kept apart from the counters above: this is the only code that reads or writes it.
KNOWN_MAX = 16_384  # (address, credential) pairs remembered per instance (~4 MB at most); past it the oldest go
KNOWN_NAMESPACE = "bastion-known"  # shared keys: bastion-known/{address}/{credential hash}/{window index}
KNOWN_DIGEST_CHARS = 32  # hex of the credential's SHA-256 kept per pair: 128 bits tell credentials apart


class KnownCredentials:
    """Which credentials (Principal.credential, a SHA-256 hex of the token, never a token) succeeded from which
    address in the current or the previous fixed window of the failure counter (Issue 9 item 10).

    A lockout (too many failed authentications from an address) does not hold for a credential that succeeded from
    that address before it: it was not guessed. A credential never seen from there still waits the lockout out, so
    guessing gains nothing. The memory here is bounded (`max_entries`, oldest pairs dropped first); with shared
    counters (REDIS_URL) every success is also written to the limits storage once per window and pair, behind the
    counters' circuit breaker, so every instance knows it; this memory is then a cache of it.
    """

    def __init__(
        self,
        window_s: int,
        counters: Counters,
        *,
        max_entries: int = KNOWN_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._shared = counters if isinstance(counters, SharedCounters) else None
        self._clock = clock
        self._seen: dict[str, int] = {}  # "address credential-prefix" -> the last window index it succeeded in

    def __len__(self) -> int:
        return len(self._seen)

    def _window(self) -> int:
        return int(self._clock()) // self.window_s

    async def remember(self, address: str, credential: str) -> None:
        """Note one success of `credential` from `address` (cheap when already noted in this window).

        Raises:
            DependencyUnavailable: the shared storage could not be written (nothing is remembered then).
        """
        key = f"{address} {credential[:KNOWN_DIGEST_CHARS]}"
        index = self._window()
        if self._seen.get(key) == index:
            return
        if self._shared is not None:
            shared, storage_key = self._shared, self._storage_key(key, index)
            await shared.breaker.run(lambda: shared.strategy.storage.incr(storage_key, 2 * self.window_s))
        self._note(key, index)

    async def known(self, address: str, credential: str) -> bool:
        """Whether `credential` succeeded from `address` in this window or the previous one.

        Raises:
            DependencyUnavailable: the shared storage could not be read (the caller keeps the lockout: fail closed).
        """
        key = f"{address} {credential[:KNOWN_DIGEST_CHARS]}"
        index = self._window()
        if self._seen.get(key, index - 2) >= index - 1:
            return True
        if self._shared is None:
            return False
        for window in (index, index - 1):
            if await self._stored(self._shared, self._storage_key(key, window)):
                self._note(key, window)
                return True
        return False

    @staticmethod
    async def _stored(shared: SharedCounters, storage_key: str) -> bool:
        return await shared.breaker.run(lambda: shared.strategy.storage.get(storage_key)) > 0

    def _note(self, key: str, index: int) -> None:
        self._seen.pop(key, None)  # re-inserted last: the dict's order is oldest success first
        while len(self._seen) >= self.max_entries:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = index

    @staticmethod
    def _storage_key(key: str, index: int) -> str:
        address, credential = key.split(" ")
        return f"{KNOWN_NAMESPACE}/{address}/{credential}/{index}"
