"""create_app: the ASGI application, its routes and its lifespan, behind the security pipeline."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mcp_bastion import __version__
from mcp_bastion.access import Principal, RequestContext, context_of, may_see_server, redact_view
from mcp_bastion.admin import AdminRoutes
from mcp_bastion.audit import AuditLog
from mcp_bastion.authserver import AuthServer, build_authserver
from mcp_bastion.authserver.routes import AuthServerRoutes
from mcp_bastion.cluster.node import Cluster
from mcp_bastion.cluster.settings import cluster_settings, secret_values
from mcp_bastion.config import ServerSpec, Settings, child_base_env, default_store_url
from mcp_bastion.dashboard.instances import Instances, own_url
from mcp_bastion.dashboard.routes import DashboardRoutes
from mcp_bastion.errors import GatewayError, ProtocolError, ShuttingDown
from mcp_bastion.middleware import Security, build_pipeline
from mcp_bastion.middleware.auth import Authenticator
from mcp_bastion.middleware.headers import BASE_HEADERS
from mcp_bastion.middleware.reply import state
from mcp_bastion.oauth import METADATA_MAX_AGE_S, ResourceServer, oauth_config, protected_resource_metadata
from mcp_bastion.protocol import MODERN_VERSIONS, is_modern_header
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.relay import Gateway
from mcp_bastion.relay.sessions import SHUTDOWN_RETRY_AFTER_S
from mcp_bastion.revocation import RevocationWatcher
from mcp_bastion.sealing import Sealer
from mcp_bastion.security import ADMIN_SCOPE
from mcp_bastion.store import Remote, Store, breaker_of, open_store
from mcp_bastion.supervisor import ServerState, Supervisor
from mcp_bastion.supervisor.supervisor import EventSink
from mcp_bastion.transports.http import Request, end_stream, send_bytes, send_error, send_json
from mcp_bastion.transports.modern import ModernTransport
from mcp_bastion.transports.sse import SseTransport
from mcp_bastion.transports.streamable import StreamableTransport
from mcp_bastion.types import Receive, Scope, Send

log = logging.getLogger("mcp_bastion.app")

MODERN_MARKER = b'"io.modelcontextprotocol/protocolVersion"'
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
Handler = Callable[[Request, RequestContext], Awaitable[None]]
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
        cluster: Cluster | None = None,
        sealer: Sealer | None = None,
        instance_id: str | None = None,
        authserver: AuthServer | None = None,
    ) -> None:
        self.gateway = gateway
        self.cluster = cluster  # Issue 12: this instance's membership (None without REDIS_URL)
        self.settings = settings
        self.store = store
        self.limiter = limiter  # /health reports the shared counters' state
        self.audit = audit
        self.streamable = StreamableTransport(gateway)
        self.sse = SseTransport(gateway)
        # Issue 11 item 5: 2026-07-28 request states are sealed by `sealer` and name this instance
        self.modern = ModernTransport(gateway, sealer=sealer, instance_id=instance_id or settings.instance_id)
        self.admin = AdminRoutes(
            settings=settings, store=store, audit=audit, limiter=limiter, auth=authenticator, gateway=gateway
        )
        self.revocation = RevocationWatcher(
            gateway=gateway, store=store, authenticator=authenticator, audit=audit, every_s=settings.revocation_check_s
        )
        self.instances = Instances(  # Issue 12 item 6: every instance in /health (admins) and the dashboard
            instance_id=settings.instance_id,
            advertise_url=cluster.config.advertise_url if cluster is not None else own_url(settings),
            load=gateway.load,
            draining=lambda: gateway.closing,
            cluster=cluster,
        )
        self.dashboard = DashboardRoutes(
            gateway=gateway, store=store, audit=audit, on_revoked=self.revocation.revoked, instances=self.instances
        )
        self.oauth = authenticator.oauth  # Issue 13: the resource server (None unless OAUTH_ISSUER is set)
        self.authserver = self._authserver_routes(authserver, authenticator)  # Issue 14 (None unless builtin)
        if cluster is not None:  # Issue 12 item 4: revocations reach every instance at once
            self.revocation.channel = self.admin.revocations = cluster.revocations
        self.handlers = self._handlers()
        # Issue 12: in cluster mode a request for a session held elsewhere is forwarded there, after the pipeline.
        router = cluster.route(self._http, lambda: gateway.closing) if cluster is not None else self._http
        hop = cluster.gate if cluster is not None else None
        self.pipeline = build_pipeline(router, settings, Security(audit, limiter, authenticator, gateway, hop))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.pipeline(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._refuse_scope(scope, receive, send)

    async def _refuse_scope(self, scope: Scope, receive: Receive, send: Send) -> None:
        """WebSocket and unknown scope types: refused (403 with the security headers where the server allows it)."""
        client = scope.get("client")
        self.audit.record(
            "http.refused",
            outcome="denied",
            reason=f"{str(scope.get('type'))[:32]} refused",
            ip=client[0] if client else None,
            path=str(scope.get("path", ""))[:200],
        )
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            body = b'{"error":"Forbidden","message":"WebSocket is not served here"}'
            headers = [(b"content-type", b"application/json"), *BASE_HEADERS]
            await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    def begin_shutdown(self) -> None:
        """The process was told to stop (the CLI's server calls this on SIGTERM, before uvicorn stops accepting).

        Issue 9 item 6: new requests get 503 + Retry-After, SSE / Streamable GET / listen streams end now with a
        final event, calls in flight have SHUTDOWN_GRACE_S to finish and are then answered "shutting down". The
        children stop in the lifespan's shutdown, once uvicorn has seen every connection close. Idempotent.
        """
        self.gateway.begin_shutdown(self.settings.shutdown_grace_s)
        if self.cluster is not None:
            self.cluster.drain()  # Issue 12 item 3: the other instances see it leaving

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.gateway.start()
                self.revocation.start()
                if self.cluster is not None:
                    self.cluster.start(self.revocation.heard)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.dashboard.close()
                if self.cluster is not None:
                    await self.cluster.close()
                await self.revocation.close()
                if self.oauth is not None:
                    await self.oauth.close()
                await self.modern.close()  # Issue 11 item 5: calls parked for input end with their children
                await self.gateway.close()
                await self.store.close()
                await self.limiter.close()
                self.audit.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = Request(scope, receive, send)
        st = state(scope)  # the outermost stage marks "response_started" when the head goes out
        ctx = context_of(scope)
        try:
            if req.method not in ctx.route.methods:
                await self._only(req, *sorted(ctx.route.methods))
            await self.handlers[ctx.route.name](req, ctx)
        except GatewayError as exc:
            if not st.get("response_started"):
                await send_error(send, exc, exc.request_id)
        except asyncio.CancelledError:
            if not self.gateway.closing:
                raise
            await self._cut_short(send, st)
        except Exception:  # the top of a request: log it, answer 500 without internals
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not st.get("response_started"):
                await send_error(send, GatewayError("Internal error"))

    async def _cut_short(self, send: Send, st: dict[str, Any]) -> None:
        """uvicorn's shutdown grace ended with this request unfinished: a JSON-RPC "shutting down" error (or the end
        of a stream already under way) instead of uvicorn's plain-text 500 and a traceback (Issue 9 item 6)."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # answered: the cancellation is handled here, not by uvicorn
        if st.get("response_started"):
            await end_stream(send)
        else:
            await send_error(send, ShuttingDown(SHUTDOWN_RETRY_AFTER_S))

    def _handlers(self) -> dict[str, Handler]:
        """Route name (access.routes.ROUTES) to handler: the route stage already matched path and method."""
        dashboard, admin = self.dashboard, self.admin
        return {
            "livez": lambda req, ctx: send_bytes(req.send, 200, b"ok", TEXT),
            "health": self._health,
            "dashboard": lambda req, ctx: dashboard.index(req),
            "static": lambda req, ctx: dashboard.static(req, ctx.params["file"]),
            "discovery": self._discovery,
            "discovery.root": self._discovery,
            "oauth.resource": self._protected_resource,
            "oauth.resource.server": self._protected_resource,
            "auth.login": lambda req, ctx: admin.login(req),
            "auth.logout": lambda req, ctx: admin.logout(req),
            "auth.session": lambda req, ctx: admin.session(req),
            "admin.sessions": lambda req, ctx: admin.list_sessions(req),
            "admin.session": lambda req, ctx: admin.revoke_session(req, ctx.params["id"]),
            "api.overview": lambda req, ctx: dashboard.overview(req),
            "api.audit": lambda req, ctx: dashboard.audit_events(req),
            "api.tokens": lambda req, ctx: (
                dashboard.list_tokens(req) if req.method == "GET" else dashboard.create_token(req)
            ),
            "api.token": lambda req, ctx: dashboard.revoke_token(req, ctx.params["name"]),
            "mcp.servers": self._servers,
            "mcp.manage": lambda req, ctx: self._manage(req, ctx),
            "mcp": lambda req, ctx: self._mcp(req, self._server(ctx)),
            "mcp.sse": lambda req, ctx: self.sse.stream(req, self._server(ctx)),
            "mcp.messages": lambda req, ctx: self.sse.post(req, self._server(ctx)),
            **self._authserver_handlers(),
        }

    def _authserver_routes(self, parts: AuthServer | None, authenticator: Authenticator) -> AuthServerRoutes | None:
        """The built-in authorization server's endpoints (Issue 14), or None when it is off."""
        if parts is None:
            return None
        return AuthServerRoutes(
            issuer=parts.issuer,
            keys=parts.keys,
            clients=parts.clients,
            authorizations=parts.authorizations,
            exchange=parts.exchange,
            admin=self.admin,
            authenticator=authenticator,
            limiter=self.limiter,
            audit=self.audit,
            scopes=parts.scopes,
            on_revoked=self.revocation.revoked,  # a revoked grant ends its sessions on every instance
        )

    def _authserver_handlers(self) -> dict[str, Handler]:
        """Routes of the built-in authorization server (Issue 14): 404 like any discovery probe when it is off."""
        names = ["oauth.server", "oauth.jwks", "oauth.register", "oauth.authorize", "oauth.consent", "oauth.login"]
        names += ["oauth.token", "oauth.revoke", "api.grants", "api.grant"]
        routes = self.authserver
        if routes is None:
            return dict.fromkeys(names, self._discovery)
        return {
            "oauth.server": lambda req, ctx: routes.metadata(req),
            "oauth.jwks": lambda req, ctx: routes.jwks(req),
            "oauth.register": lambda req, ctx: routes.register(req),
            "oauth.authorize": lambda req, ctx: routes.authorize(req),
            "oauth.consent": lambda req, ctx: routes.consent_page(req) if req.method == "GET" else routes.consent(req),
            "oauth.login": lambda req, ctx: routes.login(req),
            "oauth.token": lambda req, ctx: routes.token(req),
            "oauth.revoke": lambda req, ctx: routes.revoke(req),
            "api.grants": lambda req, ctx: routes.list_grants(req),
            "api.grant": lambda req, ctx: routes.revoke_grant(req, ctx.params["id"]),
        }

    def _server(self, ctx: RequestContext) -> str:
        """The `{server}` of the route, checked to be configured (404 otherwise)."""
        server = ctx.params["server"]
        self.gateway.spec(server)
        return server

    async def _servers(self, req: Request, ctx: RequestContext) -> None:
        views = [self.server_view(name, ctx.principal) for name in self.visible_servers(ctx.principal)]
        await send_json(req.send, 200, {"servers": views})

    async def _discovery(self, req: Request, ctx: RequestContext) -> None:
        """OAuth discovery documents: public, answered 404 until the gateway serves OAuth metadata."""
        body = {"error": "Not found", "message": "This gateway does not serve OAuth metadata; use a bearer token"}
        await send_json(req.send, 404, body)

    async def _protected_resource(self, req: Request, ctx: RequestContext) -> None:
        """Protected Resource Metadata (RFC 9728) of the gateway or of one configured server; 404 without OAuth."""
        server = ctx.params.get("server")
        if self.oauth is None or (server is not None and server not in self.gateway.specs):
            await self._discovery(req, ctx)
            return
        body = protected_resource_metadata(self.oauth.config, server)
        await send_json(req.send, 200, body, [(b"cache-control", f"public, max-age={METADATA_MAX_AGE_S}".encode())])

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

    async def _manage(self, req: Request, ctx: RequestContext) -> None:
        server, action = self._server(ctx), ctx.params["action"]
        spec = self.gateway.spec(server)
        handle = self.gateway.handles[server]
        if spec.isolation != "shared":
            raise ProtocolError(f"server {server!r} runs one child per session; there is nothing to {action}")
        self.audit.record(f"admin.server.{action}", outcome="ok", server=server, **ctx.who())
        if action == "start":
            handle.start()
        elif action == "stop":
            await handle.stop()
        else:
            await handle.restart()
        await send_json(req.send, 200, self.server_view(server, ctx.principal))

    def visible_servers(self, principal: Principal | None) -> list[str]:
        """The servers a principal may know exist (all of them for admin)."""
        if principal is None:
            return []
        return [name for name in self.gateway.specs if may_see_server(principal.scopes, name)]

    def server_view(self, name: str, principal: Principal | None) -> dict[str, Any]:
        """A server's state as this principal may see it: pid and last error for admin only."""
        return redact_view(self.gateway.server_view(name), principal.scopes if principal else ())

    async def _health(self, req: Request, ctx: RequestContext) -> None:
        """GET /health: `health`, and for an admin every instance of the cluster (Issue 12 item 6)."""
        body = self.health(ctx.principal)
        if ctx.principal is not None and ADMIN_SCOPE in ctx.principal.scopes:
            body.update(await self.instances.document())
        await send_json(req.send, 200, body)

    def health(self, principal: Principal | None) -> dict[str, Any]:
        """Status, version and the state of each server the caller may see (never command, args or env)."""
        servers = {name: self.server_view(name, principal) for name in self.visible_servers(principal)}
        shared = [v for v in servers.values() if v["isolation"] == "shared"]
        dependencies = self.dependencies()
        degraded = any(v["state"] != ServerState.RUNNING for v in shared) or "down" in dependencies.values()
        status = "degraded" if degraded else "ok"
        found = {"status": status, "version": __version__, "dependencies": dependencies, "servers": servers}
        admin = principal is not None and ADMIN_SCOPE in principal.scopes
        if self.cluster is not None and admin:  # Issue 12: which instance answered, how much it forwarded and served
            found["cluster"] = {"instance": self.cluster.id, **self.cluster.counters()}
        return found

    def dependencies(self) -> dict[str, str]:
        """The store's and the rate limiter's state: "down" while a circuit breaker is open (Issue 9 item 1)."""
        store = breaker_of(self.store)
        found = {"store": store.state if store is not None else "ok", "ratelimit": self.limiter.state}
        if self.cluster is not None:
            found["cluster"] = self.cluster.breaker.state  # Issue 12: the heartbeat's and the forwarders' Redis
        return found


