"""Calls on a shared child that restarts (Issue 9 item 2) and call timeouts as a liveness signal (item 3).

Fast: the shipped FakeChildren and FakeClock behind the supervisor's seams (tests/supervisor/fake.py).
"""

import asyncio
from typing import Any

import pytest

from mcp_bastion.errors import REQUEST_TIMEOUT, SERVER_UNAVAILABLE
from mcp_bastion.relay import ResponseSlot
from mcp_bastion.supervisor import ServerState
from tests.supervisor.fake import Supervised, supervised

pytestmark = pytest.mark.anyio


def call(text: str, request_id: int = 7) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}},
    }


async def running(**settings: Any) -> Supervised:
    fake = supervised(**settings)
    fake.handle.start()
    await fake.clock.advance(0)
    assert fake.handle.state == ServerState.RUNNING
    return fake


async def test_a_call_arriving_while_the_child_restarts_waits_and_is_answered_by_the_new_child() -> None:
    """Issue 9 item 2: instead of -32000 at once, the call waits for `ready` and reaches the new child."""
    fake = await running(restart_backoff_initial_s=1.0, restart_hold_s=10)
    fake.children.last.crash(3)
    await fake.clock.advance(0)
    assert fake.handle.state == ServerState.RESTARTING
    slot = ResponseSlot()
    forwarding = fake.backend.forward(call("held"), slot)
    task = asyncio.ensure_future(forwarding)
    await fake.clock.advance(0.5)
    assert not slot.future.done()  # held, not failed at once
    await fake.clock.advance(1.0)
    await task
    answer = slot.future.result()
    assert answer["id"] == 7
    assert answer["result"]["content"][0]["text"] == "held"
    assert fake.children.last.received[-1]["params"]["arguments"] == {"text": "held"}
    await fake.handle.stop()


async def test_a_call_held_past_restart_hold_s_gets_an_error_with_a_retry_hint() -> None:
    """Issue 9 item 2: the hold is bounded; then -32000 with data.retryAfterSeconds (when the next attempt is due)."""
    fake = await running(restart_backoff_initial_s=8.0, restart_max_attempts=10, restart_hold_s=2)
    fake.children.fail_next = 100
    fake.children.last.crash(3)
    await fake.clock.advance(0)
    slot = ResponseSlot()
    task = asyncio.ensure_future(fake.backend.forward(call("late"), slot))
    await fake.clock.advance(1.9)
    assert not slot.future.done()
    await fake.clock.advance(0.2)
    await task
    answer = slot.future.result()
    assert answer["error"]["code"] == SERVER_UNAVAILABLE
    retry_after = answer["error"]["data"]["retryAfterSeconds"]
    assert 1 <= retry_after <= 8  # the next attempt is due within the backoff
    assert answer["error"]["message"] == f"server 'fake' is not running (state: restarting); retry in {retry_after} s"
    await fake.handle.stop()


async def test_a_call_in_flight_when_the_child_dies_fails_at_once_and_is_not_replayed() -> None:
    """Issue 9 item 2: only calls that arrive during the restart wait; one the dead child had may have had effects."""
    fake = await running(restart_backoff_initial_s=1.0)
    first = fake.children.last
    first.hang()
    slot = ResponseSlot()
    await fake.backend.forward(call("lost"), slot)
    first.crash(3)
    await fake.clock.advance(0)
    answer = slot.future.result()
    assert answer["error"] == {
        "code": SERVER_UNAVAILABLE,
        "message": "server 'fake' stopped before answering (exited with code 3)",
    }
    await fake.clock.advance(2)
    assert fake.handle.state == ServerState.RUNNING
    assert not any(m.get("method") == "tools/call" for m in fake.children.last.received)
    await fake.handle.stop()


async def test_a_call_to_a_stopped_server_fails_at_once_without_a_retry_hint() -> None:
    """Issue 9 item 2: nothing is coming back by itself, so nothing is held and no hint is given."""
    fake = await running()
    await fake.handle.stop()
    slot = ResponseSlot()
    await fake.backend.forward(call("x"), slot)
    assert slot.future.result()["error"] == {"code": SERVER_UNAVAILABLE, "message": "server 'fake' is not running"}


async def test_call_timeouts_in_a_row_make_the_child_unresponsive_and_it_is_restarted() -> None:
    """Issue 9 item 3: a call that times out counts like an unanswered ping."""
    fake = await running(timeout_s=0.01, unresponsive_after=3, ping_interval_s=3600)
    first = fake.children.last
    first.hang()
    slots = [ResponseSlot() for _ in range(3)]
    for number, slot in enumerate(slots):
        await fake.backend.forward(call("t", number + 1), slot)
        await fake.clock.advance(0.01)  # the call timeout, on the injected clock since Issue 11 item 2
        assert slot.future.done()
    assert [s.future.result()["error"]["code"] for s in slots] == [REQUEST_TIMEOUT] * 3
    await fake.clock.advance(1)
    assert first.stopped_hung is True
    assert [name for name, _ in fake.named("server.unresponsive", "server.restart")] == [
        "server.unresponsive",
        "server.restart",
    ]
    assert fake.handle.state == ServerState.RUNNING
    await fake.handle.stop()
