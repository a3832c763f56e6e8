"""Session state a shared child holds once, kept per client session (Issue 11 items 3 and 4), in process.

Fast: real ClientSessions on the shipped FakeChildren and FakeClock (tests/supervisor/fake.py). The same scenarios
through real processes and official SDK clients are in tests/relay/test_shared_subscriptions_and_logs.py.
"""

from typing import Any

import orjson
import pytest

from mcp_bastion.errors import INVALID_PARAMS
from mcp_bastion.jsonrpc import Message
from mcp_bastion.relay import ClientSession
from mcp_bastion.supervisor import ServerState
from mcp_bastion.testing import settle
from tests.supervisor.fake import Supervised, supervised

pytestmark = pytest.mark.anyio

NO_PINGS_S = 1e6  # liveness pings would show up in what the fake child received
URI = "file:///shared.txt"


class Recorder:
    """A Sink that keeps what it is given."""

    def __init__(self) -> None:
        self.answers: list[Message] = []
        self.notes: list[Message] = []

    def deliver(self, message: Message) -> None:
        self.answers.append(message)

    def notify(self, message: Message) -> None:
        self.notes.append(message)

    def cancelled(self, message: Message) -> None:
        self.answers.append(message)


async def running(*, share_logs: bool = False, logging: bool = True) -> Supervised:
    fake = supervised(ping_interval_s=NO_PINGS_S)
    fake.backend.share_logs = share_logs
    fake.handle.start()
    await fake.clock.advance(0)
    assert fake.handle.state == ServerState.RUNNING
    if logging:  # the fake child declares tools only; a logging server declares this
        assert fake.backend.init_result is not None
        fake.backend.init_result["capabilities"]["logging"] = {}
    return fake


def session(fake: Supervised, principal: str) -> ClientSession:
    backend = fake.backend
    opened = ClientSession(server="fake", era="streamable", principal=principal, backend=backend, own_backend=False)
    fake.backend.sessions.add(opened)
    return opened


def pushed(opened: ClientSession) -> list[Message]:
    return [orjson.loads(body) for body in opened.outbox]


def sent(fake: Supervised, method: str) -> list[Message]:
    return [m for child in fake.children.spawned for m in child.received if m.get("method") == method]


def request(request_id: Any, method: str, **params: Any) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def log_line(level: str, data: Any, meta: Message | None = None) -> Message:
    params: dict[str, Any] = {"level": level, "data": data}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": params}


def updated(uri: str = URI) -> Message:
    return {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}


async def subscribe(fake: Supervised, opened: ClientSession, method: str = "resources/subscribe") -> Message:
    sink = Recorder()
    call = fake.backend.subscribe if method == "resources/subscribe" else fake.backend.unsubscribe
    await call(request(1, method, uri=URI), sink, opened)
    await settle()
    assert len(sink.answers) == 1, "every subscribe and unsubscribe is answered once"
    return sink.answers[0]


async def test_a_uri_is_subscribed_at_the_child_once_and_stays_until_its_last_subscriber_unsubscribes() -> None:
    """Issue 11 item 3: A's unsubscribe leaves B subscribed; the child hears subscribe once and unsubscribe once."""
    fake = await running()
    a, b = session(fake, "a"), session(fake, "b")
    for opened in (a, b, a):  # A's second subscribe is idempotent
        assert await subscribe(fake, opened) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert [m["params"] for m in sent(fake, "resources/subscribe")] == [{"uri": URI}]
    assert (await subscribe(fake, a, "resources/unsubscribe"))["result"] == {}
    assert sent(fake, "resources/unsubscribe") == []
    fake.children.last.listener.child_message(updated())
    assert pushed(a) == []
    assert pushed(b) == [updated()]
    assert (await subscribe(fake, b, "resources/unsubscribe"))["result"] == {}
    assert [m["params"] for m in sent(fake, "resources/unsubscribe")] == [{"uri": URI}]
    assert (await subscribe(fake, b, "resources/unsubscribe"))["result"] == {}, "unsubscribing twice is answered"
    assert len(sent(fake, "resources/unsubscribe")) == 1
    await fake.handle.stop()


async def test_a_session_that_ends_releases_its_subscriptions_and_the_child_is_told_only_by_the_last() -> None:
    """Issue 11 item 3: a session ending (or its client vanishing) counts as its unsubscribe."""
    fake = await running()
    a, b = session(fake, "a"), session(fake, "b")
    await subscribe(fake, a)
    await subscribe(fake, b)
    fake.backend.sessions.discard(a)
    await fake.backend.release(a)
    await settle()
    assert sent(fake, "resources/unsubscribe") == []
    fake.backend.sessions.discard(b)
    await fake.backend.release(b)
    await settle()
    assert [m["params"] for m in sent(fake, "resources/unsubscribe")] == [{"uri": URI}]
    assert fake.backend.pending == {}, "the gateway's own unsubscribe was answered and forgotten"
    await fake.handle.stop()


async def test_a_restarted_child_is_subscribed_again_to_what_sessions_still_hold() -> None:
    """Issue 11 item 3: a new child knows no subscription; the gateway renews the ones sessions hold."""
    fake = await running()
    await subscribe(fake, session(fake, "a"))
    first = fake.children.last
    first.crash()
    for _ in range(50):
        await fake.clock.advance(1)
        if fake.children.last is not first and fake.backend.ready:
            break
    await settle()
    assert fake.children.last is not first
    renewed = [m for m in fake.children.last.received if m.get("method") == "resources/subscribe"]
    assert [m["params"] for m in renewed] == [{"uri": URI}]
    await fake.handle.stop()


