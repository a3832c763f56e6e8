"""Forwarding a request to the instance that owns its session, once, and streaming the answer back (SSE-safe).

The request goes to the owner's advertised URL (hop_client: a keep-alive pool per instance), never back through the
balancer; it carries the signed hop instead of the client's credential (Authorization and cookies are dropped), so
the owner cannot forward it again. The answer is passed through as it comes: a JSON answer whole, an SSE stream for
as long as it lasts, the owner's status and headers.
"""

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from mcp_bastion.access import context_of
from mcp_bastion.cluster.hop import HopSigner
from mcp_bastion.cluster.hop_client import HopClient, HopFailed, HopRefused, HopResponse
from mcp_bastion.errors import GatewayError
from mcp_bastion.middleware.headers import BASE_HEADERS, HSTS
from mcp_bastion.middleware.hop import HOP_HEADER, Hop, HopRequest
from mcp_bastion.relay.sessions import SessionGone
from mcp_bastion.transports.http import Disconnect, Request, end_stream

FORWARD_CONNECT_S = 1.0  # a peer on the same network accepts in milliseconds; longer means it is gone or cut off
FORWARD_WRITE_S = 10.0  # sending a request body (at most MAX_BODY_BYTES) to a peer
FORWARD_READ_SLACK_S = 30.0  # beyond the longest a call or a stream's keepalive may keep a peer silent
# A JSON answer up to this size is read whole before its head is sent (an answer is either all there or not at all
# for the balancer, which may then retry); larger ones and streams are passed on as they come.
WHOLE_ANSWER_MAX_BYTES = 1024 * 1024
FORWARD_KEEPALIVE = 100  # idle pooled connections kept per instance: forwarding does not pay a handshake each time
# Request headers that describe this connection (hop-by-hop, RFC 9110 7.6.1; `expect` too: this instance already
# answered the client's 100-continue, and the owner's would arrive ahead of its answer), the client's credential (the
# hop replaces it), or the client's address (the hop carries the address the first instance believed): never sent on.
# So is any header the client's Connection header names.
DROPPED_REQUEST = frozenset(
    {
        b"host", b"authorization", b"cookie", b"connection", b"keep-alive", b"transfer-encoding", b"te",
        b"trailer", b"upgrade", b"proxy-authorization", b"proxy-authenticate", b"proxy-connection",
        b"content-length", b"expect", b"x-forwarded-for", b"forwarded", b"x-real-ip", HOP_HEADER,
    }
)  # fmt: skip
# Response headers this instance's own pipeline sets (security headers, request id) or that describe the hop.
DROPPED_RESPONSE = frozenset(
    {
        b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"x-request-id", HSTS[0],
        *(n for n, _ in BASE_HEADERS),
    }
)  # fmt: skip


class OwnerUnreachable(GatewayError):
    """The session's owner is registered but does not answer (503: the client retries, or the owner's record expires
    and the session answers 404)."""

    http_status = 503
    retry_after_s = 1


