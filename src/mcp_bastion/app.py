"""create_app: the ASGI application, its routes and its lifespan, behind the security pipeline."""

import logging
from collections.abc import Mapping
from typing import Any

from mcp_bastion import __version__
from mcp_bastion.admin import AdminRoutes
from mcp_bastion.audit import AuditLog
from mcp_bastion.config import ServerSpec, Settings, child_base_env, default_store_url
from mcp_bastion.dashboard.routes import DashboardRoutes
from mcp_bastion.errors import GatewayError, ProtocolError
from mcp_bastion.middleware import Security, build_pipeline
from mcp_bastion.middleware.auth import Authenticator
from mcp_bastion.middleware.reply import state
from mcp_bastion.protocol import MODERN_VERSIONS, is_modern_header
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.relay import Gateway
from mcp_bastion.store import Store, open_store
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
SECRET_MIN_CHARS = 6  # child env values at least this long are scrubbed from the audit log


def log_event(event: str, **fields: Any) -> None:
    """Supervisor events also go to the process log, for people watching the console."""
    log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))


class BastionApp:
    """Routes requests to the transports and the management endpoints; runs the gateway's lifespan.

    Every HTTP request passes the security pipeline before it reaches `_http`.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        settings: Settings,
        store: Store,
        audit: AuditLog,
        limiter: Limiter,
        authenticator: Authenticator,
    ) -> None:
        self.gateway = gateway
        self.settings = settings
        self.store = store
        self.audit = audit
        self.streamable = StreamableTransport(gateway)
        self.sse = SseTransport(gateway)
        self.modern = ModernTransport(gateway)
        self.admin = AdminRoutes(
            settings=settings, store=store, audit=audit, limiter=limiter, auth=authenticator, gateway=gateway
        )
        self.dashboard = DashboardRoutes(gateway=gateway, store=store, audit=audit)
        self.pipeline = build_pipeline(self._http, settings, Security(audit, limiter, authenticator))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.pipeline(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.gateway.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.dashboard.close()
                await self.gateway.close()
                await self.store.close()
                self.audit.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = Request(scope, receive, send)
        st = state(scope)  # the outermost stage marks "response_started" when the head goes out
        try:
            await self._route(req, scope["path"].strip("/").split("/"))
        except GatewayError as exc:
            if not st.get("response_started"):
                await send_error(send, exc, exc.request_id)
        except Exception:  # the top of a request: log it, answer 500 without internals
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not st.get("response_started"):
                await send_error(send, GatewayError("Internal error"))

    async def _route(self, req: Request, parts: list[str]) -> None:
        if parts == ["livez"]:
            await self._only(req, "GET")
            await send_bytes(req.send, 200, b"ok", TEXT)
        elif parts == ["health"]:
            await self._only(req, "GET")
            await send_json(req.send, 200, self.health())
        elif parts[0] in ("auth", "admin"):
            await self._account(req, parts)
        elif parts == [""]:
            await self._only(req, "GET")
            await self.dashboard.index(req)
        elif parts[0] == "static" and len(parts) == 2:
            await self._only(req, "GET")
            await self.dashboard.static(req, parts[1])
        elif parts[0] == "api":
            await self._api(req, parts)
        elif parts[0] == "mcp" and len(parts) in (2, 3):
            await self._mcp_routes(req, parts)
        else:
            raise ProtocolError("Not found", status=404)

    async def _mcp_routes(self, req: Request, parts: list[str]) -> None:
        if parts == ["mcp", "servers"]:
            await self._only(req, "GET")
            await send_json(req.send, 200, {"servers": [self.gateway.server_view(n) for n in self.gateway.specs]})
            return
        server = parts[1]
        self.gateway.spec(server)
        if len(parts) == 2:
            await self._mcp(req, server)
        elif parts[2] == "sse":
            await self._only(req, "GET")
            await self.sse.stream(req, server)
        elif parts[2] == "messages":
            await self._only(req, "POST")
            await self.sse.post(req, server)
        elif parts[2] in MANAGEMENT:
            await self._only(req, "POST")
            await self._manage(req, server, parts[2])
        else:
            raise ProtocolError("Not found", status=404)

    async def _account(self, req: Request, parts: list[str]) -> None:
        if parts == ["auth", "login"]:
            await self._only(req, "POST")
            await self.admin.login(req)
        elif parts == ["auth", "logout"]:
            await self._only(req, "POST")
            await self.admin.logout(req)
        elif parts == ["auth", "session"]:
            await self._only(req, "GET")
            await self.admin.session(req)
        elif parts == ["admin", "sessions"]:
            await self._only(req, "GET")
            await self.admin.list_sessions(req)
        elif len(parts) == 3 and parts[:2] == ["admin", "sessions"]:
            await self._only(req, "DELETE")
            await self.admin.revoke_session(req, parts[2])
        else:
            raise ProtocolError("Not found", status=404)

    async def _api(self, req: Request, parts: list[str]) -> None:
        if parts == ["api", "overview"]:
            await self._only(req, "GET")
            await self.dashboard.overview(req)
        elif parts == ["api", "audit"]:
            await self._only(req, "GET")
            await self.dashboard.audit_events(req)
        elif parts == ["api", "tokens"]:
            await self._only(req, "GET", "POST")
            await (self.dashboard.list_tokens(req) if req.method == "GET" else self.dashboard.create_token(req))
        elif len(parts) == 3 and parts[:2] == ["api", "tokens"]:
            await self._only(req, "DELETE")
            await self.dashboard.revoke_token(req, parts[2])
        else:
            await self.dashboard.not_found(req)

    async def _only(self, req: Request, *methods: str) -> None:
        if req.method not in methods:
            allowed = ", ".join(methods)
            body = {"error": "Method not allowed", "message": f"use {allowed}"}
            await send_json(req.send, 405, body, [(b"allow", allowed.encode())])
            raise _Answered("answered")

    async def _mcp(self, req: Request, server: str) -> None:
        version = req.header(b"mcp-protocol-version")
        # A session id means a legacy client, whatever version it claims; the legacy transport then refuses an
        # unknown version with 400. Without a session, any non-handshake version is the stateless era's to judge.
        modern = version in MODERN_VERSIONS or (is_modern_header(version) and b"mcp-session-id" not in req.headers)
        if req.method == "POST":
            body = await req.body(self.settings.max_body_bytes)
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
        st = state(req.scope)
        self.audit.record(
            f"admin.server.{action}",
            outcome="ok",
            server=server,
            principal=st.get("principal"),
            ip=st.get("client_ip"),
            request_id=st.get("request_id"),
        )
        if action == "start":
            handle.start()
        elif action == "stop":
            await handle.stop()
        else:
            await handle.restart()
        await send_json(req.send, 200, self.gateway.server_view(server))

    def health(self) -> dict[str, Any]:
        """Status, version and every server's state (never its command, args or env)."""
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
    store: Store | None = None,
    events: EventSink | None = None,
) -> BastionApp:
    """Build the gateway application (its lifespan starts and stops the children).

    Raises:
        ConfigError: a setting the security pipeline cannot use (bad CIDR, unknown store scheme ...).
    """
    admin_token = settings.auth_token.get_secret_value() if settings.auth_token else None
    secrets = [admin_token or "", settings.session_secret.get_secret_value() if settings.session_secret else ""]
    secrets += [value for spec in servers.values() for value in spec.env.values() if len(value) >= SECRET_MIN_CHARS]
    audit = AuditLog(
        settings.audit_log,
        max_bytes=settings.audit_max_bytes,
        backups=settings.audit_backups,
        secrets=secrets,
        refusals_per_ip=settings.audit_refusals_per_ip,
        refusal_window_s=settings.audit_refusal_window_s,
    )
    also = events or log_event

    def record(event: str, **fields: Any) -> None:
        audit.record(event, **fields)
        also(event, **fields)

    url = settings.store_url.get_secret_value() if settings.store_url else default_store_url(None)
    store = store or open_store(url)
    supervisor = supervisor or Supervisor(settings, base_env=child_base_env(), events=record)
    gateway = Gateway(settings, servers, supervisor)
    gateway.audit = audit
    limiter = Limiter(settings)
    authenticator = Authenticator(admin_token=admin_token, store=store)
    return BastionApp(
        gateway, settings=settings, store=store, audit=audit, limiter=limiter, authenticator=authenticator
    )
