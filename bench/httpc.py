"""A minimal HTTP/1.1 keep-alive client on asyncio streams: just what the benchmark needs, cheap per call.

One `Connection` per socket, one request in flight at a time (no pipelining). Responses may carry
Content-Length or chunked transfer encoding (uvicorn chunks whenever the app gives no length).
`SseStream` reads a long-lived `text/event-stream` response event by event.
"""

import asyncio

HEAD_END = b"\r\n\r\n"
READ_LIMIT = 1 << 22  # bytes one readuntil may buffer


class ConnectionBroken(Exception):
    """The socket closed or the peer spoke something that is not HTTP/1.1: the connection is unusable."""


class Response:
    """Status, lowercase header map, body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1."""

    common_headers = b""  # sent on every request of every connection (the benchmark's Authorization header)

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.host_line = f"host: {host}:{port}\r\n".encode() + self.common_headers

    async def open(self) -> None:
        """Connect."""
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=READ_LIMIT)

    def send(self, method: bytes, path: bytes, headers: bytes = b"", body: bytes | None = None) -> None:
        """Write one request in a single write; `headers` is a pre-encoded block of `name: value\\r\\n` lines."""
        assert self.writer is not None
        length = b"content-length: %d\r\n" % len(body) if body is not None else b""
        self.writer.write(
            b"%s %s HTTP/1.1\r\n%s%s%s\r\n%s" % (method, path, self.host_line, headers, length, body or b"")
        )

    async def request(self, method: bytes, path: bytes, headers: bytes = b"", body: bytes | None = None) -> Response:
        """Send a request and read the whole response."""
        self.send(method, path, headers, body)
        status, response_headers = await self.read_head()
        return Response(status, response_headers, await self.read_body(status, response_headers))

    async def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        """The status line and headers."""
        assert self.reader is not None
        try:
            head = await self.reader.readuntil(HEAD_END)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            raise ConnectionBroken(f"reading response head: {exc!r}") from exc
        lines = head[:-4].split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 "):
            raise ConnectionBroken(f"bad status line {lines[0][:80]!r}")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0][9:12]), headers

    async def read_body(self, status: int, headers: dict[bytes, bytes]) -> bytes:
        """The body, by chunked encoding, Content-Length, or (no framing) nothing for 1xx/204/304."""
        assert self.reader is not None
        reader = self.reader
        try:
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                parts: list[bytes] = []
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0], 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers
                        return b"".join(parts)
                    parts.append((await reader.readexactly(size + 2))[:-2])
            length = headers.get(b"content-length")
            if length is not None:
                return await reader.readexactly(int(length)) if length != b"0" else b""
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            raise ConnectionBroken(f"reading response body: {exc!r}") from exc
        if status in (204, 304) or 100 <= status < 200:
            return b""
        raise ConnectionBroken("response without framing (no Content-Length, not chunked)")

    def close(self) -> None:
        """Close the socket (no wait)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class SseStream:
    """A GET whose response is a text/event-stream, read one event at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.chunked = False
        self.buffer = b""

    async def open(self, path: bytes, headers: bytes = b"accept: text/event-stream\r\n") -> int:
        """Send the GET and read the response head; returns the status (200 means the stream is open)."""
        if self.conn.writer is None:
            await self.conn.open()
        self.conn.send(b"GET", path, headers)
        self.status, self.headers = await self.conn.read_head()
        self.chunked = self.headers.get(b"transfer-encoding", b"").lower() == b"chunked"
        return self.status

    async def _fill(self) -> None:
        reader = self.conn.reader
        assert reader is not None
        try:
            if self.chunked:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0], 16)
                if size == 0:
                    raise ConnectionBroken("the event stream ended")
                self.buffer += (await reader.readexactly(size + 2))[:-2]
                return
            data = await reader.read(65536)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            raise ConnectionBroken(f"reading the event stream: {exc!r}") from exc
        if not data:
            raise ConnectionBroken("the event stream ended")
        self.buffer += data

    async def next_event(self) -> tuple[bytes, bytes]:
        """The next (event, data) pair; comment-only blocks (keepalives) are skipped."""
        while True:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                await self._fill()
                continue
            raw = self.buffer[:end]
            self.buffer = self.buffer[end + 2 :]
            event = b"message"
            data: list[bytes] = []
            for line in raw.split(b"\n"):
                if not line or line.startswith(b":"):
                    continue
                field, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if field == b"event":
                    event = value
                elif field == b"data":
                    data.append(value)
            if data:
                return event, b"\n".join(data)

    def close(self) -> None:
        """Close the underlying connection."""
        self.conn.close()
