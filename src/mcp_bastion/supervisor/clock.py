"""Time as the supervisor sees it: injected, so tests drive backoff, retries and liveness without waiting.

`SystemClock` is the real one; `mcp_bastion.testing.FakeClock` is the one tests advance by hand.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    """A scheduled callback that can be called off (asyncio.TimerHandle, or a fake clock's task)."""

    def cancel(self) -> Any:
        """Do not run it."""


class Clock(Protocol):
    """Monotonic seconds and a sleep measured on them."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` on this clock."""

    def call_later(self, seconds: float, callback: Callable[..., None], *args: Any) -> Cancellable:
        """Run `callback(*args)` after `seconds` on this clock (the relay's call timers, Issue 11 item 2)."""


class SystemClock:
    """The event loop's real time."""

    def now(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep."""
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[..., None], *args: Any) -> Cancellable:
        """loop.call_later: a timer handle, no task (one per call in flight on the hot path)."""
        return asyncio.get_running_loop().call_later(seconds, callback, *args)


async def within(clock: Clock, awaitable: Awaitable[Any], seconds: float) -> bool:
    """Await `awaitable` for at most `seconds` on `clock`; True if it finished in time (it is cancelled if not)."""
    work = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not work.done():
            work.cancel()
    if not work.done():
        await asyncio.wait({work})  # let the cancellation land, so the caller can tell a timeout by work.cancelled()
    return not work.cancelled() and work.exception() is None
