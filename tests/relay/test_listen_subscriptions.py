"""2026-07-28 `subscriptions/listen` resourceSubscriptions in the relay (Issue 11 item 5), in process.

Fast: the shipped FakeChildren and FakeClock. A listen stream's URIs join the same per-URI refcount as the legacy
sessions' `resources/subscribe` (tests/relay/test_shared_session_state.py); the real-process scenario with the
official SDK client is in tests/relay/test_listen_resource_updates.py.
"""

import pytest

from mcp_bastion.jsonrpc import Message
from mcp_bastion.testing import settle
from mcp_bastion.transports.modern import Listener
from tests.relay.test_shared_session_state import URI, Recorder, request, running, sent, session, updated

pytestmark = pytest.mark.anyio

OTHER = "file:///other.txt"


def listener(*uris: str) -> Listener:
    return Listener("listen-1", set(), set(uris))


def queued(stream: Listener) -> list[str]:
    found = []
    while not stream.queue.empty():
        found.append(stream.queue.get_nowait()["params"]["uri"])
    return found


async def test_a_listen_stream_subscribes_the_child_once_and_hears_only_the_uris_it_asked_for() -> None:
    """Issue 11 item 5: the child is subscribed before the stream is acknowledged; updates of other URIs stay out."""
    fake = await running()
    stream = listener(URI)
    await fake.backend.listen(stream)
    assert [m["params"] for m in sent(fake, "resources/subscribe")] == [{"uri": URI}]
    child = fake.children.last
    child.listener.child_message(updated(OTHER))
    child.listener.child_message(updated(URI))
    frames = []
    while not stream.queue.empty():
        frames.append(stream.queue.get_nowait())
    assert [f["params"]["uri"] for f in frames] == [URI]
    assert frames[0]["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": "listen-1"}
    fake.backend.unlisten(stream)
    await settle()
    assert [m["params"] for m in sent(fake, "resources/unsubscribe")] == [{"uri": URI}]
    assert fake.backend.pending == {}, "the gateway's own subscribe and unsubscribe were answered and forgotten"
    await fake.handle.stop()


async def test_listen_streams_and_legacy_sessions_share_one_refcount_per_uri() -> None:
    """Issue 11 item 5 with item 3: a session's unsubscribe leaves a stream subscribed, and the other way round."""
    fake = await running()
    a = session(fake, "a")
    sink = Recorder()
    await fake.backend.subscribe(request(1, "resources/subscribe", uri=URI), sink, a)
    await settle()
    stream = listener(URI)
    await fake.backend.listen(stream)
    assert len(sent(fake, "resources/subscribe")) == 1, "the stream found the URI held: the child is not asked again"
    await fake.backend.unsubscribe(request(2, "resources/unsubscribe", uri=URI), sink, a)
    await settle()
    assert sent(fake, "resources/unsubscribe") == []
    fake.children.last.listener.child_message(updated(URI))
    assert queued(stream) == [URI]
    await fake.backend.subscribe(request(3, "resources/subscribe", uri=URI), sink, a)
    fake.backend.unlisten(stream)
    await settle()
    assert sent(fake, "resources/unsubscribe") == [], "session A still holds the URI"
    fake.backend.sessions.discard(a)
    await fake.backend.release(a)
    await settle()
    assert [m["params"] for m in sent(fake, "resources/unsubscribe")] == [{"uri": URI}]
    await fake.handle.stop()


async def test_a_uri_the_child_refuses_leaves_the_stream_and_is_not_held() -> None:
    """Issue 11 item 5: the acknowledgment lists only what the child accepted; a later subscriber asks it again."""
    fake = await running()
    child = fake.children.last
    answer = child._answer

    def refuse_subscribe(message: Message) -> None:
        if message["method"] == "resources/subscribe":
            error = {"code": -32601, "message": "no subscriptions here"}
            child.listener.child_message({"jsonrpc": "2.0", "id": message["id"], "error": error})
        else:
            answer(message)

    child._answer = refuse_subscribe  # type: ignore[method-assign]
    stream = listener(URI)
    await fake.backend.listen(stream)
    assert stream.uris == set()
    await fake.backend.listen(listener(URI))
    assert len(sent(fake, "resources/subscribe")) == 2
    await fake.handle.stop()


async def test_a_restarted_child_is_subscribed_again_to_what_listen_streams_hold() -> None:
    """Issue 11 item 5: as for sessions (item 3), a new child hears the URIs open streams still hold."""
    fake = await running()
    await fake.backend.listen(listener(URI))
    first = fake.children.last
    first.crash()
    for _ in range(50):
        await fake.clock.advance(1)
        if fake.children.last is not first and fake.backend.ready:
            break
    await settle()
    renewed = [m for m in fake.children.last.received if m.get("method") == "resources/subscribe"]
    assert [m["params"] for m in renewed] == [{"uri": URI}]
    await fake.handle.stop()
