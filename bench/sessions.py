"""MCP client sessions for the benchmark, one class per transport, plus the direct stdio baseline.

Every session exposes `setup()`, `call(request_id, text) -> answer dict` and `close()`.
`call` raises `CallFailed` for an answer that is an error (the session goes on) and
`httpc.ConnectionBroken` when the connection is unusable (the session stops).
"""

import asyncio
import contextlib
import itertools
import os
import sys
from typing import Any

import orjson
from httpc import Connection, ConnectionBroken, SseStream

LEGACY_VERSION = "2025-11-25"
SSE_VERSION = "2024-11-05"
MODERN_VERSION = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
}
CLIENT_INFO = {"name": "mcp-bastion-bench", "version": "1"}
JSON_POST = b"accept: application/json, text/event-stream\r\ncontent-type: application/json\r\n"


class CallFailed(Exception):
    """The call got an answer, but not a result (HTTP error status or JSON-RPC error)."""


def _call_body(request_id: int, text: str, meta: dict[str, Any] | None = None) -> bytes:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": text}}
    if meta is not None:
        params["_meta"] = meta
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})


def _initialize(request_id: int, version: str) -> bytes:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": CLIENT_INFO}
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params})


INITIALIZED = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CallFailed(f"answer is not JSON: {body[:120]!r}") from exc


class StreamableSession:
    """Streamable HTTP with a session: initialize → Mcp-Session-Id, then JSON answers to every POST."""

    name = "streamable"

    def __init__(self, host: str, port: int, server: str) -> None:
        self.next_id = itertools.count(1).__next__  # every client numbers its calls 1, 2, 3 ...
        self.conn = Connection(host, port)
        self.path = f"/mcp/{server}".encode()
        self.headers = JSON_POST
        self.session_id = b""

    async def setup(self) -> None:
        await self.conn.open()
        resp = await self.conn.request(b"POST", self.path, JSON_POST, _initialize(0, LEGACY_VERSION))
        answer = _json(resp.body)
        session_id = resp.headers.get(b"mcp-session-id")
        if resp.status != 200 or session_id is None or "result" not in answer:
            raise CallFailed(f"initialize: HTTP {resp.status} {resp.body[:200]!r}")
        self.session_id = session_id
        self.headers = (
            JSON_POST
            + b"mcp-session-id: "
            + session_id
            + b"\r\nmcp-protocol-version: "
            + LEGACY_VERSION.encode()
            + b"\r\n"
        )
        resp = await self.conn.request(b"POST", self.path, self.headers, INITIALIZED)
        if resp.status != 202:
            raise CallFailed(f"notifications/initialized: HTTP {resp.status} {resp.body[:200]!r}")

    async def call(self, request_id: int, text: str) -> Any:
        resp = await self.conn.request(b"POST", self.path, self.headers, _call_body(request_id, text))
        if resp.status != 200:
            raise CallFailed(f"HTTP {resp.status} {resp.body[:200]!r}")
        return _json(resp.body)

    async def close(self) -> None:
        if self.session_id and self.conn.writer is not None:
            with contextlib.suppress(ConnectionBroken, OSError):
                await asyncio.wait_for(self.conn.request(b"DELETE", self.path, self.headers), 5)
        self.conn.close()


class SseSession:
    """HTTP+SSE 2024-11-05: one GET stream for answers, one keep-alive connection for the POSTs (202 each)."""

    name = "sse"

    def __init__(self, host: str, port: int, server: str) -> None:
        self.next_id = itertools.count(1).__next__
        self.stream = SseStream(Connection(host, port))
        self.post = Connection(host, port)
        self.sse_path = f"/mcp/{server}/sse".encode()
        self.endpoint = b""
        self.headers = b"content-type: application/json\r\n"

    async def open_stream(self) -> None:
        """GET .../sse and read the `endpoint` event (all an idle session does)."""
        status = await self.stream.open(self.sse_path)
        if status != 200:
            raise CallFailed(f"GET sse: HTTP {status}")
        event, data = await self.stream.next_event()
        if event != b"endpoint":
            raise CallFailed(f"first event is {event!r}, not endpoint")
        self.endpoint = data

    async def _post(self, body: bytes) -> None:
        resp = await self.post.request(b"POST", self.endpoint, self.headers, body)
        if resp.status != 202:
            raise CallFailed(f"HTTP {resp.status} {resp.body[:200]!r}")

    async def _answer(self) -> Any:
        while True:
            event, data = await self.stream.next_event()
            if event != b"message":
                continue
            message = _json(data)
            if "id" in message and "method" not in message:
                return message

    async def setup(self) -> None:
        await self.open_stream()
        await self.handshake()

    async def handshake(self) -> None:
        """initialize / initialized over the POST connection, once the stream is open."""
        await self.post.open()
        await self._post(_initialize(0, SSE_VERSION))
        answer = await self._answer()
        if answer.get("id") != 0 or "result" not in answer:
            raise CallFailed(f"initialize answer {str(answer)[:200]}")
        await self._post(INITIALIZED)

    async def call(self, request_id: int, text: str) -> Any:
        await self._post(_call_body(request_id, text))
        return await self._answer()

    def drop(self) -> None:
        """Close both connections now."""
        self.post.close()
        self.stream.close()

    async def close(self) -> None:
        self.drop()


