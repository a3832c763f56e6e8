"""429 with Retry-After and RateLimit-* headers, before auth per client IP and after auth per principal."""

from mcp_bastion.audit import AuditLog
from mcp_bastion.middleware.reply import ASGIApp, reject, state
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.transports.http import Receive, Scope, Send


class RateLimitMiddleware:
    """One limit stage; `per` is "ip" (before auth) or "principal" (after auth)."""

    def __init__(self, app: ASGIApp, *, limiter: Limiter, per: str, audit: AuditLog, exempt: frozenset[str]) -> None:
        self.app = app
        self.limiter = limiter
        self.per = per
        self.item = limiter.per_ip if per == "ip" else limiter.per_principal
        self.audit = audit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        st = state(scope)
        key = st.get("client_ip", "unknown") if self.per == "ip" else st.get("principal")
        if key is None:
            await self.app(scope, receive, send)
            return
        verdict = await self.limiter.hit(self.item, str(key))
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        self.audit.record(
            "ratelimit.exceeded",
            outcome="denied",
            reason=f"per-{self.per}",
            request_id=st.get("request_id"),
            ip=st.get("client_ip"),
            principal=st.get("principal"),
            path=scope.get("path"),
            limit=verdict.limit,
        )
        await reject(send, 429, "Too many requests", "Rate limit exceeded, try again later", verdict.headers())
