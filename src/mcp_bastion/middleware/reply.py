"""Prebuilt rejections: every stage answers in the Express server's `{"error", "message"}` shape."""

from typing import Any

import orjson

from mcp_bastion.transports.http import Scope, Send

ASGIApp = Any


def headers_of(scope: Scope) -> dict[bytes, bytes]:
    """The request headers as a dict (lowercase names; the last of duplicates), built once per request."""
    st = state(scope)
    found = st.get("headers")
    if found is None:
        found = st["headers"] = dict(scope["headers"])
    return found


def state(scope: Scope) -> dict[str, Any]:
    """The per-request state dict the pipeline fills (request id, client IP, principal, scopes)."""
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


async def reject(
    send: Send, status: int, error: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a complete JSON rejection."""
    body = orjson.dumps({"error": error, "message": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})