class ModernSession:
    """Stateless 2026-07-28: no handshake (one server/discover to start), every POST self-contained."""

    name = "modern"

    def __init__(self, host: str, port: int, server: str) -> None:
        self.next_id = itertools.count(1).__next__
        self.conn = Connection(host, port)
        self.path = f"/mcp/{server}".encode()
        base = JSON_POST + b"mcp-protocol-version: " + MODERN_VERSION.encode() + b"\r\n"
        self.headers = base + b"mcp-method: tools/call\r\nmcp-name: echo\r\n"
        self.discover_headers = base + b"mcp-method: server/discover\r\n"

    async def setup(self) -> None:
        await self.conn.open()
        body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {"_meta": MODERN_META}})
        resp = await self.conn.request(b"POST", self.path, self.discover_headers, body)
        answer = _json(resp.body)
        if resp.status != 200 or "supportedVersions" not in (answer.get("result") or {}):
            raise CallFailed(f"server/discover: HTTP {resp.status} {resp.body[:200]!r}")

    async def call(self, request_id: int, text: str) -> Any:
        resp = await self.conn.request(b"POST", self.path, self.headers, _call_body(request_id, text, MODERN_META))
        if resp.status != 200:
            raise CallFailed(f"HTTP {resp.status} {resp.body[:200]!r}")
        return _json(resp.body)

    async def close(self) -> None:
        self.conn.close()


TRANSPORTS = {"streamable": StreamableSession, "sse": SseSession, "modern": ModernSession}


class DirectPipe:
    """The baseline: the demo server spawned here, driven over its stdin/stdout with no gateway.

    Many callers share the one pipe; ids are unique across callers and a reader task routes answers.
    """

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.reader_task: asyncio.Task[None] | None = None
        self.failure: str | None = None

    async def start(self) -> int:
        """Spawn and initialize the child; returns its pid."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mcp_bastion.demo_server",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 22,
        )
        self.reader_task = asyncio.create_task(self._read())
        answer = await asyncio.wait_for(self.request(_initialize(0, LEGACY_VERSION), 0), 30)
        if "result" not in answer:
            raise CallFailed(f"initialize: {str(answer)[:200]}")
        self._write(INITIALIZED)
        return self.proc.pid

    def _write(self, line: bytes) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        try:
            async for line in self.proc.stdout:
                message = orjson.loads(line)
                future = self.pending.pop(message.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (ValueError, OSError) as exc:
            self.failure = repr(exc)
        self.failure = self.failure or "the child closed its stdout"
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionBroken(self.failure))

    async def request(self, line: bytes, request_id: int) -> Any:
        if self.failure:
            raise ConnectionBroken(self.failure)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        self._write(line)
        return await future

    async def stop(self) -> None:
        """Close stdin, wait briefly, kill if needed."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self.reader_task is not None:
            self.reader_task.cancel()


class DirectSession:
    """One caller on the shared pipe: it picks globally unique ids so callers never collide."""

    name = "direct"

    def __init__(self, pipe: DirectPipe) -> None:
        self.pipe = pipe
        self.next_id = pipe.ids.__next__  # unique across the callers sharing the pipe

    async def setup(self) -> None:
        return

    async def call(self, request_id: int, text: str) -> Any:
        return await self.pipe.request(_call_body(request_id, text), request_id)

    async def close(self) -> None:
        return
