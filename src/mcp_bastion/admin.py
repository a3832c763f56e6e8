"""Login sessions and admin routes: /auth/login, /auth/logout, /auth/session, /admin/sessions[/{id}].

A login turns a token into an HttpOnly SameSite=Strict cookie whose value is stored only as a hash, plus a
readable CSRF cookie that state-changing requests must echo in X-CSRF-Token (double submit).
"""

import contextlib
import secrets
import time
from typing import Any

import orjson

from mcp_bastion.access import Principal, RequestContext, context_of
from mcp_bastion.audit import AuditLog
from mcp_bastion.cluster.revocations import MCP_SESSION, SWEEP, RevocationChannel
from mcp_bastion.config import Settings
from mcp_bastion.errors import DependencyUnavailable, ProtocolError
from mcp_bastion.middleware.auth import CSRF_COOKIE, SESSION_COOKIE, TOKEN_KEY, Authenticator, cookie_value
from mcp_bastion.middleware.reply import refuse_unavailable, reject
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.relay import Gateway
from mcp_bastion.security import new_session_id, token_hash
from mcp_bastion.store import LoginSession, Store, StoreError, StoreUnavailable
from mcp_bastion.transports.http import Request, send_json

LOGIN_BODY_MAX_BYTES = 4096  # {"token": "..."} and nothing more
PUBLIC_ID_CHARS = 16  # sessions are named by a prefix of their hash, never by the cookie value


