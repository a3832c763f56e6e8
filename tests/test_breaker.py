"""The circuit breaker in front of Redis (Issue 9 item 1), in process with an injected clock: no sockets, no sleeps."""

import asyncio
import logging
from typing import Any

import pytest

from mcp_bastion.breaker import Breaker
from mcp_bastion.errors import DependencyUnavailable
from mcp_bastion.store import StoreError, StoreUnavailable

pytestmark = pytest.mark.anyio

OPEN_S = 5.0
TIMEOUT_S = 0.05


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Outage(Exception):
    """Stands for the client library's connection error."""


class Dependency:
    """A fake dependency that answers, fails or hangs, and counts the calls that reached it."""

    def __init__(self) -> None:
        self.mode = "up"
        self.calls = 0

    async def call(self) -> str:
        self.calls += 1
        if self.mode == "down":
            raise Outage("connection refused")
        if self.mode == "frozen":
            await asyncio.Event().wait()
        return "answer"


class Events:
    """An EventSink that keeps what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.seen.append((event, fields))


def breaker(clock: FakeClock, **extra: Any) -> Breaker:
    options: dict[str, Any] = {"failures": (Outage,), "timeout_s": TIMEOUT_S, "open_s": OPEN_S, "clock": clock}
    return Breaker("store", **{**options, **extra})


async def fail(guard: Breaker, dependency: Dependency, times: int) -> list[DependencyUnavailable]:
    errors = []
    for _ in range(times):
        with pytest.raises(DependencyUnavailable) as caught:
            await guard.run(dependency.call)
        errors.append(caught.value)
    return errors


async def test_a_healthy_dependency_answers_through_a_closed_breaker() -> None:
    """Issue 9 item 1: while the dependency answers, the breaker is "ok" and returns its answers."""
    guard, dependency = breaker(FakeClock()), Dependency()
    assert [await guard.run(dependency.call) for _ in range(5)] == ["answer"] * 5
    assert guard.state == "ok"


async def test_failures_in_a_row_open_the_breaker_and_later_calls_never_reach_the_dependency() -> None:
    """Issue 9 item 1: three failures open it; then callers are refused at once (no call reaches Redis)."""
    clock, dependency = FakeClock(), Dependency()
    guard = breaker(clock)
    dependency.mode = "down"
    first = await fail(guard, dependency, 3)
    assert all(isinstance(e.__cause__, Outage) for e in first)  # translated, the foreign error kept as the cause
    assert guard.state == "down"
    refused = await fail(guard, dependency, 10)
    assert dependency.calls == 3
    assert {(e.dependency, e.http_status) for e in refused} == {("store", 503)}
    assert {e.retry_after_s for e in refused} == {5}
    clock.now += 3.2
    assert (await fail(guard, dependency, 1))[0].retry_after_s == 2


async def test_a_success_between_failures_keeps_the_breaker_closed() -> None:
    """Issue 9 item 1: only failures in a row count; a blip refuses that one call and nothing else."""
    guard, dependency = breaker(FakeClock()), Dependency()
    for _ in range(4):
        dependency.mode = "down"
        await fail(guard, dependency, 2)
        dependency.mode = "up"
        assert await guard.run(dependency.call) == "answer"
    assert guard.state == "ok"


async def test_after_the_open_period_one_probe_goes_through_and_closes_the_breaker_on_success() -> None:
    """Issue 9 item 1: recovery without a restart: after open_s one probe reaches the dependency; success closes."""
    clock, dependency = FakeClock(), Dependency()
    guard = breaker(clock)
    dependency.mode = "down"
    await fail(guard, dependency, 3)
    dependency.mode = "up"
    await fail(guard, dependency, 1)  # still open: the dependency is not even asked
    assert dependency.calls == 3
    clock.now += OPEN_S
    assert await guard.run(dependency.call) == "answer"
    assert guard.state == "ok"
    assert dependency.calls == 4


async def test_a_failed_probe_keeps_the_breaker_open_for_another_period() -> None:
    """Issue 9 item 1: a probe that fails re-opens for open_s; nothing else reached the dependency meanwhile."""
    clock, dependency = FakeClock(), Dependency()
    guard = breaker(clock)
    dependency.mode = "down"
    await fail(guard, dependency, 3)
    clock.now += OPEN_S
    await fail(guard, dependency, 1)  # the probe
    assert dependency.calls == 4
    clock.now += OPEN_S - 0.1
    await fail(guard, dependency, 5)
    assert dependency.calls == 4
    clock.now += 0.1
    await fail(guard, dependency, 1)
    assert dependency.calls == 5


async def test_only_one_probe_at_a_time_while_half_open() -> None:
    """Issue 9 item 1: a burst after the open period sends one probe to a frozen dependency, not the whole burst."""
    clock, dependency = FakeClock(), Dependency()
    guard = breaker(clock, timeout_s=10.0)
    dependency.mode = "down"
    await fail(guard, dependency, 3)
    clock.now += OPEN_S
    dependency.mode = "frozen"
    probe = asyncio.create_task(guard.run(dependency.call))
    await asyncio.sleep(0)  # let the probe start and block
    assert dependency.calls == 4
    await fail(guard, dependency, 5)
    assert dependency.calls == 4
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    dependency.mode = "up"
    assert await guard.run(dependency.call) == "answer"  # a cancelled probe frees the slot for the next caller


async def test_a_frozen_dependency_costs_the_timeout_and_counts_as_a_failure() -> None:
    """Issue 9 item 1: a call that does not answer within timeout_s is a failure (bounded), not a hang."""
    guard, dependency = breaker(FakeClock()), Dependency()
    dependency.mode = "frozen"
    async with asyncio.timeout(TIMEOUT_S * 3 * 20):  # the test's own bound, far above 3 timeouts
        errors = await fail(guard, dependency, 3)
    assert all(isinstance(e.__cause__, TimeoutError) for e in errors)
    assert guard.state == "down"


async def test_an_outage_is_reported_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9 item 1: one warning and one dependency.down per outage (not per request), one recovery line and
    dependency.up naming the dependency."""
    clock, dependency, events = FakeClock(), Dependency(), Events()
    guard = breaker(clock)
    guard.watch(events)
    dependency.mode = "down"
    with caplog.at_level(logging.WARNING, logger="mcp_bastion.breaker"):
        await fail(guard, dependency, 50)
        for _ in range(3):
            clock.now += OPEN_S
            await fail(guard, dependency, 10)  # failed probes and refusals: still the same outage
        dependency.mode = "up"
        clock.now += OPEN_S
        await guard.run(dependency.call)
        await guard.run(dependency.call)
    lines = [r.getMessage() for r in caplog.records if r.name == "mcp_bastion.breaker"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("dependency store is down (Outage: connection refused)")
    assert lines[1] == "dependency store recovered after 20.0s"
    assert [(name, fields["dependency"], fields["outcome"]) for name, fields in events.seen] == [
        ("dependency.down", "store", "error"),
        ("dependency.up", "store", "ok"),
    ]
    assert events.seen[1][1]["down_s"] == 20.0


async def test_a_store_breaker_raises_store_errors_that_name_the_store() -> None:
    """Issue 9 item 1: the store's breaker raises StoreUnavailable, which authentication already fails closed on."""
    guard, dependency = breaker(FakeClock(), error=StoreUnavailable), Dependency()
    dependency.mode = "down"
    error = (await fail(guard, dependency, 1))[0]
    assert isinstance(error, StoreError)
    assert isinstance(error, StoreUnavailable)
    assert error.data == {"dependency": "store", "retryAfterSeconds": 1}


async def test_errors_that_are_not_outages_pass_through_untouched() -> None:
    """Issue 9 item 1: only the declared failures (and the timeout) count; a bug elsewhere is not an outage."""
    guard = breaker(FakeClock())

    async def broken() -> None:
        raise KeyError("not an outage")

    for _ in range(5):
        with pytest.raises(KeyError):
            await guard.run(broken)
    assert guard.state == "ok"
