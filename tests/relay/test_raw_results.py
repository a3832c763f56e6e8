"""A large result relayed as the child's bytes (Issue 11 item 1), in process on the fake child.

The relay passes a `RawResponse` on only for calls whose result nobody reads (tools/call, resources/read, prompts/get)
and never for the gateway's own requests; everything else is parsed, so list filtering by scope and the audit line
keep working whatever the size. The same through real children and real clients: test_large_and_long_calls.py and
tests/interop/test_large_results.py.
"""

import asyncio
import json
from typing import Any

import orjson
import pytest

from mcp_bastion.access import ServerLimits, grant_for
from mcp_bastion.jsonrpc import Answer, Message, RawResponse, dumps
from mcp_bastion.relay import ResponseSlot
from mcp_bastion.testing import settle
from mcp_bastion.transports.policy import ListFilter, outcome_of
from tests.relay.test_id_remapping import Recorder, running

pytestmark = pytest.mark.anyio

LARGE = "y" * (64 * 1024)


def answer_line(request_id: int, result: Any) -> list[bytes]:
    """A child's answer as the TypeScript SDK writes it (id last), in the pieces a pipe delivers."""
    data = json.dumps({"result": result, "jsonrpc": "2.0", "id": request_id}, separators=(",", ":")).encode()
    return [data[i : i + 8192] for i in range(0, len(data), 8192)]


def raw(request_id: int, result: Any) -> RawResponse:
    found = RawResponse.of(answer_line(request_id, result))
    assert found is not None
    return found


class Keeper(Recorder):
    """A Sink that keeps answers as they come (raw or parsed)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw_answers: list[Answer] = []

    def deliver(self, message: Answer) -> None:  # type: ignore[override]
        self.raw_answers.append(message)


def request(request_id: Any, method: str, params: Message | None = None) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", {"name": "read", "arguments": {}}),
        ("resources/read", {"uri": "file:///big"}),
        ("prompts/get", {"name": "big"}),
    ],
)
async def test_a_large_result_nobody_reads_reaches_its_caller_as_the_childs_bytes_under_its_id(
    method: str, params: Message
) -> None:
    fake = await running()
    fake.children.last.hang()  # the test answers in the child's place
    sink = Keeper()
    ours = await fake.backend.forward(request("client-7", method, params), sink)
    result = {"content": [{"type": "text", "text": LARGE}]}
    fake.backend.child_message(raw(ours, result))
    await settle()
    [answer] = sink.raw_answers
    assert isinstance(answer, RawResponse)
    assert orjson.loads(dumps(answer)) == {"jsonrpc": "2.0", "id": "client-7", "result": result}
    assert ours not in fake.backend.pending


async def test_a_large_list_is_parsed_so_that_scopes_filter_it_and_the_relay_learns_the_tools() -> None:
    fake = await running()
    fake.children.last.hang()
    sink = Keeper()
    ours = await fake.backend.forward(request(1, "tools/list"), sink)
    tools = [{"name": f"t{n}", "description": LARGE, "inputSchema": {"type": "object"}} for n in range(3)]
    fake.backend.child_message(raw(ours, {"tools": tools}))
    await settle()
    [answer] = sink.raw_answers
    assert isinstance(answer, dict)
    assert [tool["name"] for tool in answer["result"]["tools"]] == ["t0", "t1", "t2"]
    assert {"t0", "t1", "t2"} <= set(fake.backend.tool_schemas)


async def test_a_large_answer_to_the_gateways_own_request_is_parsed() -> None:
    fake = await running()
    fake.children.last.hang()
    ping = asyncio.ensure_future(fake.backend.child_ping())
    await settle()
    [(ours, pending)] = [(gid, p) for gid, p in fake.backend.pending.items() if p.method == "ping"]
    assert pending.internal
    fake.backend.child_message(raw(ours, {"note": LARGE}))
    await asyncio.wait_for(ping, 5)
    assert isinstance(pending.sink, ResponseSlot)
    assert pending.sink.future.result() == {"jsonrpc": "2.0", "id": ours, "result": {"note": LARGE}}


async def test_a_large_answer_to_an_unknown_call_is_dropped() -> None:
    fake = await running()
    fake.children.last.hang()
    sink = Keeper()
    ours = await fake.backend.forward(request(1, "tools/call", {"name": "x"}), sink)
    fake.backend.child_message(raw(ours + 1000, {"content": [{"type": "text", "text": LARGE}]}))
    await settle()
    assert sink.raw_answers == []
    assert ours in fake.backend.pending


def test_a_list_that_came_raw_is_still_filtered_by_the_callers_scopes() -> None:
    """Defence in depth: the relay parses lists, and the filter parses whatever reaches it before it filters."""
    sink = Keeper()
    grant = grant_for(("tool:fake/echo",), "fake", ServerLimits(None, None, None))
    tools = [{"name": name, "description": LARGE, "inputSchema": {}} for name in ("echo", "secret")]
    ListFilter(sink, grant, "tools/list").deliver(raw(5, {"tools": tools}))
    [answer] = sink.raw_answers
    assert isinstance(answer, dict)
    assert [tool["name"] for tool in answer["result"]["tools"]] == ["echo"]


@pytest.mark.parametrize(
    ("extra", "outcome"), [({}, "ok"), ({"isError": False}, "ok"), ({"isError": True}, "tool_error")]
)
def test_the_audit_outcome_of_a_raw_result_is_read_from_its_end(extra: Message, outcome: str) -> None:
    result = {"content": [{"type": "text", "text": LARGE}], "structuredContent": {"text": LARGE}, **extra}
    assert outcome_of(raw(3, result)) == (outcome, None)
    assert outcome_of({"jsonrpc": "2.0", "id": 3, "result": result}) == (outcome, None)
    failure = {"code": -32000, "message": "no"}
    assert outcome_of({"jsonrpc": "2.0", "id": 3, "error": failure}) == ("error", failure)
