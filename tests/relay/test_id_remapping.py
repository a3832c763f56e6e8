"""The relay's bookkeeping in process: id remapping, progress routing, cancellation, child exit, child requests.

Fast (milliseconds): the shipped FakeChildren and FakeClock behind the supervisor's seams (tests/supervisor/fake.py).
The same behaviour through real children and real HTTP clients is proven in test_concurrency.py, test_progress.py,
test_cancellation.py and test_notifications.py.
"""

import asyncio
from typing import Any

import pytest

from mcp_bastion.errors import METHOD_NOT_FOUND, REQUEST_CANCELLED, SERVER_UNAVAILABLE
from mcp_bastion.jsonrpc import Message
from mcp_bastion.supervisor import ServerState
from mcp_bastion.testing import settle
from tests.supervisor.fake import Supervised, supervised

pytestmark = pytest.mark.anyio

NO_PINGS_S = 1e6  # liveness pings would show up in what the fake child received


class Recorder:
    """A Sink that keeps what it is given."""

    def __init__(self) -> None:
        self.answers: list[Message] = []
        self.notes: list[Message] = []
        self.cancels: list[Message] = []

    def deliver(self, message: Message) -> None:
        self.answers.append(message)

    def notify(self, message: Message) -> None:
        self.notes.append(message)

    def cancelled(self, message: Message) -> None:
        self.cancels.append(message)


class Session:
    """What the backend uses of a client session: its stream, in-flight map and subscriptions."""

    def __init__(self, *subscriptions: str) -> None:
        self.pushed: list[Message] = []
        self.inflight: dict[Any, int] = {}
        self.subscriptions = set(subscriptions)
        self.closed = asyncio.Event()

    def push(self, message: Message) -> None:
        self.pushed.append(message)


def call(request_id: Any, text: str, token: Any = None) -> Message:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": text}}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def running() -> Supervised:
    fake = supervised(ping_interval_s=NO_PINGS_S)
    fake.handle.start()
    await fake.clock.advance(0)
    assert fake.handle.state == ServerState.RUNNING
    return fake


def calls_received(fake: Supervised) -> list[Message]:
    return [m for m in fake.children.last.received if m.get("method") == "tools/call"]


async def test_clients_using_the_same_id_each_get_their_own_answer_under_their_own_id() -> None:
    fake = await running()
    sinks = [Recorder() for _ in range(5)]
    ours = [await fake.backend.forward(call(1, f"client {n}"), sink) for n, sink in enumerate(sinks)]
    await settle()
    assert len(set(ours)) == 5  # every call has its own gateway id on the child's side
    assert [m["id"] for m in calls_received(fake)] == ours
    for n, sink in enumerate(sinks):
        assert [(a["id"], a["result"]["content"][0]["text"]) for a in sink.answers] == [(1, f"client {n}")]
    assert fake.backend.pending == {}
    await fake.handle.stop()


@pytest.mark.parametrize("client_id", ["call-1", "", 0, -1, 2**63 - 1, "1", "ünïcode-id"])
async def test_the_clients_own_id_comes_back_exactly_whatever_its_type_or_value(client_id: Any) -> None:
    fake = await running()
    sink = Recorder()
    ours = await fake.backend.forward(call(client_id, "x"), sink)
    await settle()
    assert isinstance(ours, int)
    assert calls_received(fake)[-1]["id"] == ours
    assert sink.answers[0]["id"] == client_id
    assert type(sink.answers[0]["id"]) is type(client_id)
    await fake.handle.stop()


async def test_the_child_sees_the_gateways_progress_token_and_each_client_gets_its_own_back() -> None:
    fake = await running()
    fake.children.last.hang()
    first, second = Recorder(), Recorder()
    ours_first = await fake.backend.forward(call(1, "a", token="tok"), first)
    ours_second = await fake.backend.forward(call(1, "b", token="tok"), second)
    seen = [(m["id"], m["params"]["_meta"]["progressToken"]) for m in calls_received(fake)]
    assert seen == [(ours_first, ours_first), (ours_second, ours_second)]  # the token is the call's own gateway id
    fake.children.last.progress(ours_second, 0.5)
    fake.children.last.progress(ours_first, 0.25)
    assert [(n["params"]["progressToken"], n["params"]["progress"]) for n in first.notes] == [("tok", 0.25)]
    assert [(n["params"]["progressToken"], n["params"]["progress"]) for n in second.notes] == [("tok", 0.5)]
    await fake.handle.stop()


async def test_progress_for_an_unknown_or_finished_call_and_malformed_progress_reach_nobody() -> None:
    fake = await running()
    sink = Recorder()
    ours = await fake.backend.forward(call(1, "a", token="tok"), sink)
    await settle()
    assert sink.answers  # answered: its token is forgotten
    child = fake.children.last
    child.progress(ours, 1.0)
    child.progress(ours + 1000, 1.0)
    child.listener.child_message({"jsonrpc": "2.0", "method": "notifications/progress", "params": "garbage"})
    assert sink.notes == []
    await fake.handle.stop()


