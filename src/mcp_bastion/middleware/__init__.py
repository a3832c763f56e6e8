"""The security pipeline: pure ASGI stages in front of the router. The order lives in `build_pipeline` only."""

import socket
from dataclasses import dataclass

from starlette.middleware.cors import CORSMiddleware

from mcp_bastion.access import RouteTable
from mcp_bastion.audit import AuditLog
from mcp_bastion.config import Settings, split_list
from mcp_bastion.errors import ConfigError
from mcp_bastion.middleware.auth import AuthenticationMiddleware, Authenticator, AuthorizationMiddleware
from mcp_bastion.middleware.body_limit import BodyLimitMiddleware
from mcp_bastion.middleware.headers import SecurityHeadersMiddleware
from mcp_bastion.middleware.hop import HopGate, HopMiddleware
from mcp_bastion.middleware.ip_allowlist import IpAllowlistMiddleware, parse_networks
from mcp_bastion.middleware.origin import HostOriginMiddleware
from mcp_bastion.middleware.rate_limit import RateLimitMiddleware
from mcp_bastion.middleware.route_match import RouteMiddleware
from mcp_bastion.middleware.shutdown import ShutdownMiddleware
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.relay import Gateway
from mcp_bastion.store import breaker_of
from mcp_bastion.types import ASGIApp

MCP_HEADERS = [
    "Authorization",
    "Content-Type",
    "Accept",
    "Mcp-Session-Id",
    "MCP-Protocol-Version",
    "Mcp-Method",
    "Mcp-Name",
    "Last-Event-ID",
    "X-CSRF-Token",
]
EXPOSED = ["Mcp-Session-Id", "WWW-Authenticate", "Retry-After", "X-Request-Id", "RateLimit", "RateLimit-Policy"]


@dataclass(frozen=True)
class Security:
    """What the pipeline needs besides Settings, built once at start-up."""

    audit: AuditLog
    limiter: Limiter
    authenticator: Authenticator
    gateway: Gateway  # whether the gateway is shutting down
    hop: HopGate | None = None  # cluster mode (Issue 12): admits and verifies requests other instances forward here


def allowed_hosts(settings: Settings) -> set[str]:
    """Host names the gateway answers to: the bind address, loopback names when local, plus ALLOWED_HOSTS."""
    hosts = set(split_list(settings.allowed_hosts))
    bind = settings.host
    hosts.add(f"[{bind}]" if ":" in bind else bind)
    if bind in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::") or bind.startswith("127."):
        hosts.update({"127.0.0.1", "localhost", "[::1]"})
    if bind in ("0.0.0.0", "::"):
        name = socket.gethostname()
        hosts.add(name.lower())
        try:
            hosts.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    return hosts


def build_pipeline(app: ASGIApp, settings: Settings, security: Security) -> ASGIApp:
    """Wrap the router in every stage; read bottom-up, the last wrapper is the first to see a request."""
    audit, limiter = security.audit, security.limiter
    router = app
    # An outage of Redis (store or shared counters) is audited once as dependency.down, and its end as dependency.up.
    for breaker in (limiter.breaker, breaker_of(security.authenticator.store)):
        if breaker is not None:
            breaker.watch(audit.record)
    origins = split_list(settings.allowed_origins)
    if "*" in origins or "null" in origins:
        raise ConfigError("ALLOWED_ORIGINS may not contain * or null: list the exact origins (credentials are sent)")
    # 8. The one authorizer decides the route (admin routes, the {server}); MCP methods where the body is parsed.
    app = AuthorizationMiddleware(app, audit=audit, oauth=security.authenticator.oauth)
    # 7. Per-principal limit: after auth, so it keys on the principal's id (the dashboard's cookie reads exempt).
    app = RateLimitMiddleware(app, limiter=limiter, per="principal", audit=audit)
    # 6. Who is calling: bearer token on every route, session cookie on management routes; fails closed; a refusal
    #    counts against its address.
    app = AuthenticationMiddleware(
        app, authenticator=security.authenticator, limiter=limiter, audit=audit, disabled=settings.insecure_no_auth
    )
    # 5. Per-IP limit before auth: public routes count; an address over its limit (refusals count, stage 6) is cut
    #    here without touching the store, unless its credential is known good from it. Authenticated requests
    #    never count per address (Issue 10 item 1).
    app = RateLimitMiddleware(app, limiter=limiter, per="ip", audit=audit)
    # 4. Oversized bodies refused before anything reads them.
    app = BodyLimitMiddleware(app, max_bytes=settings.max_body_bytes)
    # 3b. CORS answers allowed preflights before auth (browsers send no credentials on preflight).
    if origins:
        app = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_credentials=True,
            allow_headers=MCP_HEADERS,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            expose_headers=EXPOSED,
            max_age=600,
        )
    # 3a. DNS rebinding: foreign Host 421, foreign Origin 403, on every route including preflights.
    app = HostOriginMiddleware(app, hosts=allowed_hosts(settings), origins=set(origins), audit=audit)
    # 2b. Shutting down: a new request gets 503 + Retry-After before auth, the store or a child does any work for it.
    app = ShutdownMiddleware(app, gateway=security.gateway, audit=audit)
    # 2. Address allowlist: cheapest refusal, needs nothing but the socket (and trusted proxies' headers).
    app = IpAllowlistMiddleware(
        app,
        allowed=parse_networks(split_list(settings.allowed_ips), "ALLOWED_IPS"),
        trusted=parse_networks(split_list(settings.trusted_proxies), "TRUSTED_PROXIES"),
        audit=audit,
        forwarded_header=settings.forwarded_header,
    )
    # 1c. Cluster mode: a request another instance forwarded (signed hop) already passed every stage there; it goes
    #     to the router directly, a hop that does not verify is refused. Needs only the route. A hop header from an
    #     address that is no instance's is stripped: that request meets every stage.
    if security.hop is not None:
        app = HopMiddleware(app, direct=router, gate=security.hop, max_body=settings.max_body_bytes, audit=audit)
    # 1b. The one route match: canonical path or 400, declared route or 404, declared method or 405; the typed
    #     request context is placed here and every later stage reads the route and server from it.
    app = RouteMiddleware(app, table=RouteTable(), audit=audit)
    # 1a. Security headers and the request id on every response, rejections and 500s included.
    return SecurityHeadersMiddleware(app, tls=settings.tls)
