"""The per-address and per-principal limits (Issue 10 item 1), with RateLimit headers on every counted response.

Before authentication (`per="ip"`): a public route's request counts against its address (RATE_LIMIT_MAX_REQUESTS,
what the Express server's limit protected: unauthenticated traffic and login attempts); any other route's request
is not counted here (the authentication stage counts it if it is refused), but an address already over its limit
is refused at once, before the store is asked, unless the request carries a credential known good from it.
After authentication (`per="principal"`): the principal's per-minute budget, keyed on `principal.id`; the
dashboard's polled reads (RateClass.DASHBOARD) are exempt for a login-cookie session, so the dashboard never spends
the budget of the tools it watches. The static dashboard page and files are never limited (RateClass.NONE).

Refusals are 429 + Retry-After in the route's dialect (a JSON-RPC error with `data.retryAfterSeconds` on MCP routes).
When the shared counters (REDIS_URL) cannot count, the request is refused with 503 + Retry-After, never let through.
"""

from mcp_bastion.access import RateClass, RequestContext, context_of
from mcp_bastion.audit import AuditLog
from mcp_bastion.errors import DependencyUnavailable
from mcp_bastion.middleware.auth import presented_hash
from mcp_bastion.middleware.reply import refuse_rate, refuse_unavailable, set_response_headers
from mcp_bastion.ratelimit import Limiter, Verdict
from mcp_bastion.types import ASGIApp, Receive, Scope, Send


class RateLimitMiddleware:
    """One limit stage; `per` is "ip" (before auth) or "principal" (after auth). The route's RateClass says what
    counts."""

    def __init__(self, app: ASGIApp, *, limiter: Limiter, per: str, audit: AuditLog) -> None:
        self.app = app
        self.limiter = limiter
        self.per_ip = per == "ip"
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        ctx = context_of(scope)
        rate = ctx.route.rate
        if rate is RateClass.NONE:
            await self.app(scope, receive, send)
            return
        if self.per_ip:
            # The hot path: an authenticated route from an address that is not over its limit costs one look-up.
            if rate is not RateClass.IP and self.limiter.flooded(ctx.client_ip) is None:
                await self.app(scope, receive, send)
                return
            go_on = await self._address(scope, send, ctx, rate)
        else:
            go_on = await self._principal(scope, send, ctx, rate)
        if go_on:
            await self.app(scope, receive, send)

    async def _address(self, scope: Scope, send: Send, ctx: RequestContext, rate: RateClass) -> bool:
        """Whether the request goes on (False: refused here)."""
        if rate is RateClass.IP:
            try:
                verdict = await self.limiter.hit_address(ctx.client_ip)
            except DependencyUnavailable as exc:
                await self._unavailable(scope, send, ctx, exc)
                return False
            return await self._judge(scope, send, ctx, verdict, "per-ip")
        flooded = self.limiter.flooded(ctx.client_ip)
        if flooded is None:
            return True  # not counted: the authentication stage counts it if it is refused
        credential = presented_hash(scope, ctx.route)
        if credential is not None and await self._known(ctx, credential):
            return True
        await refuse_rate(self.audit, scope, send, ctx, flooded, "per-ip")
        return False

    async def _principal(self, scope: Scope, send: Send, ctx: RequestContext, rate: RateClass) -> bool:
        """Whether the request goes on (False: refused here)."""
        principal = ctx.principal
        if principal is None or (rate is RateClass.DASHBOARD and principal.via == "cookie"):
            return True
        limiter = self.limiter
        try:
            verdict = await limiter.hit(limiter.per_principal, principal.id)
        except DependencyUnavailable as exc:
            await self._unavailable(scope, send, ctx, exc)
            return False
        if verdict.allowed:  # inline: the hot path of every authenticated request
            set_response_headers(scope, verdict.headers())
            return True
        return await self._judge(scope, send, ctx, verdict, "per-principal")

    async def _judge(self, scope: Scope, send: Send, ctx: RequestContext, verdict: Verdict, reason: str) -> bool:
        if verdict.allowed:
            set_response_headers(scope, verdict.headers())  # the verdict is computed: showing it costs two tuples
            return True
        await refuse_rate(self.audit, scope, send, ctx, verdict, reason)
        return False

    async def _known(self, ctx: RequestContext, credential: str) -> bool:
        try:
            return await self.limiter.known.known(ctx.client_ip, credential)
        except DependencyUnavailable:
            return False  # fail closed: the address stays refused

    async def _unavailable(self, scope: Scope, send: Send, ctx: RequestContext, exc: DependencyUnavailable) -> None:
        self.audit.record(
            "ratelimit.unavailable",
            outcome="denied",
            reason=f"{exc.dependency} down",
            path=scope.get("path"),
            **ctx.who(),
        )
        message = "The shared rate limiter is unavailable; try again later"
        await refuse_unavailable(scope, send, exc.dependency, exc.retry_after_s, message)
