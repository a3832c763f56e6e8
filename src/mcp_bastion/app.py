"""create_app: the ASGI application, its routes and its lifespan. The security pipeline wraps what this returns."""

import logging
from collections.abc import Mapping
from typing import Any

from mcp_bastion import __version__
from mcp_bastion.config import ServerSpec, Settings, child_base_env
from mcp_bastion.errors import GatewayError, ProtocolError
from mcp_bastion.protocol import is_modern_header
from mcp_bastion.relay import Gateway
from mcp_bastion.supervisor import ServerState, Supervisor
from mcp_bastion.supervisor.supervisor import EventSink
from mcp_bastion.transports.http import Receive, Request, Scope, Send, send_bytes, send_error, send_json
from mcp_bastion.transports.modern import ModernTransport
from mcp_bastion.transports.sse import SseTransport
from mcp_bastion.transports.streamable import StreamableTransport

log = logging.getLogger("mcp_bastion.app")

MODERN_MARKER = b'"io.modelcontextprotocol/protocolVersion"'
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
MANAGEMENT = {"start", "stop", "restart"}


def log_event(event: str, **fields: Any) -> None:
    """Default event sink until the audit log exists: one log line per supervisor event."""
    log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))


class BastionApp:
    """Routes requests to the transports and the management endpoints; runs the gateway's lifespan."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.streamable = StreamableTransport(gateway)
        self.sse = SseTransport(gateway)
        self.modern = ModernTransport(gateway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.gateway.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        req = Request(scope, receive, tracked_send)
        try:
            await self._route(req, scope["path"])
        except GatewayError as exc:
            if not started:
                await send_error(tracked_send, exc)
        except Exception:  # the top of a request: log it, answer 500 without internals
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:
                await send_error(tracked_send, GatewayError("Internal error"))

    async def _route(self, req: Request, path: str) -> None:
        parts = path.strip("/").split("/")
        if parts == ["livez"]:
            await self._only(req, "GET")
            await send_bytes(req.send, 200, b"ok", TEXT)
        elif parts == ["health"]:
            await self._only(req, "GET")
            await send_json(req.send, 200, self.health())
        elif parts[0] != "mcp" or len(parts) < 2:
            raise ProtocolError("Not found", status=404)
        elif parts == ["mcp", "servers"]:
            await self._only(req, "GET")
            await send_json(req.send, 200, {"servers": [self.gateway.server_view(n) for n in self.gateway.specs]})
        elif len(parts) == 2:
            await self._mcp(req, parts[1])
        elif len(parts) == 3 and parts[2] == "sse":
            await self._only(req, "GET")
            self.gateway.spec(parts[1])
            await self.sse.stream(req, parts[1])
        elif len(parts) == 3 and parts[2] == "messages":
            await self._only(req, "POST")
            self.gateway.spec(parts[1])
            await self.sse.post(req, parts[1])
        elif len(parts) == 3 and parts[2] in MANAGEMENT:
            await self._only(req, "POST")
            await self._manage(req, parts[1], parts[2])
        else:
            raise ProtocolError("Not found", status=404)

    async def _only(self, req: Request, method: str) -> None:
        if req.method != method:
            await send_json(
                req.send,
                405,
                {"error": "Method not allowed", "message": f"use {method}"},
                [(b"allow", method.encode())],
            )
            raise _Answered

    async def _mcp(self, req: Request, server: str) -> None:
        self.gateway.spec(server)
        modern = is_modern_header(req.header(b"mcp-protocol-version"))
        if req.method == "POST":
            body = await req.body(self.gateway.settings.max_body_bytes)
            if modern or (b"mcp-session-id" not in req.headers and MODERN_MARKER in body):
                await self.modern.post(req, server, body)
            else:
                await self.streamable.post(req, server, body)
        elif modern and req.method in ("GET", "DELETE"):
            await send_bytes(req.send, 405, b"", [(b"allow", b"POST")])
        elif req.method == "GET":
            await self.streamable.get(req, server)
        elif req.method == "DELETE":
            await self.streamable.delete(req, server)
        else:
            await send_bytes(req.send, 405, b"", [(b"allow", b"GET, POST, DELETE")])

    async def _manage(self, req: Request, server: str, action: str) -> None:
        spec = self.gateway.spec(server)
        handle = self.gateway.handles[server]
        if spec.isolation != "shared":
            raise ProtocolError(f"server {server!r} runs one child per session; there is nothing to {action}")
        if action == "start":
            handle.start()
        elif action == "stop":
            await handle.stop()
        else:
            await handle.restart()
        await send_json(req.send, 200, self.gateway.server_view(server))

    def health(self) -> dict[str, Any]:
        """Status, version and every server's state."""
        servers = {name: self.gateway.server_view(name) for name in self.gateway.specs}
        shared = [v for v in servers.values() if v["isolation"] == "shared"]
        degraded = any(v["state"] != ServerState.RUNNING for v in shared)
        return {"status": "degraded" if degraded else "ok", "version": __version__, "servers": servers}


class _Answered(GatewayError):
    """Internal: the response was already sent (e.g. 405); unwind quietly."""


def create_app(
    settings: Settings,
    servers: Mapping[str, ServerSpec],
    *,
    supervisor: Supervisor | None = None,
    events: EventSink = log_event,
) -> BastionApp:
    """Build the gateway application (lifespan starts and stops the children)."""
    supervisor = supervisor or Supervisor(settings, base_env=child_base_env(), events=events)
    return BastionApp(Gateway(settings, servers, supervisor))
