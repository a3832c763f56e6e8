"""Outermost stage: request id, security headers on every response (errors included), and the error bracket."""

import logging
import secrets

from mcp_bastion.middleware.reply import RESPONSE_HEADERS, reject, state
from mcp_bastion.types import ASGIApp, ASGIMessage, Receive, Scope, Send

log = logging.getLogger("mcp_bastion.http")

CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
BASE_HEADERS = [
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


class SecurityHeadersMiddleware:
    """Adds the security headers (setdefault semantics) and turns an escaped exception into a clean 500."""

    def __init__(self, app: ASGIApp, *, tls: bool) -> None:
        self.app = app
        self.headers = [*BASE_HEADERS, HSTS] if tls else list(BASE_HEADERS)
        self.names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        st = state(scope)
        st["request_id"] = request_id
        st["headers"] = dict(scope["headers"])  # built once; later stages and the transports reuse it
        started = False

        async def send_with_headers(message: ASGIMessage) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                st["response_started"] = True
                headers = list(message.get("headers", ()))
                if any(name.lower() in self.names for name, _ in headers):  # a route chose its own: keep it
                    present = {name.lower() for name, _ in headers}
                    headers += [h for h in self.headers if h[0] not in present]
                else:
                    headers += self.headers
                headers.append((b"x-request-id", request_id.encode()))
                decided = st.get(RESPONSE_HEADERS)  # a later stage's (the RateLimit headers of a counted request)
                if decided is not None:
                    headers += decided
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:  # the top of a request: log it, answer without internals
            log.exception("unhandled error (request %s)", request_id)
            if not started:
                await reject(send_with_headers, 500, "Internal error", f"request {request_id} failed")
