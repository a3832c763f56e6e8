"""503 + Retry-After for every request that arrives once the gateway is shutting down (Issue 9 item 6).

uvicorn stops accepting connections on SIGTERM, but requests still reach the application in the moment before the
listener closes and on connections it had already accepted. None of them starts new work: they are refused before
authentication or the store is touched, in the route's dialect (a JSON-RPC error on MCP routes), with the retry
hint a client needs to try again on a restarted or replacement instance.
"""

from mcp_bastion.access import context_of
from mcp_bastion.audit import AuditLog
from mcp_bastion.middleware.reply import refuse
from mcp_bastion.relay import Gateway
from mcp_bastion.relay.sessions import SHUTDOWN_RETRY_AFTER_S
from mcp_bastion.types import ASGIApp, Receive, Scope, Send

MESSAGE = "the gateway is shutting down; retry shortly"


class ShutdownMiddleware:
    """Refuses requests while `gateway.closing` is set; passes everything through otherwise."""

    def __init__(self, app: ASGIApp, *, gateway: Gateway, audit: AuditLog) -> None:
        self.app = app
        self.gateway = gateway
        self.audit = audit
        self.headers = [(b"retry-after", str(SHUTDOWN_RETRY_AFTER_S).encode())]
        self.detail = {"reason": "shutting down", "retryAfterSeconds": SHUTDOWN_RETRY_AFTER_S}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.gateway.closing:
            await self.app(scope, receive, send)
            return
        self.audit.record(
            "http.refused", outcome="denied", reason="shutting down", status=503, **context_of(scope).who()
        )
        await refuse(scope, send, 503, "Service unavailable", MESSAGE, self.headers, dict(self.detail))
