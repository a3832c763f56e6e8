"""HTTP+SSE (2024-11-05): GET /mcp/{server}/sse opens a session, POST /mcp/{server}/messages?session_id= feeds it."""

from mcp_bastion.errors import INVALID_REQUEST, GatewayError, ProtocolError, QuotaExceeded
from mcp_bastion.jsonrpc import Kind, Message, classify, error, line_id, loads, result
from mcp_bastion.protocol import negotiate_version
from mcp_bastion.relay import ClientSession, Gateway
from mcp_bastion.transports import dispatch
from mcp_bastion.transports.http import BodyTooLarge, Request, read_ends, send_bytes
from mcp_bastion.transports.policy import CallPolicy
from mcp_bastion.transports.streamable import pump_outbox, refuse

ACCEPTED = [(b"content-type", b"text/plain; charset=utf-8")]


class SseTransport:
    """The deprecated but still common two-endpoint transport."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.max_body = gateway.settings.max_body_bytes
        self.keepalive_s = gateway.settings.sse_keepalive_s

    async def stream(self, req: Request, server: str) -> None:
        """Open a session and stream it: the `endpoint` event first, then every message for the client.

        The stream counts against the caller's stream quota and the session against its session quota.
        """
        principal = req.principal
        try:
            slot = self.gateway.claim_stream(principal, server)
            try:
                session = await self.gateway.open_session(
                    server, era="sse", principal=principal, init=None, credential=req.credential
                )
            except BaseException:
                slot.release()
                raise
        except QuotaExceeded as exc:
            await refuse(req, exc)
            return
        root = req.scope.get("root_path", "")
        endpoint = f"{root}/mcp/{server}/messages?session_id={session.id}".encode()
        first = b"event: endpoint\ndata: " + endpoint + b"\n\n"
        try:
            await pump_outbox(req, session, self.keepalive_s, [], slot=slot, first=first)
        finally:
            await self.gateway.end_session(session)

    async def post(self, req: Request, server: str) -> None:
        """One client message for an open session; answered 202, the reply travels on the stream."""
        session_id = req.query_param("session_id")
        if not session_id:
            raise ProtocolError("session_id is required")
        session = self.gateway.find_session(
            session_id, server=server, principal=req.principal, credential=req.credential
        )
        if session.era != "sse":
            raise ProtocolError("that session is not an HTTP+SSE session", status=404)
        if not req.is_json():
            raise ProtocolError("Content-Type must be application/json", status=415)
        body, head, tail = await read_ends(req, self.max_body)
        if body is None:
            # The client waits for the answer on the stream, and SDK clients drop the session on a POST error:
            # with an id, the error is the answer (on the stream) and the POST is accepted; without one, 413.
            request_id = line_id(head, tail)
            if request_id is None:
                raise BodyTooLarge(self.max_body)
            limit = f"over {self.max_body} bytes (MAX_BODY_BYTES)"
            session.push(error(request_id, INVALID_REQUEST, f"the request was too large: {limit}"))
            await send_bytes(req.send, 202, b"Accepted", ACCEPTED)
            return
        message = loads(body)
        try:
            kind = classify(message)
        except ProtocolError as exc:
            exc.request_id = dispatch.request_id_of(message)
            raise
        await send_bytes(req.send, 202, b"Accepted", ACCEPTED)
        if kind is Kind.REQUEST:
            await self._request(
                session, message, CallPolicy(req, self.gateway.spec(server), self.gateway.audit, self.gateway.limiter)
            )
        elif kind is Kind.NOTIFICATION:
            await dispatch.notification(self.gateway, session, message)
        else:
            await dispatch.client_response(session, message)

    async def _request(self, session: ClientSession, message: Message, policy: CallPolicy) -> None:
        if message["method"] == "initialize" and session.protocol_version is None:
            params = message.get("params") or {}
            if session.own_backend:
                try:
                    await self.gateway.start_session_child(session, message)
                except GatewayError as exc:  # the client must hear why, on its stream
                    session.push(error(message["id"], exc.jsonrpc_code, exc.message))
                    return
            session.protocol_version = negotiate_version(params.get("protocolVersion"))
            session.client_info = params.get("clientInfo")
            session.push(result(message["id"], dispatch.initialize_result(session.backend, message)))
            return
        try:
            session.admit(message["id"])  # nothing awaits between this and the relay's in-flight entry
        except GatewayError as exc:  # the POST was answered 202 already: the refusal travels on the stream
            if isinstance(exc, QuotaExceeded):
                self.gateway.inflight_refused(session, exc)
            session.push(error(message["id"], exc.jsonrpc_code, exc.message, exc.data))
            return
        await dispatch.request(session.backend, message, session, session=session, policy=policy)