class AdminRoutes:
    """The handlers; the security pipeline has already authenticated everything but /auth/login."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        audit: AuditLog,
        limiter: Limiter,
        auth: Authenticator,
        gateway: Gateway,
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.limiter = limiter
        self.auth = auth
        self.gateway = gateway
        self.revocations: RevocationChannel | None = None  # cluster mode (Issue 12 item 4): tell every instance

    def _cookie(self, name: str, value: str, max_age: int, *, http_only: bool) -> tuple[bytes, bytes]:
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "SameSite=Strict"]
        if http_only:
            parts.append("HttpOnly")
        if self.settings.tls:
            parts.append("Secure")
        return b"set-cookie", "; ".join(parts).encode()

    async def login(self, req: Request) -> None:
        """POST /auth/login {"token": ...} → session cookie + csrf_token."""
        ctx = _ctx(req)
        ip = ctx.client_ip
        token = _token_from(await req.body(LOGIN_BODY_MAX_BYTES))
        locked = await self.limiter.locked_out(ip)
        # Issue 9 item 10: a locked-out address may still log in with a token that succeeded from it before.
        if locked is not None and not (token and await self.limiter.known.known(ip, token_hash(token))):
            self.audit.record(
                "ratelimit.exceeded",
                outcome="denied",
                reason="too many failed logins",
                ip=ip,
                request_id=ctx.request_id,
            )
            await reject(
                req.send, 429, "Too many requests", "Too many failed attempts; try again later", locked.headers()
            )
            return
        try:
            principal, reason = await self.auth.by_token(token) if token else (None, "missing token")
        except StoreError as exc:
            self.audit.record(
                "auth.failure",
                outcome="denied",
                reason="store unavailable",
                ip=ip,
                path="/auth/login",
                request_id=ctx.request_id,
            )
            retry_after_s = exc.retry_after_s if isinstance(exc, StoreUnavailable) else 1
            message = "Authentication is temporarily unavailable"
            await refuse_unavailable(req.scope, req.send, "store", retry_after_s, message)
            return
        if principal is None:
            await self.limiter.failed_auth(ip)
            self.audit.record(
                "auth.failure",
                outcome="denied",
                reason=reason,
                ip=ip,
                path="/auth/login",
                request_id=ctx.request_id,
            )
            await reject(req.send, 401, "Unauthorized", "Invalid or expired token")
            return
        if principal.credential is not None:  # best effort: an outage only loses the lockout exception (item 10)
            with contextlib.suppress(DependencyUnavailable):
                await self.limiter.known.remember(ip, principal.credential)
        session, csrf, cookies = await self.start_session(principal, ctx)
        body = {
            "principal": principal.name,
            "scopes": list(principal.scopes),
            "expires": session.expires,
            "csrf_token": csrf,
        }
        await send_json(req.send, 200, body, cookies)

    async def start_session(
        self, principal: Principal, ctx: RequestContext
    ) -> tuple[LoginSession, str, list[tuple[bytes, bytes]]]:
        """Open a login session for an authenticated principal (also the OAuth login form's): the session, its CSRF
        token and the Set-Cookie headers."""
        session_id, csrf = new_session_id(), secrets.token_urlsafe(32)
        now = time.time()
        # A session never outlives its token; it stays bound to the token's hash (re-checked on every request).
        expires = min(now + self.settings.session_ttl_s, principal.expires or float("inf"))
        ttl = max(int(expires - now), 1)
        extra = {TOKEN_KEY: principal.credential or ""}
        ip = ctx.client_ip
        session = LoginSession(
            token_hash(session_id), principal.name, principal.scopes, now, expires, ip, token_hash(csrf), extra
        )
        await self.store.create_session(session)
        self.audit.record(
            "session.login",
            outcome="ok",
            principal=principal.name,
            principal_id=principal.id,
            ip=ip,
            session=session.id_hash[:PUBLIC_ID_CHARS],
            request_id=ctx.request_id,
        )
        cookies = [
            self._cookie(SESSION_COOKIE, session_id, ttl, http_only=True),
            self._cookie(CSRF_COOKIE, csrf, ttl, http_only=False),
        ]
        return session, csrf, cookies

    async def logout(self, req: Request) -> None:
        """POST /auth/logout: delete the session server-side and clear the cookies."""
        value = cookie_value(req.raw_headers, SESSION_COOKIE)
        ended = bool(value) and await self.store.delete_session(token_hash(value or ""))
        if ended:
            self.audit.record("session.logout", outcome="ok", **_ctx(req).who())
        await send_json(
            req.send,
            200,
            {"ok": True, "ended": ended},
            [self._cookie(SESSION_COOKIE, "", 0, http_only=True), self._cookie(CSRF_COOKIE, "", 0, http_only=False)],
        )

    async def session(self, req: Request) -> None:
        """GET /auth/session: who the caller is."""
        principal = _ctx(req).principal
        if principal is None:  # unreachable behind the pipeline (the route needs a principal); fail closed
            raise ProtocolError("no principal", status=401)
        login = await self.store.session_by_hash(principal.login) if principal.login else None
        body: dict[str, Any] = {"principal": principal.name, "scopes": list(principal.scopes), "via": principal.via}
        if login is not None:
            body.update(created=login.created, expires=login.expires, id=login.id_hash[:PUBLIC_ID_CHARS])
        await send_json(req.send, 200, body)

    async def list_sessions(self, req: Request) -> None:
        """GET /admin/sessions: login sessions and MCP client sessions."""
        now = time.time()
        logins = [
            {
                "id": s.id_hash[:PUBLIC_ID_CHARS],
                "kind": "login",
                "principal": s.principal,
                "client_ip": s.client_ip,
                "created": s.created,
                "expires": s.expires,
                "age_s": round(now - s.created, 1),
            }
            for s in await self.store.list_sessions()
            if s.expires > now
        ]
        mono = time.monotonic()
        clients = [
            {
                "id": token_hash(s.id)[:PUBLIC_ID_CHARS],
                "kind": "mcp",
                "server": s.server,
                "era": s.era,
                "principal": s.principal,
                "age_s": round(mono - s.created, 1),
                "client": (s.client_info or {}).get("name") if isinstance(s.client_info, dict) else None,
            }
            for s in self.gateway.sessions.values()
        ]
        await send_json(req.send, 200, {"sessions": logins + clients})

    async def revoke_session(self, req: Request, public_id: str) -> None:
        """DELETE /admin/sessions/{id}: end a login session or an MCP client session."""
        st = _ctx(req)
        for login in await self.store.list_sessions():
            if login.id_hash[:PUBLIC_ID_CHARS] == public_id:
                await self.store.delete_session(login.id_hash)
                self._revoked(st, public_id, "login", login.principal)
                if self.revocations is not None:
                    await self.revocations.publish(SWEEP)
                await send_json(req.send, 200, {"revoked": public_id, "kind": "login"})
                return
        for client in list(self.gateway.sessions.values()):
            if token_hash(client.id)[:PUBLIC_ID_CHARS] == public_id:
                await self.gateway.end_session(client)
                self._revoked(st, public_id, "mcp", client.principal)
                await send_json(req.send, 200, {"revoked": public_id, "kind": "mcp"})
                return
        if self.revocations is not None:  # an MCP session held by another instance: its owner ends it and audits
            await self.revocations.publish(MCP_SESSION, session=public_id)
            await send_json(req.send, 202, {"revoked": public_id, "kind": "mcp", "instances": "all"})
            return
        raise ProtocolError("no such session", status=404)

    def _revoked(self, ctx: RequestContext, public_id: str, kind: str, owner: str | None) -> None:
        self.audit.record("session.revoked", outcome="ok", session=public_id, kind=kind, owner=owner, **ctx.who())


def _ctx(req: Request) -> RequestContext:
    return context_of(req.scope)


def _token_from(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None
