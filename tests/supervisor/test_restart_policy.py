"""Restart policy on fake children and a fake clock (fast): backoff, giving up, the slow retry, liveness."""

import pytest

from mcp_bastion.supervisor import ServerState
from tests.supervisor.fake import supervised

pytestmark = pytest.mark.anyio

JITTER_LOW, JITTER_HIGH = 0.8, 1.2  # supervisor.JITTER is ±20 %
STEP_S = 0.05  # fake seconds per advance while watching the backoff
BACKOFF_BOUND_S = 10.0  # fake seconds the three attempts take at most


async def test_backoff_doubles_per_attempt_and_a_crash_loop_gives_up_with_an_audited_event() -> None:
    """Issue 9 item 5: after RESTART_MAX_ATTEMPTS quick crashes the server is `failed` and `server.gave_up` says so
    (with FAILED_RETRY_S 0 there is no retry, and the event says that too)."""
    fake = supervised(restart_backoff_initial_s=1.0, restart_max_attempts=2, failed_retry_s=0)
    fake.children.fail_next = 10
    fake.handle.start()
    spawned_at: list[float] = []
    for _ in range(int(BACKOFF_BOUND_S / STEP_S)):
        count = len(fake.children.spawned)
        await fake.clock.advance(STEP_S)
        if len(fake.children.spawned) > count:
            spawned_at.append(fake.clock.now())
        if len(spawned_at) == 3:
            break
    assert len(spawned_at) == 3, "three attempts within the bound"
    first, second = spawned_at[1] - spawned_at[0], spawned_at[2] - spawned_at[1]
    assert 1.0 * JITTER_LOW - STEP_S <= first <= 1.0 * JITTER_HIGH + STEP_S
    assert 2.0 * JITTER_LOW - STEP_S <= second <= 2.0 * JITTER_HIGH + STEP_S  # twice as long
    await fake.clock.advance(0)
    assert fake.handle.state == ServerState.FAILED
    assert fake.handle.retry_after_s() is None  # nothing will change by itself
    reason = "exited with code 4 during initialize"
    assert fake.named("server.crash", "server.gave_up") == [
        ("server.crash", {"server": "fake", "reason": reason, "attempt": 1}),
        ("server.crash", {"server": "fake", "reason": reason, "attempt": 2}),
        ("server.crash", {"server": "fake", "reason": reason, "attempt": 3}),
        ("server.gave_up", {"server": "fake", "reason": reason, "attempts": 3, "retry_in_s": None}),
    ]
    await fake.clock.advance(3600)
    assert len(fake.children.spawned) == 3


async def test_a_failed_server_is_retried_after_failed_retry_s_and_recovery_clears_last_error() -> None:
    """Issue 9 item 5: `failed` is not forever: FAILED_RETRY_S later one more child is started; once it answers
    initialize the server runs and /health's last_error is cleared."""
    fake = supervised(restart_backoff_initial_s=0.1, restart_max_attempts=1, failed_retry_s=300)
    fake.children.fail_next = 2
    fake.handle.start()
    await fake.clock.advance(1)
    assert fake.handle.state == ServerState.FAILED
    assert fake.handle.last_error == "exited with code 4 during initialize"
    assert fake.named("server.gave_up")[0][1]["retry_in_s"] == 300
    assert fake.handle.retry_after_s() == 300
    await fake.clock.advance(298)
    assert fake.handle.state == ServerState.FAILED
    assert len(fake.children.spawned) == 2
    await fake.clock.advance(3)
    assert fake.handle.state == ServerState.RUNNING
    assert fake.handle.last_error is None
    assert fake.named("server.restart")[-1] == (
        "server.restart",
        {"server": "fake", "reason": "retry after failure", "attempt": 1},
    )
    await fake.handle.stop()


async def test_a_slow_retry_that_crashes_again_gives_up_again_without_another_fast_loop() -> None:
    """Issue 9 item 5: one try per FAILED_RETRY_S, not another round of fast restarts."""
    fake = supervised(restart_backoff_initial_s=0.1, restart_max_attempts=2, failed_retry_s=60)
    fake.children.fail_next = 100
    fake.handle.start()
    await fake.clock.advance(5)
    assert [name for name, _ in fake.named("server.gave_up")] == ["server.gave_up"]
    spawned = len(fake.children.spawned)
    await fake.clock.advance(61)
    assert len(fake.children.spawned) == spawned + 1
    assert len(fake.named("server.gave_up")) == 2
    assert fake.handle.state == ServerState.FAILED
    await fake.handle.stop()


async def test_a_hung_child_is_pinged_marked_unresponsive_audited_killed_and_restarted() -> None:
    """Issue 9 item 3: a child silent for PING_INTERVAL_S is pinged; UNRESPONSIVE_AFTER unanswered pings in a row
    make it `unresponsive` (audited), it is stopped the hung way (TERM, then KILL) and restarted for that reason."""
    fake = supervised(ping_interval_s=15, ping_timeout_s=5, unresponsive_after=3, restart_backoff_initial_s=0.5)
    fake.handle.start()
    await fake.clock.advance(0)
    first = fake.children.last
    assert fake.handle.state == ServerState.RUNNING
    await fake.clock.advance(15)
    assert [m["method"] for m in first.received].count("ping") == 1  # answered: the healthy child stays
    assert fake.handle.liveness.missed == 0
    first.hang()
    await fake.clock.advance(15 + 5 + 5)
    assert fake.handle.liveness.missed == 2
    assert fake.handle.state == ServerState.RUNNING
    await fake.clock.advance(5)
    assert first.stopped_hung is True
    assert fake.named("server.unresponsive") == [
        ("server.unresponsive", {"server": "fake", "pid": first.pid, "missed": 3})
    ]
    assert not any(name == "server.crash" for name, _ in fake.events)
    await fake.clock.advance(1)
    assert fake.handle.state == ServerState.RUNNING
    assert fake.children.last is not first
    assert fake.named("server.restart") == [
        ("server.restart", {"server": "fake", "reason": "unresponsive", "attempt": 1})
    ]
    assert fake.handle.last_error is None
    await fake.handle.stop()


async def test_the_state_is_unresponsive_while_the_hung_child_is_being_killed() -> None:
    """Issue 9 item 3: /health shows `unresponsive` (not `running`) once the child is known to be hung."""
    fake = supervised(ping_interval_s=1, ping_timeout_s=1, unresponsive_after=1)
    fake.handle.start()
    await fake.clock.advance(0)
    child = fake.children.last
    child.hang()
    seen: list[ServerState] = []
    original = child.stop

    async def stop(*, hung: bool = False) -> None:
        seen.append(fake.handle.state)
        await original(hung=hung)

    child.stop = stop  # type: ignore[method-assign]
    await fake.clock.advance(2)
    assert seen == [ServerState.UNRESPONSIVE]
    await fake.handle.stop()


async def test_an_answer_resets_the_count_of_missed_pings() -> None:
    """Issue 9 item 3: misses must be in a row; a child that answers again starts from zero."""
    fake = supervised(ping_interval_s=10, ping_timeout_s=2, unresponsive_after=3)
    fake.handle.start()
    await fake.clock.advance(0)
    child = fake.children.last
    child.hang()
    await fake.clock.advance(10 + 2 + 2)
    assert fake.handle.liveness.missed == 2
    child.resume()  # the third ping, sent while it was hung, is answered now
    await fake.clock.advance(0)
    assert fake.handle.liveness.missed == 0
    await fake.clock.advance(60)
    assert fake.handle.state == ServerState.RUNNING
    assert fake.named("server.unresponsive") == []
    await fake.handle.stop()
