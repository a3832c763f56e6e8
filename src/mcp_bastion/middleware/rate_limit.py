"""429 with Retry-After and RateLimit-* headers, before auth per client IP and after auth per principal.

When the shared counters (REDIS_URL) cannot count, the request is refused with 503 + Retry-After, never let through.
"""

from mcp_bastion.access import RateClass, context_of
from mcp_bastion.audit import AuditLog
from mcp_bastion.errors import DependencyUnavailable
from mcp_bastion.middleware.reply import refuse, refuse_unavailable
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.types import ASGIApp, Receive, Scope, Send


class RateLimitMiddleware:
    """One limit stage; `per` is "ip" (before auth) or "principal" (after auth). The route says what counts."""

    def __init__(self, app: ASGIApp, *, limiter: Limiter, per: str, audit: AuditLog) -> None:
        self.app = app
        self.limiter = limiter
        self.per = per
        self.item = limiter.per_ip if per == "ip" else limiter.per_principal
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        ctx = context_of(scope)
        if ctx.route.rate is RateClass.NONE:
            await self.app(scope, receive, send)
            return
        if self.per == "ip":
            key = ctx.client_ip
        elif ctx.principal is not None:
            key = ctx.principal.id
        else:
            await self.app(scope, receive, send)
            return
        try:
            verdict = await self.limiter.hit(self.item, key)
        except DependencyUnavailable as exc:
            self.audit.record(
                "ratelimit.unavailable",
                outcome="denied",
                reason=f"{exc.dependency} down",
                path=scope.get("path"),
                **ctx.who(),
            )
            message = "The shared rate limiter is unavailable; try again later"
            await refuse_unavailable(scope, send, exc.dependency, exc.retry_after_s, message)
            return
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        self.audit.record(
            "ratelimit.exceeded",
            outcome="denied",
            reason=f"per-{self.per}",
            path=scope.get("path"),
            limit=verdict.limit,
            **ctx.who(),
        )
        await refuse(scope, send, 429, "Too many requests", "Rate limit exceeded, try again later", verdict.headers())
