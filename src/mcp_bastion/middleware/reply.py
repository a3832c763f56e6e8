"""Prebuilt rejections, written in the dialect of the route they refuse.

JSON routes answer in the Express server's `{"error", "message"}` shape; MCP routes answer a JSON-RPC error
object (id null: the body was not read), which MCP clients can show. The HTTP status is the same either way.
"""

from typing import Any

import orjson

from mcp_bastion.access import CONTEXT_KEY, Dialect, RequestContext
from mcp_bastion.audit import AuditLog
from mcp_bastion.errors import INTERNAL_ERROR, INVALID_REQUEST, SERVER_UNAVAILABLE
from mcp_bastion.ratelimit import Verdict
from mcp_bastion.types import ASGIApp as ASGIApp
from mcp_bastion.types import Scope, Send

LIMITED_MESSAGE = "Rate limit exceeded, try again later"
RESPONSE_HEADERS = "response_headers"  # state key: headers a stage decided for whatever response comes (RateLimit)
# JSON-RPC codes for refusals by HTTP status (MCP leaves the server-error range to implementations).
RPC_CODES = {401: -32001, 403: -32003, 429: -32029, 503: SERVER_UNAVAILABLE, 500: INTERNAL_ERROR}


def headers_of(scope: Scope) -> dict[bytes, bytes]:
    """The request headers as a dict (lowercase names; the last of duplicates), built once per request."""
    st = state(scope)
    found: dict[bytes, bytes] | None = st.get("headers")
    if found is None:
        found = st["headers"] = dict(scope["headers"])
    return found


def state(scope: Scope) -> dict[str, Any]:
    """Per-request transport flags the outermost stage keeps (parsed headers, whether the response started).

    Identity and route live in the typed `RequestContext`, never here.
    """
    found: dict[str, Any] = scope.setdefault("state", {})
    return found


async def reject(
    send: Send,
    status: int,
    error: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Send a complete JSON rejection in the `{"error", "message"}` shape (plus `detail`'s keys)."""
    body = orjson.dumps({"error": error, "message": message, **(detail or {})})
    await _send(send, status, body, headers)


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    error: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Send a complete rejection in the dialect of the matched route (JSON when no route matched).

    `detail` goes into the JSON body next to "error" and "message", or into the JSON-RPC error's `data`.
    """
    ctx: RequestContext | None = scope.get(CONTEXT_KEY)
    if ctx is None or ctx.route.dialect is Dialect.JSON:
        await reject(send, status, error, message, headers, detail)
        return
    code = RPC_CODES.get(status, INVALID_REQUEST)
    rpc_error: dict[str, Any] = {"code": code, "message": f"{error}: {message}"}
    if detail:
        rpc_error["data"] = detail
    body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": rpc_error})
    await _send(send, status, body, headers)


def set_response_headers(scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
    """Headers the outermost stage adds to this request's response, whoever writes it (the RateLimit headers of a
    counted request: on a 200 as on a refusal)."""
    state(scope)[RESPONSE_HEADERS] = headers


async def refuse_limited(
    scope: Scope, send: Send, message: str, headers: list[tuple[bytes, bytes]], retry_after_s: int
) -> None:
    """429 Too many requests (Issue 10 item 1). On MCP routes the JSON-RPC error carries `data.retryAfterSeconds`, so
    an MCP client can read the delay; JSON routes keep the Express server's two keys (Retry-After says it)."""
    ctx: RequestContext | None = scope.get(CONTEXT_KEY)
    rpc = ctx is not None and ctx.route.dialect is Dialect.JSONRPC
    detail = {"retryAfterSeconds": max(1, retry_after_s)} if rpc else None
    await refuse(scope, send, 429, "Too many requests", message, headers, detail)


async def refuse_rate(
    audit: AuditLog, scope: Scope, send: Send, ctx: RequestContext, verdict: Verdict, reason: str
) -> None:
    """The audited 429 of an exhausted limit (`reason`: per-ip, per-principal)."""
    audit.record(
        "ratelimit.exceeded",
        outcome="denied",
        reason=reason,
        path=scope.get("path"),
        limit=verdict.limit.amount,
        **ctx.who(),
    )
    await refuse_limited(scope, send, LIMITED_MESSAGE, verdict.headers(), verdict.reset_s)


async def refuse_unavailable(scope: Scope, send: Send, dependency: str, retry_after_s: int, message: str) -> None:
    """503 + Retry-After naming the dependency that is down (Issue 9 item 1): a client can tell an outage from a
    refusal, and /health's 503 says which dependency it is."""
    detail = {"status": "degraded", "dependencies": {dependency: "down"}, "retryAfterSeconds": retry_after_s}
    headers = [(b"retry-after", str(retry_after_s).encode())]
    await refuse(scope, send, 503, "Service unavailable", message, headers, detail)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})
