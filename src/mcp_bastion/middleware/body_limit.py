"""413 for a declared body over the cap, before any stage reads it (transports also cap the bytes they read)."""

from mcp_bastion.access import context_of
from mcp_bastion.middleware.reply import refuse
from mcp_bastion.types import ASGIApp, Receive, Scope, Send


class BodyLimitMiddleware:
    """Refuses a Content-Length over MAX_BODY_BYTES; chunked bodies are counted by the reader."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length":
                    over = not value.isdigit() or int(value) > self.max_bytes
                    if over and (not value.isdigit() or not context_of(scope).route.body_cap_in_handler):
                        message = f"Request body exceeds {self.max_bytes} bytes"
                        await refuse(scope, send, 413, "Payload too large", message)
                        return
                    break
        await self.app(scope, receive, send)
