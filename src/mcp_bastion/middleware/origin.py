"""DNS-rebinding defence: a foreign Host gets 421, a foreign Origin 403 (on every route, preflights included)."""

from mcp_bastion.access import context_of
from mcp_bastion.audit import AuditLog
from mcp_bastion.middleware.reply import headers_of, refuse
from mcp_bastion.types import ASGIApp, Receive, Scope, Send


def host_name(value: str) -> str:
    """The host part of a Host header, lowercased, without port (IPv6 keeps its brackets)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostOriginMiddleware:
    """Checks Host against the allowed host names and Origin (when sent) against ALLOWED_ORIGINS."""

    def __init__(self, app: ASGIApp, *, hosts: set[str], origins: set[str], audit: AuditLog) -> None:
        self.app = app
        self.hosts = {host_name(h) for h in hosts}
        self.origins = {o.rstrip("/").lower() for o in origins}
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = headers_of(scope)
        host = headers.get(b"host")
        if host is None or host_name(host.decode("latin-1")) not in self.hosts:
            self._audit(scope, "host", host)
            await refuse(scope, send, 421, "Misdirected request", "This host name is not served here")
            return
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_ok(origin, host):
            self._audit(scope, "origin", origin)
            await refuse(scope, send, 403, "Forbidden", "Origin not allowed")
            return
        await self.app(scope, receive, send)

    def _origin_ok(self, origin: bytes, host: bytes) -> bool:
        text = origin.decode("latin-1").rstrip("/").lower()
        if text in self.origins:
            return True
        # Same origin as the (already checked) Host: a page served by this gateway calling itself.
        _, sep, authority = text.partition("://")
        return bool(sep) and authority == host.decode("latin-1").strip().lower()

    def _audit(self, scope: Scope, reason: str, value: bytes | None) -> None:
        self.audit.record(
            "origin.denied",
            outcome="denied",
            reason=reason,
            value=(value or b"").decode("latin-1")[:200],
            path=scope.get("path"),
            **context_of(scope).who(),
        )
