"""Per-call policy: what one caller may do on one server (the one authorizer's grant, mcp.json's per-tool rate
limits), and the audit line.

Wraps the sink of a forwarded request, so the relay stays ignorant of principals and the cost is paid only here.
"""

import functools
import time
from typing import Any

from mcp_bastion.access import Grant, ServerLimits, grant_for
from mcp_bastion.audit import AuditLog, shape
from mcp_bastion.config import ServerRateLimit, ServerSpec
from mcp_bastion.errors import QUOTA_EXCEEDED, DependencyUnavailable
from mcp_bastion.jsonrpc import Answer, Message, RawResponse, error, parsed
from mcp_bastion.ratelimit import Limiter, Verdict
from mcp_bastion.relay import Sink
from mcp_bastion.transports.http import Request

FORBIDDEN = -32003  # implementation-defined server error: the caller may not use this method or item
NAMED_BY_NAME = frozenset({"tools/call", "prompts/get"})  # audited as `tool`; resources as `uri`


@functools.lru_cache(maxsize=1024)
def _limits(
    tools: tuple[str, ...] | None, resources: tuple[str, ...] | None, prompts: tuple[str, ...] | None
) -> ServerLimits:
    return ServerLimits(tools, resources, prompts)


class CallPolicy:
    """What one caller may do on one server, and where its calls are audited."""

    __slots__ = ("audit", "grant", "limiter", "principal_id", "rate", "server", "who")

    def __init__(self, req: Request, spec: ServerSpec, audit: AuditLog | None, limiter: Limiter | None = None) -> None:
        ctx = req.ctx
        principal = ctx.principal if ctx is not None else None
        limits = _limits(spec.allowed_tools, spec.allowed_resources, spec.allowed_prompts)
        # No principal means the pipeline did not run: nothing is granted (fail closed).
        self.grant: Grant = grant_for(principal.scopes if principal else (), spec.name, limits)
        self.audit = audit
        self.who: dict[str, Any] = ctx.who() if ctx is not None else {}
        self.who["server"] = spec.name
        self.server = spec.name
        self.principal_id = principal.id if principal is not None else ""
        self.rate = spec.rate_limit if limiter is not None else None  # mcp.json's rateLimit (Issue 10 item 1)
        self.limiter = limiter

    def may_call(self, tool: Any) -> bool:
        """Whether this caller may call `tool` on this server."""
        return self.grant.allows("tool", tool)

    async def check(self, message: Message) -> Message | None:
        """None if the request may reach the server; else the JSON-RPC error to answer, audited.

        Every MCP request passes here: the one authorizer's grant (refusal: `mcp.call` forbidden), then mcp.json's
        `rateLimit` of the server and of the tool (refusal: `ratelimit.exceeded` with `retryAfterSeconds`).

        When the shared counters (REDIS_URL) cannot count a limited call, the answer is a 503-style error.
        """
        method = message["method"]
        allowed, item = self.grant.may(method, message.get("params"))
        if not allowed:
            field = "tool" if method in NAMED_BY_NAME else "uri"
            self.record("mcp.call", method=method, outcome="forbidden", **{field: item})
            what = f"{method} of {item!r}" if item is not None else method
            return error(message["id"], FORBIDDEN, f"this token may not use {what} on this server")
        if self.rate is None or self.limiter is None:
            return None
        tool = (message.get("params") or {}).get("name") if method == "tools/call" else None
        return await self._limit(self.rate, self.limiter, message, tool)

    async def _limit(self, rate: ServerRateLimit, limiter: Limiter, message: Message, tool: Any) -> Message | None:
        """Issue 10 item 1: the per-minute limits of mcp.json, per principal, server and tool."""
        method = message["method"]
        checks: list[tuple[int, str, str | None]] = []
        if rate.per_minute is not None:
            checks.append((rate.per_minute, f"{self.principal_id}\x1f{self.server}", None))
        per_tool = rate.tools.get(tool) if isinstance(tool, str) else None
        if per_tool is not None:
            checks.append((per_tool.per_minute, f"{self.principal_id}\x1f{self.server}\x1f{tool}", tool))
        for amount, key, limited_tool in checks:
            try:
                verdict = await limiter.hit(limiter.call_limit(amount), key)
            except DependencyUnavailable as exc:  # fail closed: a limited call is never let through uncounted
                self.record("ratelimit.unavailable", outcome="denied", reason=f"{exc.dependency} down", method=method)
                return error(message["id"], exc.jsonrpc_code, exc.message, {"retryAfterSeconds": exc.retry_after_s})
            if not verdict.allowed:
                return self._refuse_limited(message, method, tool, limited_tool, verdict)
        return None

    def _refuse_limited(
        self, message: Message, method: str, tool: Any, limited_tool: str | None, verdict: Verdict
    ) -> Message:
        retry_after_s = max(1, verdict.reset_s)
        scope = "tool" if limited_tool is not None else "server"
        reason = f"per-{scope}"
        self.record(
            "ratelimit.exceeded",
            outcome="denied",
            reason=reason,
            method=method,
            tool=tool if isinstance(tool, str) else None,
            limit=verdict.limit.amount,
        )
        what = f"tool {limited_tool!r} on server {self.server!r}" if limited_tool else f"server {self.server!r}"
        text = f"Rate limit exceeded for {what}: {verdict.limit.amount} per minute; retry in {retry_after_s} s"
        data = {"retryAfterSeconds": retry_after_s, "limit": verdict.limit.amount, "scope": scope}
        return error(message["id"], QUOTA_EXCEEDED, text, data)

    def wrap(self, message: Message, sink: Sink) -> Sink:
        """The sink that audits (and, for the lists, filters) this request's answer."""
        method = message["method"]
        params = message.get("params") or {}
        if self.grant.filters(method):
            sink = ListFilter(sink, self.grant, method)
        if self.audit is None:
            return sink
        tool = params.get("name") if method in NAMED_BY_NAME else None
        args = shape(params.get("arguments")) if method == "tools/call" else None
        return AuditedCall(sink, self, method, tool, args)

    def record(self, event: str, **fields: Any) -> None:
        """An audit line carrying this caller's identity."""
        if self.audit is not None:
            self.audit.record(event, **self.who, **fields)