async def test_a_subscribe_without_a_string_uri_is_refused_with_invalid_params() -> None:
    """Issue 11 item 3: the gateway's own answers are valid JSON-RPC, errors included."""
    fake = await running()
    sink = Recorder()
    await fake.backend.subscribe(request(4, "resources/subscribe", uri=3), sink, session(fake, "a"))
    assert sink.answers[0]["error"]["code"] == INVALID_PARAMS
    assert sink.answers[0]["id"] == 4
    assert sent(fake, "resources/subscribe") == []
    await fake.handle.stop()


async def set_level(fake: Supervised, opened: ClientSession, level: str) -> Message:
    sink = Recorder()
    await fake.backend.set_log_level(request(2, "logging/setLevel", level=level), sink, opened)
    await settle()
    return sink.answers[0]


async def test_each_session_gets_its_own_level_and_the_child_runs_at_the_most_verbose_one_asked() -> None:
    """Issue 11 item 4: A's setLevel(error) does not silence B's info; the child is set to info, then back."""
    fake = await running(share_logs=True)
    a, b = session(fake, "a"), session(fake, "b")
    assert await set_level(fake, a, "error") == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert await set_level(fake, b, "info") == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert [m["params"]["level"] for m in sent(fake, "logging/setLevel")] == ["error", "info"]
    child = fake.children.last
    for level in ("debug", "info", "error"):
        child.listener.child_message(log_line(level, level))
    assert [m["params"]["data"] for m in pushed(a)] == ["error"]
    assert [m["params"]["data"] for m in pushed(b)] == ["info", "error"]
    fake.backend.sessions.discard(b)
    await fake.backend.release(b)
    await settle()
    assert [m["params"]["level"] for m in sent(fake, "logging/setLevel")] == ["error", "info", "error"]
    assert (await set_level(fake, a, "loud"))["error"]["code"] == INVALID_PARAMS
    await fake.handle.stop()


async def test_a_child_without_the_logging_capability_is_never_sent_set_level_but_the_client_is_answered() -> None:
    """Issue 11 item 4: the level still filters locally."""
    fake = await running(share_logs=True, logging=False)
    a = session(fake, "a")
    assert (await set_level(fake, a, "warning"))["result"] == {}
    assert sent(fake, "logging/setLevel") == []
    fake.children.last.listener.child_message(log_line("info", "quiet"))
    assert pushed(a) == []
    await fake.handle.stop()


async def test_a_log_line_reaches_only_the_session_whose_call_is_the_only_one_in_flight() -> None:
    """Issue 11 item 4: one call in flight: its session; two: nobody; none: nobody."""
    fake = await running()
    a, b = session(fake, "a"), session(fake, "b")
    child = fake.children.last
    child.listener.child_message(log_line("info", "idle"))
    child.hang()
    await fake.backend.forward(request(1, "tools/call", name="echo", arguments={}), Recorder(), session=b)
    child.listener.child_message(log_line("info", "b's"))
    await fake.backend.forward(request(1, "tools/call", name="echo", arguments={}), Recorder(), session=a)
    child.listener.child_message(log_line("info", "either"))
    assert pushed(a) == []
    assert [m["params"]["data"] for m in pushed(b)] == ["b's"]
    await fake.handle.stop()


async def test_a_log_line_naming_a_calls_progress_token_goes_to_that_calls_stream_whatever_else_runs() -> None:
    """Issue 11 item 4: the child says which call a line belongs to with `params._meta.progressToken`."""
    fake = await running()
    a, b = session(fake, "a"), session(fake, "b")
    child = fake.children.last
    child.hang()
    a_stream, b_stream = Recorder(), Recorder()
    call = request(1, "tools/call", name="echo", arguments={}, _meta={"progressToken": "a-token"})
    a_id = await fake.backend.forward(call, a_stream, session=a)
    call = request(1, "tools/call", name="echo", arguments={}, _meta={"progressToken": "b-token"})
    await fake.backend.forward(call, b_stream, session=b)
    child.listener.child_message(log_line("info", "a's", {"progressToken": a_id}))
    assert [m["params"]["data"] for m in a_stream.notes] == ["a's"]
    assert b_stream.notes == []
    assert pushed(a) == pushed(b) == []
    await fake.handle.stop()


async def test_share_logs_sends_every_line_to_every_session_and_a_stateless_call_gets_its_own_on_its_stream() -> None:
    """Issue 11 item 4: "shareLogs": true broadcasts (as before); without it a 2026-07-28 call's line stays on it."""
    fake = await running(share_logs=True)
    a, b = session(fake, "a"), session(fake, "b")
    fake.children.last.listener.child_message(log_line("info", "all"))
    assert pushed(a) == pushed(b) == [log_line("info", "all")]
    fake.backend.share_logs = False
    fake.children.last.hang()
    stateless = Recorder()
    await fake.backend.forward(request(1, "tools/call", name="echo", arguments={}), stateless)
    fake.children.last.listener.child_message(log_line("info", "mine"))
    assert [m["params"]["data"] for m in stateless.notes] == ["mine"]
    assert len(pushed(a)) == len(pushed(b)) == 1
    await fake.handle.stop()
