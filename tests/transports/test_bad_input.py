"""Bad bodies on every transport that takes a body: a 4xx with a JSON-RPC error, nothing reaches the child,
and the next valid request on the same session is served normally."""

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from tests.harness import RunningGateway, run_gateway
from tests.transports.wire import (
    health,
    http_client,
    modern_headers,
    modern_meta,
    open_legacy,
    recorded,
    recorder,
    session_headers,
    sse_initialize,
    sse_session,
    text_of,
    tool_call,
)

pytestmark = pytest.mark.anyio

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
TEN_MB = 10 * 1024 * 1024
DEEP = 10_000


def envelope(modern: bool, **changes: Any) -> dict[str, Any]:
    """A valid tools/call echo for the transport, with `changes` applied (a None value removes the key)."""
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": "bad"}}
    if modern:
        params["_meta"] = modern_meta()
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    for key, value in changes.items():
        if value is None:
            message.pop(key)
        else:
            message[key] = value
    return message


def raw(modern: bool, text_json: bytes) -> bytes:
    """A valid envelope whose arguments.text is replaced by `text_json` verbatim."""
    marker = b'"@@TEXT@@"'
    body = orjson.dumps(envelope(modern, params={**envelope(modern)["params"], "arguments": {"text": "@@TEXT@@"}}))
    return body.replace(marker, text_json)


@dataclass(frozen=True)
class Case:
    body: Callable[[bool], bytes]
    status: int
    code: int


CASES: dict[str, Case] = {
    "not-json": Case(lambda m: orjson.dumps(envelope(m))[:-7], 400, PARSE_ERROR),
    "empty-body": Case(lambda m: b"", 400, PARSE_ERROR),
    "json-array": Case(lambda m: orjson.dumps([envelope(m)]), 400, INVALID_REQUEST),
    "empty-array": Case(lambda m: b"[]", 400, INVALID_REQUEST),
    "json-string": Case(lambda m: b'"tools/call"', 400, INVALID_REQUEST),
    "json-number": Case(lambda m: b"42", 400, INVALID_REQUEST),
    "json-null": Case(lambda m: b"null", 400, INVALID_REQUEST),
    "jsonrpc-1.0": Case(lambda m: orjson.dumps(envelope(m, jsonrpc="1.0")), 400, INVALID_REQUEST),
    "jsonrpc-missing": Case(lambda m: orjson.dumps(envelope(m, jsonrpc=None)), 400, INVALID_REQUEST),
    "method-missing": Case(lambda m: orjson.dumps(envelope(m, method=None)), 400, INVALID_REQUEST),
    "method-not-a-string": Case(lambda m: orjson.dumps(envelope(m, method=7)), 400, INVALID_REQUEST),
    "id-a-float": Case(lambda m: orjson.dumps(envelope(m, id=1.5)), 400, INVALID_REQUEST),
    "params-an-array": Case(lambda m: orjson.dumps(envelope(m, params=["echo"])), 400, INVALID_PARAMS),
    "ten-mb-string": Case(lambda m: raw(m, b'"' + b"x" * TEN_MB + b'"'), 413, INVALID_REQUEST),
    "ten-thousand-deep": Case(lambda m: raw(m, b"[" * DEEP + b"]" * DEEP), 400, PARSE_ERROR),
    "invalid-utf8": Case(lambda m: raw(m, b'"\xff\xfe\xc3\x28"'), 400, PARSE_ERROR),
}


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the recorder child of this module's gateway received."""
    return tmp_path_factory.mktemp("bad-input-log") / "recorder.jsonl"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, log: Path) -> Iterator[RunningGateway]:
    with run_gateway([recorder("rec", log)], tmp_path_factory.mktemp("bad-input")) as running:
        yield running


class Transport:
    """One way of sending a body on an open session, and of sending the valid follow-up."""

    modern = False

    async def send(self, body: bytes | AsyncIterator[bytes]) -> httpx.Response:
        raise NotImplementedError

    async def follow_up(self, request_id: int) -> dict[str, Any]:
        raise NotImplementedError

    async def refusal(self, response: httpx.Response, case: Case) -> dict[str, Any]:
        """The JSON-RPC error the client gets for the bad body: the response's own body here."""
        assert response.status_code == case.status, response.text[:300]
        return dict(response.json())


