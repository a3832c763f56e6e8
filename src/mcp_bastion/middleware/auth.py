"""Who is calling (bearer token or login-session cookie) and may they use this route.

"Who" and "may" are separate stages so the per-principal rate limit can sit between them. Fails closed: a store
error during authentication is a refusal.
"""

import hmac
import re
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie

from mcp_bastion.audit import AuditLog
from mcp_bastion.middleware.reply import ASGIApp, reject, state
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.security import ADMIN_SCOPE, bearer, may_use_server, token_hash
from mcp_bastion.store import LoginSession, Store, StoreError
from mcp_bastion.transports.http import Receive, Scope, Send

SESSION_COOKIE = "bastion_session"
CSRF_COOKIE = "csrf_token"
SUCCESS_AUDIT_EVERY_S = 60.0  # auth.success once a minute per principal and address: evidence without a flood
TOUCH_EVERY_S = 60.0  # last-used time written at most once a minute per token
PUBLIC_PATHS = frozenset({"/livez", "/auth/login", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
COOKIE_PATHS = re.compile(r"^/(health|metrics|auth/.*|admin/.*|api/.*|mcp/servers|mcp/[^/]+/(start|stop|restart))$")
ADMIN_PATHS = re.compile(r"^/(admin/.*|mcp/[^/]+/(start|stop|restart))$")
MCP_PATH = re.compile(r"^/mcp/(?P<server>[^/]+)(/sse|/messages/?)?$")
QUERY_TOKEN = re.compile(rb"(^|&)(access_token|token|auth|api_key|key)=", re.IGNORECASE)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = (b"www-authenticate", b'Bearer realm="mcp-bastion"')
CHALLENGE_INVALID = (b"www-authenticate", b'Bearer realm="mcp-bastion", error="invalid_token"')


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a token's name (never its value) and its scopes."""

    name: str
    scopes: tuple[str, ...]
    via: str  # "bearer" | "cookie" | "none"
    session: LoginSession | None = None


class Authenticator:
    """Turns a token or a cookie into a Principal; the admin token from .env first, then the store."""

    def __init__(self, *, admin_token: str | None, store: Store) -> None:
        self.admin_hash = token_hash(admin_token) if admin_token else None
        self.store = store
        self._touched: dict[str, float] = {}
        self._admin_revoked = False  # sticky: once `lockdown` revoked the .env token, it stays refused

    async def by_token(self, token: str) -> tuple[Principal | None, str]:
        """The principal of a bearer token, or None and the reason.

        Raises:
            StoreError: the store could not answer (the caller fails closed).
        """
        digest = token_hash(token)  # one hash per request: compared to the admin's, then looked up
        if self.admin_hash is not None and hmac.compare_digest(digest, self.admin_hash):
            if await self._admin_token_revoked(digest):
                return None, "revoked token"
            return Principal("admin", (ADMIN_SCOPE,), "bearer"), "ok"
        record = await self.store.token_by_hash(digest)
        if record is None:
            return None, "invalid token"
        now = time.time()
        if record.expires is not None and record.expires <= now:
            return None, "expired token"
        if now - self._touched.get(record.name, 0.0) > TOUCH_EVERY_S:
            self._touched[record.name] = now
            await self.store.touch_token(record.name, now)
        return Principal(record.name, record.scopes, "bearer"), "ok"

    async def _admin_token_revoked(self, digest: str) -> bool:
        """Whether `mcp-bastion lockdown` revoked the .env admin token (one store lookup, admin-token requests only).

        The .env token is the break-glass credential: if the store cannot answer it is still accepted, as before
        there were revocations, unless this process has already seen it revoked (that answer is kept for good).
        """
        if self._admin_revoked:
            return True
        # A store that cannot answer fails closed like every other authentication step (the caller answers 503).
        self._admin_revoked = await self.store.is_revoked(digest)
        return self._admin_revoked

    async def by_cookie(self, value: str) -> tuple[Principal | None, str]:
        """The principal of a login-session cookie, or None and the reason."""
        session = await self.store.session_by_hash(token_hash(value))
        if session is None:
            return None, "unknown session"
        if session.expires <= time.time():
            await self.store.delete_session(session.id_hash)
            return None, "expired session"
        return Principal(session.principal, session.scopes, "cookie", session), "ok"


def cookie_value(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """One cookie's value from the Cookie headers."""
    for key, value in headers:
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: S112 - a malformed cookie header is simply no cookie
                continue
            if name in jar:
                return jar[name].value
    return None


class AuthenticationMiddleware:
    """401 unless a valid bearer token (every route) or session cookie (management routes) is presented."""

    def __init__(
        self, app: ASGIApp, *, authenticator: Authenticator, limiter: Limiter, audit: AuditLog, disabled: bool
    ) -> None:
        self.app = app
        self.auth = authenticator
        self.limiter = limiter
        self.audit = audit
        self.disabled = disabled
        self._success_seen: dict[tuple[str, str], float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        st = state(scope)
        if self.disabled:
            st.update(principal="anonymous", scopes=(ADMIN_SCOPE,), auth="none")
            await self.app(scope, receive, send)
            return
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        ip = st.get("client_ip", "unknown")
        locked = await self.limiter.locked_out(ip)
        if locked is not None:
            self._record(st, scope, "ratelimit.exceeded", "too many failed authentications")
            await reject(
                send,
                429,
                "Too many requests",
                "Too many failed authentication attempts; try again later",
                locked.headers(),
            )
            return
        try:
            principal, reason, presented = await self._identify(scope)
        except StoreError:
            self._record(st, scope, "auth.failure", "store unavailable")
            await reject(send, 503, "Service unavailable", "Authentication is temporarily unavailable")
            return
        if principal is None:
            await self.limiter.failed_auth(ip)
            self._record(st, scope, "session.expired" if reason == "expired session" else "auth.failure", reason)
            await reject(
                send, 401, "Unauthorized", _public_reason(reason), [CHALLENGE_INVALID if presented else CHALLENGE]
            )
            return
        if principal.via == "cookie" and scope["method"] not in SAFE_METHODS and not self._csrf_ok(scope, principal):
            self._record(st, scope, "auth.failure", "missing or wrong CSRF token", principal=principal.name)
            await reject(send, 403, "Forbidden", "Missing or invalid X-CSRF-Token header")
            return
        st.update(principal=principal.name, scopes=principal.scopes, auth=principal.via, login=principal.session)
        self._success(st, scope, principal)
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope) -> tuple[Principal | None, str, bool]:
        if QUERY_TOKEN.search(scope.get("query_string", b"")):
            return None, "token in query string refused", True
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(values) > 1:
            return None, "more than one Authorization header", True
        if values:
            token = bearer(values[0])
            if token is None:
                return None, "malformed Authorization header", True
            principal, reason = await self.auth.by_token(token)
            return principal, reason, True
        cookie = cookie_value(scope["headers"], SESSION_COOKIE)
        if cookie is not None and COOKIE_PATHS.match(scope["path"]):
            principal, reason = await self.auth.by_cookie(cookie)
            return principal, reason, True
        return None, "missing credentials", False

    @staticmethod
    def _csrf_ok(scope: Scope, principal: Principal) -> bool:
        sent = dict(scope["headers"]).get(b"x-csrf-token")
        if sent is None or principal.session is None or not principal.session.csrf_hash:
            return False
        return hmac.compare_digest(token_hash(sent.decode("latin-1")), principal.session.csrf_hash)

    def _success(self, st: dict[str, object], scope: Scope, principal: Principal) -> None:
        key = (principal.name, str(st.get("client_ip")))
        now = time.monotonic()
        if now - self._success_seen.get(key, -SUCCESS_AUDIT_EVERY_S) >= SUCCESS_AUDIT_EVERY_S:
            self._success_seen[key] = now
            self._record(st, scope, "auth.success", principal.via, principal=principal.name, outcome="ok")

    def _record(self, st: dict[str, object], scope: Scope, event: str, reason: str, **extra: object) -> None:
        fields: dict[str, object] = {
            "outcome": "denied",
            "reason": reason,
            "request_id": st.get("request_id"),
            "ip": st.get("client_ip"),
            "method": scope.get("method"),
            "path": scope.get("path"),
        }
        fields.update(extra)
        self.audit.record(event, **fields)


def _public_reason(reason: str) -> str:
    if reason == "missing credentials":
        return "Authentication required: send Authorization: Bearer <token>"
    if reason == "token in query string refused":
        return "Tokens in the URL are refused; send Authorization: Bearer <token>"
    return "Invalid or expired credentials"


class AuthorizationMiddleware:
    """403 when the principal's scopes do not cover the route (admin routes, servers)."""

    def __init__(self, app: ASGIApp, *, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = state(scope)
        scopes: tuple[str, ...] | None = st.get("scopes")
        path = scope["path"]
        if scopes is None or ADMIN_SCOPE in scopes:
            await self.app(scope, receive, send)
            return
        needed: str | None = None
        if ADMIN_PATHS.match(path):
            needed = ADMIN_SCOPE
        else:
            match = MCP_PATH.match(path)
            if match and match["server"] != "servers" and not may_use_server(scopes, match["server"]):
                needed = f"server:{match['server']}"
        if needed is None:
            await self.app(scope, receive, send)
            return
        self.audit.record(
            "auth.forbidden",
            outcome="denied",
            reason=f"needs {needed}",
            request_id=st.get("request_id"),
            ip=st.get("client_ip"),
            principal=st.get("principal"),
            path=path,
        )
        challenge = (b"www-authenticate", f'Bearer error="insufficient_scope", scope="{needed}"'.encode())
        await reject(send, 403, "Forbidden", f"This token lacks the {needed!r} scope", [challenge])