class Forwarder:
    """Sends requests on to their session's owner; one connection pool per instance."""

    def __init__(self, signer: HopSigner, *, read_s: float, max_body: int) -> None:
        self.signer = signer
        self.max_body = max_body
        self._client = HopClient(
            connect_s=FORWARD_CONNECT_S, read_s=read_s + FORWARD_READ_SLACK_S, write_s=FORWARD_WRITE_S,
            keep=FORWARD_KEEPALIVE,
        )  # fmt: skip
        self.forwarded = 0  # requests sent on (a counter in /health: proof that forwarding happens)

    async def forward(self, req: Request, owner: str, base_url: str) -> None:
        """Forward one request to instance `owner` at `base_url` and stream its answer back.

        Raises:
            SessionGone: the owner does not accept connections any more (its sessions died with it).
            OwnerUnreachable: the owner did not answer in time.
            BodyTooLarge: the body is over MAX_BODY_BYTES.
        """
        scope = req.scope
        body = await req.body(self.max_body)
        ctx = context_of(scope)
        assert ctx.principal is not None  # forwarding comes after authentication
        method, path, query = scope["method"], scope["path"], scope.get("query_string", b"")
        tls, host, port = _address(base_url)
        target = scope.get("raw_path") or path.encode()
        lines = [b"%s %s%s HTTP/1.1" % (method.encode(), target, b"?" + query if query else b"")]
        dropped = DROPPED_REQUEST | _connection_named(req.raw_headers)
        headers = [(k, v) for k, v in req.raw_headers if k not in dropped]
        lines += [k + b": " + v for k, v in headers]
        who = Hop(ctx.principal, ctx.client_ip, ctx.request_id)
        hop = self.signer.sign(who, HopRequest(method, path, query, headers, body), to=owner)
        lines += [b"host: %s:%d" % (host.encode(), port), b"content-length: %d" % len(body)]
        lines += [HOP_HEADER + b": " + hop.encode(), b"", b""]
        self.forwarded += 1
        try:
            response = await self._client.request(host, port, b"\r\n".join(lines), body, tls=tls)
        except HopRefused:
            raise SessionGone("Session not found") from None  # refused: nobody listens there, its sessions are gone
        except HopFailed:
            raise OwnerUnreachable("the instance holding this session did not answer; retry") from None
        try:
            await self._relay(req, response)
        finally:
            await response.aclose()

    async def _relay(self, req: Request, response: HopResponse) -> None:
        """Pass the owner's answer on as it comes; a client that leaves ends the upstream request too."""
        headers = [(k, v) for k, v in response.headers if k not in DROPPED_RESPONSE]
        first = b""
        chunks = response.chunks()  # one iterator: the head read below and the pump share it
        if not any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers):
            try:
                first, whole = await _head_of(chunks)
            except (HopFailed, OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                raise OwnerUnreachable("the instance holding this session did not answer; retry") from None
            if whole:  # head and body in one go: no half answer if this instance dies in between
                headers.append((b"content-length", str(len(first)).encode()))
                await req.send({"type": "http.response.start", "status": response.status, "headers": headers})
                await req.send({"type": "http.response.body", "body": first})
                return
        await req.send({"type": "http.response.start", "status": response.status, "headers": headers})
        if first:
            await req.send({"type": "http.response.body", "body": first, "more_body": True})
        disconnect = Disconnect(req.receive)
        pump = asyncio.ensure_future(self._pump(req, chunks))
        disconnect.on_disconnect = lambda: _cancel(pump)
        try:
            await asyncio.wait({pump})
        finally:
            disconnect.close()
            pump.cancel()
        failure = None if pump.cancelled() else pump.exception()
        if failure is not None and not isinstance(
            failure, (HopFailed, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError)
        ):
            raise failure  # the owner dying mid-answer just ends the answer; anything else is ours to report
        await end_stream(req.send)

    async def _pump(self, req: Request, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            await req.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.close()


def _cancel(task: "asyncio.Future[None]") -> None:
    task.cancel()


async def _head_of(stream: AsyncIterator[bytes]) -> tuple[bytes, bool]:
    """Up to WHOLE_ANSWER_MAX_BYTES of a (JSON) answer, and whether that is all of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        chunks.append(chunk)
        size += len(chunk)
        if size > WHOLE_ANSWER_MAX_BYTES:
            return b"".join(chunks), False
    return b"".join(chunks), True


def _connection_named(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names the client's Connection header lists: hop-by-hop by its say-so, never sent on."""
    return frozenset(
        name.strip().lower() for key, value in headers if key == b"connection" for name in value.split(b",")
    )


def _address(base_url: str) -> tuple[bool, str, int]:
    """Whether TLS, host and port of an advertise URL (checked at start and when its record was read)."""
    parts = urlsplit(base_url)
    tls = parts.scheme == "https"
    return tls, parts.hostname or "", parts.port or (443 if tls else 80)