class Streamable(Transport):
    def __init__(self, client: httpx.AsyncClient, url: str, session: str) -> None:
        self.client, self.url, self.headers = client, url, session_headers(session)

    async def send(self, body: bytes | AsyncIterator[bytes]) -> httpx.Response:
        return await self.client.post(self.url, content=body, headers=self.headers)

    async def follow_up(self, request_id: int) -> dict[str, Any]:
        response = await self.client.post(
            self.url, json=tool_call(request_id, "echo", {"text": "ok"}), headers=self.headers
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


class Sse(Transport):
    def __init__(self, client: httpx.AsyncClient, messages: str, reader: Any) -> None:
        self.client, self.messages, self.reader = client, messages, reader

    async def send(self, body: bytes | AsyncIterator[bytes]) -> httpx.Response:
        return await self.client.post(self.messages, content=body, headers={"Content-Type": "application/json"})

    async def follow_up(self, request_id: int) -> dict[str, Any]:
        response = await self.client.post(self.messages, json=tool_call(request_id, "echo", {"text": "ok"}))
        assert response.status_code == 202, response.text
        with anyio.fail_after(10):
            return await self.reader.message()  # the very next message: nothing was queued for the bad one

    async def refusal(self, response: httpx.Response, case: Case) -> dict[str, Any]:
        """An oversized request with a readable id is answered where the client waits: on the stream (issue 11
        item 1), the POST accepted, as every other HTTP+SSE answer; the rest as the other transports."""
        if case.status != 413:
            return await super().refusal(response, case)
        assert response.status_code == 202, response.text[:300]
        with anyio.fail_after(10):
            return await self.reader.message()


class Modern(Transport):
    modern = True

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url

    async def send(self, body: bytes | AsyncIterator[bytes]) -> httpx.Response:
        return await self.client.post(self.url, content=body, headers=modern_headers("tools/call", "echo"))

    async def follow_up(self, request_id: int) -> dict[str, Any]:
        body = tool_call(request_id, "echo", {"text": "ok"})
        body["params"]["_meta"] = modern_meta()
        response = await self.client.post(self.url, json=body, headers=modern_headers("tools/call", "echo"))
        assert response.status_code == 200, response.text
        return dict(response.json())


async def check(
    gateway: RunningGateway, log: Path, transport: Transport, body: bytes | AsyncIterator[bytes], case: Case
) -> None:
    seen_before = len(recorded(log))
    calls_before = health(gateway.url, "rec")["calls"]

    response = await transport.send(body)

    error = await transport.refusal(response, case)
    assert error["jsonrpc"] == "2.0"
    assert error["error"]["code"] == case.code
    assert "x" * 100 not in response.text  # the input is never echoed back
    assert health(gateway.url, "rec")["calls"] == calls_before

    answer = await transport.follow_up(2)
    assert answer["id"] == 2
    assert text_of(answer) == "ok"
    assert health(gateway.url, "rec")["calls"] == calls_before + 1
    # stdin is FIFO: had the bad message reached the child, it would be recorded before the follow-up.
    since = [entry["in"] for entry in recorded(log)[seen_before:] if "in" in entry]
    assert [(m.get("id"), m.get("method")) for m in since] == [(since[0].get("id"), "tools/call")]
    assert since[0]["params"]["arguments"] == {"text": "ok"}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_bad_body_on_streamable_http(gateway: RunningGateway, log: Path, case: str) -> None:
    async with http_client() as client:
        session = await open_legacy(client, gateway.mcp("rec"))
        transport = Streamable(client, gateway.mcp("rec"), session)
        await check(gateway, log, transport, CASES[case].body(False), CASES[case])


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_bad_body_on_the_sse_messages_endpoint(gateway: RunningGateway, log: Path, case: str) -> None:
    async with (
        http_client() as client,
        sse_session(client, gateway.url, "rec") as (
            reader,
            messages,
        ),
    ):
        await sse_initialize(client, reader, messages)
        await check(gateway, log, Sse(client, messages, reader), CASES[case].body(False), CASES[case])


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_bad_body_on_the_2026_endpoint(gateway: RunningGateway, log: Path, case: str) -> None:
    async with http_client() as client:
        await check(gateway, log, Modern(client, gateway.mcp("rec")), CASES[case].body(True), CASES[case])


async def chunks(total: int) -> AsyncIterator[bytes]:
    """A body sent chunked, with no Content-Length, so only the streaming cap can stop it."""
    yield b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"'
    piece = b"x" * 65536
    for _ in range(total // len(piece)):
        yield piece
    yield b'"}}}'


@pytest.mark.parametrize("kind", ["streamable", "sse", "modern"])
async def test_a_chunked_body_over_the_cap_is_413(gateway: RunningGateway, log: Path, kind: str) -> None:
    case = Case(lambda m: b"", 413, INVALID_REQUEST)
    async with http_client() as client:
        if kind == "modern":
            await check(gateway, log, Modern(client, gateway.mcp("rec")), chunks(TEN_MB), case)
            return
        if kind == "streamable":
            session = await open_legacy(client, gateway.mcp("rec"))
            await check(gateway, log, Streamable(client, gateway.mcp("rec"), session), chunks(TEN_MB), case)
            return
        async with sse_session(client, gateway.url, "rec") as (reader, messages):
            await sse_initialize(client, reader, messages)
            await check(gateway, log, Sse(client, messages, reader), chunks(TEN_MB), case)