class ListFilter:
    """Removes from a list result (tools, prompts, resources, templates) what this caller may not use."""

    __slots__ = ("grant", "inner", "method")

    def __init__(self, inner: Sink, grant: Grant, method: str) -> None:
        self.inner = inner
        self.grant = grant
        self.method = method

    def deliver(self, message: Answer) -> None:
        """Filter, then pass on (a result that came as its bytes is parsed first: a list is never passed raw)."""
        message = parsed(message)
        self.grant.filter_result(self.method, message.get("result"))
        self.inner.deliver(message)

    def notify(self, message: Message) -> None:
        """Pass on."""
        self.inner.notify(message)

    def cancelled(self, message: Message) -> None:
        """Pass on."""
        self.inner.cancelled(message)


class AuditedCall:
    """Writes the `mcp.call` line when the answer arrives."""

    __slots__ = ("args", "inner", "method", "policy", "started", "tool")

    def __init__(self, inner: Sink, policy: CallPolicy, method: str, tool: Any, args: Any) -> None:
        self.inner = inner
        self.policy = policy
        self.method = method
        self.tool = tool
        self.args = args
        self.started = time.perf_counter()

    def deliver(self, message: Answer) -> None:
        """Audit, then pass on."""
        outcome, error = outcome_of(message)
        self.policy.record(
            "mcp.call",
            method=self.method,
            tool=self.tool,
            outcome=outcome,
            code=error.get("code") if isinstance(error, dict) else None,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 2),
            args=self.args,
        )
        self.inner.deliver(message)

    def notify(self, message: Message) -> None:
        """Pass on."""
        self.inner.notify(message)

    def cancelled(self, message: Message) -> None:
        """Audit the cancellation, then pass on."""
        latency = round((time.perf_counter() - self.started) * 1000, 2)
        self.policy.record(
            "mcp.call", method=self.method, tool=self.tool, outcome="cancelled", latency_ms=latency, args=self.args
        )
        self.inner.cancelled(message)


def outcome_of(answer: Answer) -> tuple[str, Any]:
    """The audit outcome of an answer ("ok", "error", "tool_error") and its JSON-RPC error, if any.

    A large result relayed as its bytes (Issue 11 item 1) is a result by construction; whether it says `isError` is
    read from its ends, not by parsing it.
    """
    if isinstance(answer, RawResponse):
        return ("tool_error" if answer.tool_error else "ok"), None
    error = answer.get("error")
    if error is not None:
        return "error", error
    result = answer.get("result")
    return ("tool_error" if isinstance(result, dict) and result.get("isError") is True else "ok"), None