class _Answered(GatewayError):
    """Internal: the response was already sent (e.g. 405); unwind quietly."""


def create_app(
    settings: Settings,
    servers: Mapping[str, ServerSpec],
    *,
    sealer: Sealer | None = None,
    instance_id: str | None = None,
    supervisor: Supervisor | None = None,
    store: Store | None = None,
    events: EventSink | None = None,
    oauth: ResourceServer | None = None,
) -> BastionApp:
    """Build the gateway application (its lifespan starts and stops the children).

    Raises:
        ConfigError: a setting the security pipeline cannot use (bad CIDR, unknown store scheme ...).
    """
    admin_token = settings.auth_token.get_secret_value() if settings.auth_token else None
    secrets = [admin_token or "", settings.session_secret.get_secret_value() if settings.session_secret else ""]
    secrets += [settings.oauth_client_secret.get_secret_value()] if settings.oauth_client_secret else []
    secrets += [value for spec in servers.values() for value in spec.env.values() if len(value) >= SECRET_MIN_CHARS]
    secrets += secret_values(settings)  # Issue 12: CLUSTER_SECRET, the Redis passwords
    audit = AuditLog.from_settings(settings, secrets)
    also = events or log_event

    def record(event: str, **fields: Any) -> None:
        audit.record(event, **fields)
        also(event, **fields)

    url = settings.store_url.get_secret_value() if settings.store_url else default_store_url(None)
    store = store or open_store(url, Remote(settings.redis_timeout_s, settings.redis_breaker_open_s))
    supervisor = supervisor or Supervisor(settings, base_env=child_base_env(), events=record)
    gateway = Gateway(settings, servers, supervisor)
    gateway.audit = audit
    limiter = Limiter(settings)
    gateway.limiter = limiter
    config = oauth_config(settings)
    oauth = oauth or (ResourceServer(config) if config is not None else None)
    authserver = build_authserver(settings, servers, store=store, audit=audit, gateway=gateway)  # Issue 14
    issued = authserver.grants if authserver is not None else None
    authenticator = Authenticator(admin_token=admin_token, store=store, oauth=oauth, issued=issued)
    cluster = _cluster(settings, gateway)
    return BastionApp(
        gateway,
        settings=settings,
        store=store,
        audit=audit,
        limiter=limiter,
        authenticator=authenticator,
        cluster=cluster,
        sealer=sealer or (cluster.sealer if cluster is not None else None),  # Issue 12: one key for the cluster
        instance_id=instance_id,
        authserver=authserver,
    )


def _cluster(settings: Settings, gateway: Gateway) -> Cluster | None:
    """This instance's cluster membership when REDIS_URL is set (Issue 12); ConfigError when its settings are not."""
    config = cluster_settings(settings)
    if config is None:
        return None

    # A forwarded answer may stay silent as long as a call may run or a stream between keepalives.
    timeouts = [settings.request_timeout_s, settings.sse_keepalive_s]
    timeouts += [spec.timeout_seconds for spec in gateway.specs.values() if spec.timeout_seconds is not None]
    cluster = Cluster(
        config,
        timeout_s=settings.redis_timeout_s,
        open_s=settings.redis_breaker_open_s,
        read_s=max(timeouts),
        max_body=settings.max_body_bytes,
        heartbeat_s=settings.cluster_heartbeat_s,
        load=gateway.load,
    )
    gateway.mint_session_id = cluster.session_ids.mint
    return cluster
