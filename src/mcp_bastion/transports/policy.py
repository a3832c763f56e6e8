"""Per-call policy: which tools a caller may use (token scopes ∩ the server's allowedTools), and the audit line.

Wraps the sink of a forwarded request, so the relay stays ignorant of principals and the cost is paid only here.
"""

import fnmatch
import time
from typing import Any

from mcp_bastion.audit import AuditLog, shape
from mcp_bastion.config import ServerSpec
from mcp_bastion.jsonrpc import Message
from mcp_bastion.relay import Sink
from mcp_bastion.security import ADMIN_SCOPE, may_call_tool
from mcp_bastion.transports.http import Request

FORBIDDEN = -32003  # implementation-defined server error: the caller may not use this tool


class CallPolicy:
    """What one caller may do on one server, and where its calls are audited."""

    __slots__ = ("allowed_tools", "audit", "ip", "principal", "request_id", "scopes", "server", "unrestricted")

    def __init__(self, req: Request, spec: ServerSpec, audit: AuditLog | None) -> None:
        st = req.scope.get("state") or {}
        self.server = spec.name
        self.principal: str | None = st.get("principal")
        self.scopes: tuple[str, ...] | None = st.get("scopes")
        self.ip = st.get("client_ip")
        self.request_id = st.get("request_id")
        self.allowed_tools = spec.allowed_tools
        self.audit = audit
        scopes = self.scopes
        self.unrestricted = self.allowed_tools is None and (
            scopes is None or ADMIN_SCOPE in scopes or "server:*" in scopes or f"server:{spec.name}" in scopes
        )

    def may_call(self, tool: Any) -> bool:
        """Whether this caller may call `tool` on this server."""
        if self.unrestricted:
            return True
        if not isinstance(tool, str):
            return False
        if self.allowed_tools is not None and not any(fnmatch.fnmatchcase(tool, p) for p in self.allowed_tools):
            return False
        return self.scopes is None or may_call_tool(self.scopes, self.server, tool)

    def wrap(self, message: Message, sink: Sink) -> Sink:
        """The sink that audits (and, for tools/list, filters) this request's answer."""
        method = message["method"]
        params = message.get("params") or {}
        if method == "tools/list" and not self.unrestricted:
            sink = ListFilter(sink, self)
        if self.audit is None:
            return sink
        tool = params.get("name") if method in ("tools/call", "prompts/get") else None
        args = shape(params.get("arguments")) if method == "tools/call" else None
        return AuditedCall(sink, self, method, tool, args)

    def record(self, event: str, **fields: Any) -> None:
        """An audit line carrying this caller's identity."""
        if self.audit is not None:
            self.audit.record(
                event, request_id=self.request_id, ip=self.ip, principal=self.principal, server=self.server, **fields
            )


class ListFilter:
    """Removes from a tools/list result the tools this caller may not call."""

    __slots__ = ("inner", "policy")

    def __init__(self, inner: Sink, policy: CallPolicy) -> None:
        self.inner = inner
        self.policy = policy

    def deliver(self, message: Message) -> None:
        """Filter, then pass on."""
        result = message.get("result")
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            result["tools"] = [
                t for t in result["tools"] if isinstance(t, dict) and self.policy.may_call(t.get("name"))
            ]
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

    def deliver(self, message: Message) -> None:
        """Audit, then pass on."""
        error = message.get("error")
        outcome = "ok"
        if error is not None:
            outcome = "error"
        elif isinstance(message.get("result"), dict) and message["result"].get("isError") is True:
            outcome = "tool_error"
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
