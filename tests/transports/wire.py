"""Raw-wire helpers for tests that speak HTTP to a running gateway with httpx (no SDK in between)."""

import contextlib
import json
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.harness import FIXTURES, spec

RECORDER = [sys.executable, str(FIXTURES / "recorder.py")]
MODERN = "2026-07-28"
BOTH = "application/json, text/event-stream"
LEGACY_HEADERS = {"Accept": BOTH, "Content-Type": "application/json"}
TIMEOUT = httpx.Timeout(10.0)
# Built once and shared: every client here speaks plain HTTP on loopback, and httpx would otherwise build a
# fresh TLS context (~70 ms) for each of the hundreds of clients these tests open.
TLS = ssl.create_default_context()


def http_client() -> httpx.AsyncClient:
    """An httpx client for talking to the test gateway."""
    return httpx.AsyncClient(timeout=TIMEOUT, verify=TLS)


def recorder(name: str, log: Path, **extra: Any) -> Any:
    """A server spec running the recording fixture child, writing to `log`."""
    return spec(name, RECORDER, env={"RECORDER_LOG": str(log)}, **extra)


def recorded(log: Path) -> list[dict[str, Any]]:
    """Everything the recorder child has written so far."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def received(log: Path, method: str) -> list[dict[str, Any]]:
    """The messages with `method` the recorder child received."""
    return [e["in"] for e in recorded(log) if "in" in e and e["in"].get("method") == method]


def events(log: Path, name: str) -> list[dict[str, Any]]:
    """The tool-run events named `name` the recorder child wrote."""
    return [e for e in recorded(log) if e.get("event") == name]


def rpc(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def tool_call(request_id: Any, name: str, arguments: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if meta:
        params["_meta"] = meta
    return rpc(request_id, "tools/call", params)


def initialize(version: str = "2025-11-25") -> dict[str, Any]:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "wire-test", "version": "0"}}
    return rpc(0, "initialize", params)


async def open_legacy(client: httpx.AsyncClient, url: str, version: str = "2025-11-25") -> str:
    """Initialize a Streamable HTTP session (and acknowledge it); returns the Mcp-Session-Id."""
    answer = await client.post(url, json=initialize(version), headers=LEGACY_HEADERS)
    assert answer.status_code == 200, answer.text
    session = answer.headers["mcp-session-id"]
    ack = await client.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**LEGACY_HEADERS, "Mcp-Session-Id": session},
    )
    assert ack.status_code == 202
    return session


def session_headers(session: str) -> dict[str, str]:
    return {**LEGACY_HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}


def modern_meta(version: str = MODERN) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "wire-test", "version": "0"},
    }


def modern_request(request_id: Any, method: str, params: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    """A 2026-07-28 request: the per-request envelope in params._meta."""
    body = dict(params or {})
    body["_meta"] = {**modern_meta(), **meta}
    return rpc(request_id, method, body)


def modern_headers(method: str, name: str | None = None, version: str = MODERN) -> dict[str, str]:
    headers = {"Accept": BOTH, "Content-Type": "application/json", "MCP-Protocol-Version": version}
    headers["Mcp-Method"] = method
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


class SseReader:
    """Reads an SSE response one event (or comment) at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.last_id: str | None = None  # the last `id:` seen, as a browser keeps it for Last-Event-ID

    async def item(self) -> tuple[str, str]:
        """The next event as (event name, data), or ("comment", text) for a comment line.

        As the SSE spec says, an event whose data is empty (a priming event: an id only) is not dispatched.
        """
        event, data = "message", []
        async for line in self._lines:
            if line.startswith(":"):
                if not data:
                    return "comment", line[1:].strip()
                continue
            if line == "":
                if "\n".join(data):
                    return event, "\n".join(data)
                event, data = "message", []
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                self.last_id = value
        raise EOFError("the stream ended")

    async def event(self) -> tuple[str, str]:
        """The next event, skipping comments."""
        while True:
            name, data = await self.item()
            if name != "comment":
                return name, data

    async def message(self, accept: Callable[[dict[str, Any]], bool] = lambda m: True) -> dict[str, Any]:
        """The next JSON-RPC message event that `accept` likes (others are skipped)."""
        while True:
            name, data = await self.event()
            if name == "message":
                message = json.loads(data)
                if accept(message):
                    return dict(message)


@contextlib.asynccontextmanager
async def sse_session(client: httpx.AsyncClient, base: str, server: str) -> AsyncIterator[tuple[SseReader, str]]:
    """Open GET /mcp/{server}/sse; yields the reader (endpoint event consumed) and the messages URL."""
    async with client.stream("GET", f"{base}/mcp/{server}/sse", headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        reader = SseReader(response)
        name, endpoint = await reader.event()
        assert name == "endpoint"
        yield reader, base + endpoint


async def sse_initialize(client: httpx.AsyncClient, reader: SseReader, messages: str) -> None:
    """The handshake of an HTTP+SSE session."""
    answer = await client.post(messages, json=initialize("2024-11-05"))
    assert answer.status_code == 202
    reply = await reader.message()
    assert reply["id"] == 0
    assert "result" in reply
    ack = await client.post(messages, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert ack.status_code == 202


def health(base: str, server: str) -> dict[str, Any]:
    with httpx.Client(timeout=5, verify=TLS) as client:  # closed each time: a pooled socket would outlive its gateway
        return dict(client.get(f"{base}/health").json()["servers"][server])


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `predicate` without blocking the event loop; fail after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def text_of(answer: dict[str, Any]) -> str:
    """The first text content of a tools/call result."""
    return str(answer["result"]["content"][0]["text"])
