"""How long a call may take (Issue 11 item 2) and an answer too large to relay (Issue 11 item 1), in process.

Fast: the shipped FakeChildren and FakeClock behind the supervisor's seams (tests/supervisor/fake.py); the relay's
call timers run on the injected clock.
"""

from typing import Any

import pytest

from mcp_bastion.errors import INTERNAL_ERROR, REQUEST_TIMEOUT
from mcp_bastion.relay import ResponseSlot
from mcp_bastion.relay.backend import IDLE, TOTAL, expired_limit
from mcp_bastion.supervisor import ServerState
from tests.supervisor.fake import Supervised, supervised

pytestmark = pytest.mark.anyio

IDLE_S = 60.0
TOTAL_S = 300.0
TOKEN = "client-token"
NO_PINGS_S = 1e6


def long_call(request_id: int = 7) -> dict[str, Any]:
    params = {"name": "echo", "arguments": {"text": "t"}, "_meta": {"progressToken": TOKEN}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def hung_child() -> Supervised:
    # No liveness pings: the hung fake would not answer them, a real child busy with one call would.
    fake = supervised(timeout_s=IDLE_S, max_total_s=TOTAL_S, ping_interval_s=NO_PINGS_S, unresponsive_after=99)
    fake.handle.start()
    await fake.clock.advance(0)
    assert fake.handle.state == ServerState.RUNNING
    fake.children.last.hang()  # takes calls, answers none: only progress (sent by the test) shows it is alive
    return fake


async def forwarded(fake: Supervised, request_id: int = 7) -> tuple[ResponseSlot, int]:
    slot = ResponseSlot(streaming=True)
    our_id = await fake.backend.forward(long_call(request_id), slot)
    return slot, our_id


def test_the_total_maximum_fires_before_the_idle_timeout_and_neither_fires_early() -> None:
    """Issue 11 item 2: the pure decision, at the edges."""
    assert expired_limit(sent=0, heard=0, now=59.9, idle_s=60, max_total_s=300) is None
    assert expired_limit(sent=0, heard=0, now=60, idle_s=60, max_total_s=300) == IDLE
    assert expired_limit(sent=0, heard=250, now=309, idle_s=60, max_total_s=300) == TOTAL
    assert expired_limit(sent=0, heard=250, now=299, idle_s=60, max_total_s=300) is None
    assert expired_limit(sent=0, heard=0, now=30, idle_s=60, max_total_s=30) == TOTAL


async def test_a_call_that_reports_progress_outlives_the_idle_timeout_and_gets_its_answer() -> None:
    """Issue 11 item 2: progress every 30 s keeps a call alive well past REQUEST_TIMEOUT_S (60 s)."""
    fake = await hung_child()
    slot, our_id = await forwarded(fake)
    for step in range(6):  # 180 s in all, three times the idle timeout
        await fake.clock.advance(30)
        fake.children.last.progress(our_id, step)
    assert not slot.future.done()
    assert slot.stream is not None
    assert slot.stream.qsize() == 6
    assert (await slot.stream.get())["params"]["progressToken"] == TOKEN
    fake.children.last.resume()
    await fake.clock.advance(0)
    assert slot.future.result()["result"]["content"][0]["text"] == "t"
    await fake.handle.stop()


async def test_a_call_that_keeps_reporting_progress_ends_at_its_total_maximum_with_an_error_naming_it() -> None:
    """Issue 11 item 2: progress cannot keep a call forever; the error says the total maximum fired."""
    fake = await hung_child()
    slot, our_id = await forwarded(fake)
    while not slot.future.done():
        await fake.clock.advance(10)
        fake.children.last.progress(our_id, 1)
        assert fake.clock.now() - 1000.0 <= TOTAL_S + 10, "the call outlived its total maximum"
    answer = slot.future.result()
    assert answer["id"] == 7
    assert answer["error"]["code"] == REQUEST_TIMEOUT
    assert answer["error"]["data"] == {"timeout": TOTAL, "seconds": TOTAL_S}
    assert "maximum total time" in answer["error"]["message"]
    assert fake.backend.pending == {}
    await fake.handle.stop()


async def test_a_call_whose_progress_stops_times_out_one_idle_period_after_the_last_report() -> None:
    """Issue 11 item 2: the idle timeout counts from the last progress notification, and the error says so."""
    fake = await hung_child()
    slot, our_id = await forwarded(fake)
    await fake.clock.advance(50)
    fake.children.last.progress(our_id, 1)  # at 50 s
    await fake.clock.advance(IDLE_S + 50 - 50 - 1)  # 109 s: 59 s after the report
    assert not slot.future.done()
    await fake.clock.advance(1.5)
    error = slot.future.result()["error"]
    assert error["code"] == REQUEST_TIMEOUT
    assert error["data"] == {"timeout": IDLE, "seconds": IDLE_S}
    assert "of its last progress notification" in error["message"]
    await fake.handle.stop()


async def test_a_silent_call_times_out_at_the_idle_timeout() -> None:
    """Issue 11 item 2: without progress nothing changes: REQUEST_TIMEOUT_S, named as the idle timeout."""
    fake = await hung_child()
    slot, _ = await forwarded(fake)
    await fake.clock.advance(IDLE_S - 1)
    assert not slot.future.done()
    await fake.clock.advance(1)
    error = slot.future.result()["error"]
    assert error["data"]["timeout"] == IDLE
    assert error["message"].startswith(f"server 'fake' did not answer tools/call within {IDLE_S:g} s (idle timeout")
    await fake.handle.stop()


async def test_progress_for_one_call_does_not_keep_another_alive() -> None:
    """Issue 11 item 2: a progress notification resets only the timer of the call it names."""
    fake = await hung_child()
    reporting, reporting_id = await forwarded(fake, 1)
    silent, _ = await forwarded(fake, 2)
    for _ in range(4):
        await fake.clock.advance(20)
        fake.children.last.progress(reporting_id, 1)
    assert silent.future.done()
    assert silent.future.result()["error"]["data"]["timeout"] == IDLE
    assert not reporting.future.done()
    await fake.handle.stop()


async def test_an_answer_too_large_to_relay_fails_its_own_call_at_once_and_only_that_one() -> None:
    """Issue 11 item 1: the child's oversized line names a call; that call fails now, with "too large", not at its
    timeout; the other call in flight is untouched."""
    fake = await hung_child()
    big, big_id = await forwarded(fake, 1)
    other, _ = await forwarded(fake, 2)
    fake.backend.child_oversize(big_id, 64 * 1024 * 1024)
    error = big.future.result()["error"]
    assert big.future.result()["id"] == 1
    assert error["code"] == INTERNAL_ERROR
    assert "too large to relay" in error["message"]
    assert "67108864 bytes" in error["message"]
    assert error["data"] == {"maxBytes": 64 * 1024 * 1024}
    assert not other.future.done()
    fake.backend.child_oversize(big_id, 1)  # a second report of the same id changes nothing
    await fake.handle.stop()
