"""413 for a declared body over the cap, before any stage reads it (transports also cap the bytes they read)."""

from mcp_bastion.errors import ProtocolError
from mcp_bastion.middleware.reply import ASGIApp, reject
from mcp_bastion.transports.http import Receive, Scope, Send, send_error


class BodyLimitMiddleware:
    """Refuses a Content-Length over MAX_BODY_BYTES; chunked bodies are counted by the reader."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if not value.isdigit() or int(value) > self.max_bytes:
                        await self._refuse(scope, send)
                        return
                    break
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"Request body exceeds {self.max_bytes} bytes"
        if scope["path"].startswith("/mcp/"):
            await send_error(send, ProtocolError(message, status=413))  # MCP clients read JSON-RPC errors
        else:
            await reject(send, 413, "Payload too large", message)
