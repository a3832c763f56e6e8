"""The route stage: normalise and match the path once, refuse what is not a declared route, place the context.

Everything after this stage reads the route and its `{server}` from the `RequestContext`, never from the path.
"""

from mcp_bastion.access import CONTEXT_KEY, BadPath, RequestContext, RouteTable
from mcp_bastion.audit import AuditLog
from mcp_bastion.middleware.reply import refuse, reject, state
from mcp_bastion.types import ASGIApp, Receive, Scope, Send

PREFLIGHT = "OPTIONS"  # answered by the CORS stage for allowed origins; otherwise the router's 405


class RouteMiddleware:
    """400 for a non-canonical path, 404 for an undeclared one, 405 for an undeclared method; audited."""

    def __init__(self, app: ASGIApp, *, table: RouteTable, audit: AuditLog) -> None:
        self.app = app
        self.table = table
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id: str = state(scope)["request_id"]
        try:
            found = self.table.match(scope["path"], scope.get("raw_path"))
        except BadPath as exc:
            self._refused(scope, request_id, 400, str(exc))
            await reject(send, 400, "Bad request", f"Not a canonical path: {exc}")
            return
        if found is None:
            self._refused(scope, request_id, 404, "no such route")
            await reject(send, 404, "Not found", "No such route")
            return
        route, params = found
        scope[CONTEXT_KEY] = RequestContext(request_id, route, params)
        method = scope["method"]
        if method not in route.methods and method != PREFLIGHT:
            self._refused(scope, request_id, 405, "method not allowed")
            allowed = ", ".join(sorted(route.methods))
            await refuse(scope, send, 405, "Method not allowed", f"use {allowed}", [(b"allow", allowed.encode())])
            return
        await self.app(scope, receive, send)

    def _refused(self, scope: Scope, request_id: str, status: int, reason: str) -> None:
        client = scope.get("client")
        self.audit.record(
            "http.refused",
            outcome="denied",
            reason=reason,
            status=status,
            request_id=request_id,
            ip=client[0] if client else None,  # the socket peer: the address stage has not run yet
            method=scope.get("method"),
            path=scope.get("path"),
        )
