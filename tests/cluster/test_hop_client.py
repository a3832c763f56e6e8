"""The forwarding client against a scripted HTTP/1.1 server on loopback: the framings uvicorn uses, keep-alive
reuse, a pooled connection the server closed, a refused port, a server that never answers."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from mcp_bastion.cluster.hop_client import HopClient, HopFailed, HopRefused
from tests.harness import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

HEAD = b"POST /mcp/x HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\n"
Answer = Callable[[int], bytes]  # the n-th request on a connection -> the raw answer (b"" closes it)


@asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[tuple[int, list[int]]]:
    """Answers each request by `answer`; yields the port and the count of connections accepted."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        n = 0
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                raw = answer(n)
                n += 1
                if not raw:
                    return
                writer.write(raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    port = free_port()
    listener = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield port, accepted
    finally:
        listener.close()
        await listener.wait_closed()


def client(read_s: float = 5.0) -> HopClient:
    return HopClient(connect_s=1.0, read_s=read_s, write_s=1.0, keep=4)


async def body_of(hop: HopClient, port: int) -> tuple[int, bytes]:
    response = await hop.request("127.0.0.1", port, HEAD, b"{}")
    try:
        return response.status, b"".join([chunk async for chunk in response.chunks()])
    finally:
        await response.aclose()


async def test_chunked_and_content_length_answers_are_read_whole_and_the_connection_is_reused() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
    sized = b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\ngone"
    async with server(lambda n: chunked if n % 2 == 0 else sized) as (port, accepted):
        hop = client()
        assert await body_of(hop, port) == (200, b"hello world")
        assert await body_of(hop, port) == (404, b"gone")
        assert await body_of(hop, port) == (200, b"hello world")
        assert len(accepted) == 1  # one keep-alive connection for all three
        await hop.close()
    async with server(lambda n: b"HTTP/1.1 204 No Content\r\n\r\n") as (port, accepted):
        hop = client(read_s=0.5)
        assert await body_of(hop, port) == (204, b"")  # no body to wait for
        assert await body_of(hop, port) == (204, b"")
        assert len(accepted) == 1
        await hop.close()


async def test_a_pooled_connection_the_server_closed_is_replaced_once() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with server(lambda n: ok if n == 0 else b"") as (port, accepted):
        hop = client()
        assert await body_of(hop, port) == (200, b"ok")
        assert await body_of(hop, port) == (200, b"ok")  # the first connection closed on the second request
        assert len(accepted) == 2
        await hop.close()


async def test_a_refused_port_and_a_silent_server_are_told_apart() -> None:
    with pytest.raises(HopRefused):
        await client().request("127.0.0.1", free_port(), HEAD, b"{}")
    async with server(lambda n: b"HTTP/1.1 200 OK\r\n") as (port, _):  # a head that never ends
        with pytest.raises(HopFailed):
            await client(read_s=0.2).request("127.0.0.1", port, HEAD, b"{}")


async def test_an_interim_answer_is_skipped_and_the_connection_stays_in_step() -> None:
    """A 100 Continue (or 103) before the answer is never taken for the answer: the next request on the pooled
    connection gets its own answer, not the previous one's."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"

    def answer(n: int) -> bytes:
        return interim + b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n%d%d" % (n, n)

    async with server(answer) as (port, accepted):
        hop = client()
        assert await body_of(hop, port) == (200, b"00")
        assert await body_of(hop, port) == (200, b"11")
        assert len(accepted) == 1
        await hop.close()


async def test_switching_protocols_and_a_malformed_content_length_are_failures() -> None:
    for raw in [
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nrest",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0x2\r\n\r\nab",
    ]:
        async with server(lambda n, raw=raw: raw) as (port, _):
            hop = client(read_s=0.5)
            with pytest.raises(HopFailed):
                await hop.request("127.0.0.1", port, HEAD, b"{}")
            assert not hop._idle.get(("127.0.0.1", port))  # never pooled
            await hop.close()


async def test_a_timeout_on_a_pooled_connection_is_not_retried() -> None:
    """Only EOF or a reset before any answer byte is a stale pooled connection; a silent owner may be working on the
    request (and the hop would have expired by the retry): one failure, one connection."""
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with server(lambda n: ok if n == 0 else b"HTTP/1.1 200 OK\r\n") as (port, accepted):
        hop = client(read_s=0.3)
        assert await body_of(hop, port) == (200, b"ok")
        with pytest.raises(HopFailed):
            await hop.request("127.0.0.1", port, HEAD, b"{}")
        assert len(accepted) == 1
        await hop.close()


async def test_a_request_cancelled_mid_exchange_closes_its_connection() -> None:
    """A forward cancelled while it waits for the answer (the client left, the owner's record expired) closes its
    connection instead of leaving it open with an answer still to come."""
    started, closed = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        started.set()
        if not await reader.read(1):  # EOF: the client closed the connection
            closed.set()
        writer.close()

    port = free_port()
    listener = await asyncio.start_server(silent, "127.0.0.1", port)
    try:
        hop = client()
        task = asyncio.ensure_future(hop.request("127.0.0.1", port, HEAD, b"{}"))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        listener.close()
        await listener.wait_closed()