async def test_a_cancelled_call_tells_the_child_its_gateway_id_and_a_late_answer_is_dropped() -> None:
    fake = await running()
    child = fake.children.last
    child.hang()
    cancelled, other = Recorder(), Recorder()
    ours = await fake.backend.forward(call("c-1", "cancel me", token="t"), cancelled)
    kept = await fake.backend.forward(call("c-1", "keep me"), other)
    await fake.backend.cancel(ours, "user pressed stop")
    assert cancelled.cancels == [
        {"jsonrpc": "2.0", "id": "c-1", "error": {"code": REQUEST_CANCELLED, "message": "Request cancelled"}}
    ]
    assert child.received[-1] == {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": ours, "reason": "user pressed stop"},
    }
    child.resume()  # the child answers both anyway
    await settle()
    assert cancelled.answers == []
    assert [a["result"]["content"][0]["text"] for a in other.answers] == ["keep me"]
    assert set(fake.backend.pending) == set()
    assert kept != ours
    await fake.handle.stop()


async def test_cancelling_an_unknown_or_finished_call_sends_nothing_to_the_child() -> None:
    fake = await running()
    sink = Recorder()
    ours = await fake.backend.forward(call(1, "done"), sink)
    await settle()
    before = len(fake.children.last.received)
    await fake.backend.cancel(ours, "too late")
    await fake.backend.cancel(424242, "never existed")
    assert len(fake.children.last.received) == before
    assert sink.cancels == []
    await fake.handle.stop()


async def test_a_session_call_is_tracked_in_flight_under_the_clients_id_until_answered() -> None:
    fake = await running()
    child = fake.children.last
    child.hang()
    session = Session()
    ours = await fake.backend.forward(call(9, "s"), Recorder(), session=session)  # type: ignore[arg-type]
    assert session.inflight == {9: ours}
    child.resume()
    await settle()
    assert session.inflight == {}
    await fake.handle.stop()


async def test_a_dying_child_fails_every_pending_call_at_once_each_under_its_own_id() -> None:
    fake = await running()
    child = fake.children.last
    child.hang()
    sinks = {client_id: Recorder() for client_id in (1, "two", 3)}
    for client_id, sink in sinks.items():
        await fake.backend.forward(call(client_id, "x"), sink)
    child.crash(7)
    await fake.clock.advance(0)
    for client_id, sink in sinks.items():
        assert sink.answers == [
            {
                "jsonrpc": "2.0",
                "id": client_id,
                "error": {
                    "code": SERVER_UNAVAILABLE,
                    "message": "server 'fake' stopped before answering (exited with code 7)",
                },
            }
        ]
    assert fake.backend.pending == {}
    await fake.handle.stop()


async def test_a_ping_from_the_child_is_answered_by_the_gateway_with_the_childs_id() -> None:
    fake = await running()
    child = fake.children.last
    child.listener.child_message({"jsonrpc": "2.0", "id": "srv-ping-1", "method": "ping"})
    await settle()
    assert child.received[-1] == {"jsonrpc": "2.0", "id": "srv-ping-1", "result": {}}
    await fake.handle.stop()


async def test_a_shared_childs_sampling_request_is_refused_with_method_not_found_and_reaches_no_client() -> None:
    fake = await running()
    session = Session()
    fake.backend.sessions.add(session)  # type: ignore[arg-type]
    child = fake.children.last
    child.listener.child_message({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}})
    await settle()
    answer = child.received[-1]
    assert answer["id"] == 5
    assert answer["error"]["code"] == METHOD_NOT_FOUND
    assert "isolation: per-session" in answer["error"]["message"]
    assert session.pushed == []
    await fake.handle.stop()


async def test_list_changed_reaches_every_session_and_resource_updates_only_subscribers() -> None:
    fake = await running()
    watching, other = Session("file:///a"), Session("file:///b")
    for session in (watching, other):
        fake.backend.sessions.add(session)  # type: ignore[arg-type]
    child = fake.children.last
    changed = {"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"}
    updated = {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "file:///a"}}
    child.listener.child_message(changed)
    child.listener.child_message(updated)
    assert watching.pushed == [changed, updated]
    assert other.pushed == [changed]
    await fake.handle.stop()


async def test_an_answer_to_an_id_the_gateway_never_sent_is_dropped() -> None:
    fake = await running()
    sink = Recorder()
    await fake.backend.forward(call(1, "x"), sink)
    await settle()
    fake.children.last.listener.child_message({"jsonrpc": "2.0", "id": 99_999, "result": {}})
    assert len(sink.answers) == 1
    await fake.handle.stop()


async def test_modern_request_meta_is_stripped_before_the_child_and_an_emptied_meta_is_removed() -> None:
    fake = await running()
    message = call(1, "m")
    message["params"]["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    await fake.backend.forward(message, Recorder(), strip_modern=True)
    with_token = call(2, "m", token="p")
    with_token["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = {}
    ours = await fake.backend.forward(with_token, Recorder(), strip_modern=True)
    first, second = calls_received(fake)[-2:]
    assert "_meta" not in first["params"]
    assert second["params"]["_meta"] == {"progressToken": ours}
    await fake.handle.stop()
