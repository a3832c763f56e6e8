"""The HTTP/1.1 client of forwarded requests: one keep-alive pool per instance, on asyncio streams.

Hand-written on purpose (bench/RESULTS.md, issue 12): both ends are this gateway, the requests are simple (a method,
a path, a few headers, a bounded body) and the answers are uvicorn's (Content-Length or chunked), so a general
client's request and response models cost more CPU than the rest of the hop: httpx2 made a forwarded call 2.5x a
local one, this client makes it ~1.5x. Every wait is bounded; a pooled connection the owner closed while idle is
replaced once, before any byte of the answer was read.
"""

import asyncio
import ssl
from collections.abc import AsyncIterator

HEAD_MAX_BYTES = 64 * 1024  # an answer's status line and headers (uvicorn's are a few hundred bytes)
READ_CHUNK_BYTES = 64 * 1024  # one read of a body without Content-Length or chunking
STREAM_LIMIT_BYTES = 4 * 1024 * 1024  # asyncio's line buffer: a chunk-size line or a head never comes near it
NO_BODY = frozenset({204, 304})  # answers HTTP/1.1 sends without a body, whatever their headers say
FINAL_STATUS_MIN = 200  # below: an interim (1xx) answer, followed by the real one on the same connection
SWITCHING_PROTOCOLS = 101  # the connection would stop being HTTP: refused, never pooled


class HopRefused(Exception):
    """Nobody accepts connections at that address (the instance is gone)."""


class HopFailed(Exception):
    """The instance accepted but did not answer properly or in time."""


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HopResponse:
    """Status, headers (lowercase names) and the body as it comes; `aclose()` always."""

    def __init__(self, client: "HopClient", key: tuple[str, int], conn: _Connection, status: int,
                 headers: list[tuple[bytes, bytes]]) -> None:  # fmt: skip
        self.client, self.key, self.conn = client, key, conn
        self.status = status
        self.headers = headers
        self._done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk (each read bounded by the read timeout)."""
        fields = dict(self.headers)
        reader, read_s = self.conn.reader, self.client.read_s
        if self.status in NO_BODY:
            pass
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                line = await asyncio.wait_for(reader.readuntil(b"\r\n"), read_s)
                size = _chunk_size(line)
                if size == 0:
                    while await asyncio.wait_for(reader.readuntil(b"\r\n"), read_s) != b"\r\n":
                        pass  # trailers: none from uvicorn, skipped if any
                    break
                data = await asyncio.wait_for(reader.readexactly(size + 2), read_s)
                yield data[:-2]
        elif b"content-length" in fields:
            left = int(fields[b"content-length"])
            while left:
                data = await asyncio.wait_for(reader.read(min(left, READ_CHUNK_BYTES)), read_s)
                if not data:
                    raise HopFailed("the answer ended early")
                left -= len(data)
                yield data
        else:  # until the owner closes the connection
            while data := await asyncio.wait_for(reader.read(READ_CHUNK_BYTES), read_s):
                yield data
            fields[b"connection"] = b"close"
        self._done = fields.get(b"connection", b"").lower() != b"close"

    async def aclose(self) -> None:
        """Give the connection back when the answer was read whole, close it otherwise."""
        if self._done:
            self.client.give_back(self.key, self.conn)
        else:
            self.conn.close()


class HopClient:
    """Keep-alive connections to the other instances."""

    def __init__(self, *, connect_s: float, read_s: float, write_s: float, keep: int) -> None:
        self.connect_s, self.read_s, self.write_s, self.keep = connect_s, read_s, write_s, keep
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(self, host: str, port: int, head: bytes, body: bytes, *, tls: bool = False) -> HopResponse:
        """Send `head` (request line and headers, ending in a blank line) and `body`; the answer's head is read.

        Raises:
            HopRefused: the connection was refused.
            HopFailed: anything else (timeout, a closed connection, not HTTP).
        """
        key = (host, port)
        pooled = self._idle.get(key)
        if pooled:
            try:
                return await self._exchange(key, pooled.pop(), head, body, reused=True)
            except _Stale:
                pass  # the owner closed it while it sat idle, before reading a byte of this request: one fresh try
        return await self._exchange(key, await self._connect(host, port, tls), head, body, reused=False)

    async def _connect(self, host: str, port: int, tls: bool) -> _Connection:
        context = ssl.create_default_context() if tls else None  # an https advertise URL: verified like any client
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=STREAM_LIMIT_BYTES, ssl=context), self.connect_s
            )
        except ConnectionRefusedError as exc:
            raise HopRefused(str(exc)) from None
        except (OSError, TimeoutError) as exc:
            raise HopFailed(f"connect: {exc!r}") from None
        return _Connection(reader, writer)

    async def _exchange(
        self, key: tuple[str, int], conn: _Connection, head: bytes, body: bytes, *, reused: bool
    ) -> HopResponse:
        """Write the request and read the final answer's head; the connection is closed on any failure or cancel."""
        answered = False  # whether any byte of an answer arrived (after that, a retry could run the request twice)
        try:
            conn.writer.write(head + body)
            await asyncio.wait_for(conn.writer.drain(), self.write_s)
            while True:
                raw = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), self.read_s)
                answered = True
                status, headers = _parse_head(raw)
                if status == SWITCHING_PROTOCOLS:
                    raise HopFailed("the owner switched protocols")  # the connection is no HTTP any more: never pooled
                if status >= FINAL_STATUS_MIN:
                    return HopResponse(self, key, conn, status, headers)
                # 1xx (100 Continue, 103 Early Hints): interim, the real answer follows on the same connection
        except BaseException as exc:
            conn.close()
            if reused and not answered and _is_stale(exc):
                raise _Stale from None
            if isinstance(exc, (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)):
                raise HopFailed(f"exchange: {exc!r}") from None
            raise

    def give_back(self, key: tuple[str, int], conn: _Connection) -> None:
        """Keep a connection whose answer was read whole for the next request (up to `keep` per instance)."""
        idle = self._idle.setdefault(key, [])
        if len(idle) < self.keep:
            idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _Stale(Exception):
    """A pooled connection the owner had closed: the request never reached it."""


def _is_stale(exc: BaseException) -> bool:
    """EOF or a reset before any byte of the answer (a timeout is not: the owner may be working on the request)."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, (ConnectionResetError, BrokenPipeError))


def _parse_head(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Status and headers (lowercase names) of an answer's head.

    Raises:
        HopFailed: too large, not HTTP/1.x, or a Content-Length that is not one non-negative number.
    """
    if len(raw) > HEAD_MAX_BYTES:
        raise HopFailed("answer head too large")
    lines = raw[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HopFailed("not an HTTP/1.1 answer")
    headers = [(name.strip().lower(), value.strip()) for name, _, value in (x.partition(b":") for x in lines[1:])]
    lengths = {value for name, value in headers if name == b"content-length"}
    if len(lengths) > 1 or any(not value.isdigit() for value in lengths):
        raise HopFailed("malformed Content-Length")  # negative, not a number, or two that disagree: never read to EOF
    return int(code), headers


def _chunk_size(line: bytes) -> int:
    """The size a chunk-size line announces.

    Raises:
        HopFailed: not a hexadecimal number.
    """
    text = line.split(b";", 1)[0].strip()
    if not text or any(c not in b"0123456789abcdefABCDEF" for c in text):
        raise HopFailed("malformed chunk size")
    return int(text, 16)
