"""A circuit breaker for one shared dependency (the Redis store, the shared rate-limit counters).

    closed ──FAILURES_TO_OPEN failures in a row──▶ open ──open_s later, one caller──▶ half-open (a probe)
      ▲                                              ▲                                   │
      └────────────── the probe succeeds ────────────┼──────────── the probe fails ──────┘

Every call is bounded by `timeout_s`, so a frozen server costs that long at most; while open, calls are refused
at once with `DependencyUnavailable` (503 + Retry-After upstream), so a dead server costs nothing. The outage is
logged once when the breaker opens and once when it closes again, and reported to the watchers (the audit log)
as `dependency.down` / `dependency.up`: never once per request. The clock is injected (tests drive it).
"""

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from mcp_bastion.errors import DependencyUnavailable

log = logging.getLogger("mcp_bastion.breaker")

T = TypeVar("T")

DEPENDENCY_TIMEOUT_S = 0.25  # one call to Redis on loopback or a LAN takes well under a millisecond
BREAKER_OPEN_S = 5.0  # refuse at once for this long after an outage is seen, then let one probe through
FAILURES_TO_OPEN = 3  # consecutive failures that open the breaker: one lost packet is not an outage
REASON_MAX_CHARS = 200  # an exception's text in the log and the audit line is cut here

OK = "ok"
DOWN = "down"


class EventSink(Protocol):
    """Receives `dependency.down` / `dependency.up` (AuditLog.record fits)."""

    def __call__(self, event: str, **fields: Any) -> None:
        """Record one event."""


class Breaker:
    """Guards the calls to one dependency named `name`; not thread-safe (one event loop)."""

    def __init__(
        self,
        name: str,
        *,
        failures: tuple[type[Exception], ...],
        timeout_s: float = DEPENDENCY_TIMEOUT_S,
        open_s: float = BREAKER_OPEN_S,
        error: type[DependencyUnavailable] = DependencyUnavailable,
        clock: Callable[[], float] = time.monotonic,
        failures_to_open: int = FAILURES_TO_OPEN,
    ) -> None:
        self.name = name
        self.failures: tuple[type[Exception], ...] = (TimeoutError, *failures)  # ours: the timeout
        self.timeout_s = timeout_s
        self.open_s = open_s
        self.error = error
        self.clock = clock
        self.failures_to_open = failures_to_open
        self._in_a_row = 0
        self._down_since: float | None = None  # set while open or half-open
        self._probe_at = 0.0  # when open: the time the next probe may go
        self._probing = False
        self._watchers: list[EventSink] = []

    @property
    def state(self) -> str:
        """ "ok" while closed, "down" while open or half-open."""
        return OK if self._down_since is None else DOWN

    def watch(self, sink: EventSink) -> None:
        """Report every outage and recovery to `sink` as well as to the log."""
        self._watchers.append(sink)

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Await `operation()` within `timeout_s`, or refuse at once while the breaker is open.

        Raises:
            DependencyUnavailable (or the `error` subclass): the breaker is open, or the call failed or timed out;
                the foreign exception is its cause.
        """
        probe = self._admit()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await operation()
        except self.failures as exc:
            self._failed(exc)
            raise self._refusal(f"{self.name} call failed: {type(exc).__name__}") from exc
        finally:
            if probe:
                self._probing = False  # also when cancelled: the next caller probes instead
        self._succeeded()
        return result

    def retry_after_s(self) -> int:
        """Whole seconds until a call may be let through again (at least 1)."""
        if self._down_since is None:
            return 1
        return max(1, math.ceil(self._probe_at - self.clock()))

    def _admit(self) -> bool:
        """Whether this call is the half-open probe; raises while open or while another probe runs."""
        if self._down_since is None:
            return False
        if self._probing or self.clock() < self._probe_at:
            raise self._refusal(f"{self.name} is unavailable")
        self._probing = True
        return True

    def _refusal(self, message: str) -> DependencyUnavailable:
        return self.error(message, dependency=self.name, retry_after_s=self.retry_after_s())

    def _failed(self, exc: BaseException) -> None:
        now = self.clock()
        self._in_a_row += 1
        if self._down_since is not None:
            self._probe_at = now + self.open_s  # a failed probe: stay open, quietly (the outage was reported)
            return
        if self._in_a_row < self.failures_to_open:
            return
        self._down_since = now
        self._probe_at = now + self.open_s
        reason = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:REASON_MAX_CHARS]
        log.warning(
            "dependency %s is down (%s): requests that need it get 503 + Retry-After; probing every %.1fs",
            self.name,
            reason,
            self.open_s,
        )
        self._tell("dependency.down", outcome="error", dependency=self.name, reason=reason)

    def _succeeded(self) -> None:
        self._in_a_row = 0
        if self._down_since is None:
            return
        down_s = round(self.clock() - self._down_since, 3)
        self._down_since = None
        # WARNING like the outage line, so whoever saw that one also sees this one.
        log.warning("dependency %s recovered after %.1fs", self.name, down_s)
        self._tell("dependency.up", outcome="ok", dependency=self.name, down_s=down_s)

    def _tell(self, event: str, **fields: Any) -> None:
        for sink in self._watchers:
            sink(event, **fields)
