"""Who is calling (bearer token or login-session cookie) and may they use this route.

"Who" and "may" are separate stages so the per-principal rate limit can sit between them. Fails closed: a store
error during authentication is a refusal. A login session stays bound to the token it came from: every cookie
request re-validates that token, so revoking, rotating or expiring it ends the session at once.

An address locked out for too many failed authentications stays locked for every credential except those that
already succeeded from it (Issue 9 item 10: one bad client behind a NAT cannot lock out the good ones; a guess never
seen before still waits the lockout out, so guessing gains nothing).
"""

import contextlib
import hmac
import re
import time
from http.cookies import SimpleCookie
from typing import Protocol

from mcp_bastion.access import CONTEXT_KEY, Access, Principal, RequestContext, Route, context_of, needed_scope
from mcp_bastion.audit import AuditLog
from mcp_bastion.errors import DependencyUnavailable
from mcp_bastion.middleware.reply import refuse, refuse_limited, refuse_rate, refuse_unavailable
from mcp_bastion.oauth import ResourceServer
from mcp_bastion.ratelimit import Limiter, Verdict
from mcp_bastion.security import ADMIN_SCOPE, OWN_PREFIXES, bearer, token_hash
from mcp_bastion.store import LoginSession, Store, StoreError
from mcp_bastion.types import ASGIApp, Receive, Scope, Send

SESSION_COOKIE = "bastion_session"
CSRF_COOKIE = "csrf_token"
SUCCESS_AUDIT_EVERY_S = 60.0  # auth.success once a minute per principal and address: evidence without a flood
SUCCESS_SEEN_MAX = 65_536  # (principal, address) pairs remembered for that; past it the table starts over
TOUCH_EVERY_S = 60.0  # last-used time written at most once a minute per token
QUERY_TOKEN = re.compile(rb"(^|&)(access_token|token|auth|api_key|key)=", re.IGNORECASE)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = (b"www-authenticate", b'Bearer realm="mcp-bastion"')
CHALLENGE_INVALID = (b"www-authenticate", b'Bearer realm="mcp-bastion", error="invalid_token"')
ADMIN_ID = "env:admin"  # the .env token's principal: no named token can take this id (names are `token:NAME`)
ANONYMOUS = Principal("anonymous", "anonymous", (ADMIN_SCOPE,), "none")
TOKEN_KEY = "token"  # noqa: S105 - LoginSession.extra key holding the hash of the token a session came from


class IssuedTokens(Protocol):
    """Access tokens this gateway issued itself (the built-in authorization server, Issue 14: authserver.grants)."""

    def claims(self, token: str) -> bool:
        """Whether a bearer token is the built-in server's to judge (decided on its header, before any look-up)."""

    def owns_credential(self, credential: str) -> bool:
        """Whether a Principal.credential is one of its grants'."""

    async def principal(self, token: str) -> tuple[Principal | None, str]:
        """The principal of one of its access tokens (signature, expiry, then its grant in the store)."""

    async def by_credential(self, credential: str) -> tuple[Principal | None, str]:
        """The principal of a grant still in force."""


class Authenticator:
    """Turns a token or a cookie into a Principal; the admin token from .env first, then the store."""

    def __init__(
        self,
        *,
        admin_token: str | None,
        store: Store,
        oauth: ResourceServer | None = None,
        issued: IssuedTokens | None = None,
    ) -> None:
        self.admin_hash = token_hash(admin_token) if admin_token else None
        self.store = store
        self.oauth = oauth  # OAuth access tokens from the configured issuer (Issue 13), next to the named tokens
        self.issued = issued  # the built-in authorization server's tokens (Issue 14), judged first
        self._touched: dict[str, float] = {}
        self._admin_revoked = False  # sticky: once `lockdown` revoked the .env token, it stays refused

    async def by_token(self, token: str) -> tuple[Principal | None, str]:
        """The principal of a bearer token, or None and the reason.

        Raises:
            StoreError: the store could not answer (the caller fails closed).
        """
        return await self.by_hash(token_hash(token), oauth=False)

    async def by_bearer(self, token: str, server: str | None) -> tuple[Principal | None, str]:
        """The principal of a bearer token on the resource `server` names: a JWT from the OAuth issuer, else the
        admin or a named token, else (introspection configured) an opaque token of the issuer.

        Raises:
            StoreError, DependencyUnavailable: the store or the identity provider could not answer (fail closed).
        """
        digest = token_hash(token)
        if self.issued is not None and self.issued.claims(token) and not self._is_admin(digest):
            return await self.issued.principal(token)
        oauth = self.oauth
        if oauth is not None and oauth.takes(token) and not self._is_admin(digest):
            return await oauth.verify(token, digest, server)
        principal, reason = await self.by_hash(digest, oauth=False)
        if principal is None and reason == "invalid token" and oauth is not None and oauth.introspects:
            if token.startswith(OWN_PREFIXES):  # ours and not found (revoked, a refresh token): never the IdP's
                return principal, reason
            return await oauth.verify(token, digest, server)
        return principal, reason

    def _is_admin(self, digest: str) -> bool:
        return self.admin_hash is not None and hmac.compare_digest(digest, self.admin_hash)

    async def by_hash(self, digest: str, *, touch: bool = True, oauth: bool = True) -> tuple[Principal | None, str]:
        """The principal of a token hash (a bearer token's, or the one a login session is bound to); with `oauth`,
        also of an OAuth access token seen valid here that has not expired (how its sessions end with it).

        Raises:
            StoreError: the store could not answer (the caller fails closed).
        """
        if self.issued is not None and self.issued.owns_credential(digest):
            return await self.issued.by_credential(digest)
        if self._is_admin(digest):
            if await self._admin_token_revoked(digest):
                return None, "revoked token"
            return Principal(ADMIN_ID, "admin", (ADMIN_SCOPE,), "bearer", credential=digest), "ok"
        seen = self.oauth.known(digest) if oauth and self.oauth is not None else None
        if seen is not None:
            return seen, "ok"
        record = await self.store.token_by_hash(digest)
        if record is None:
            return None, "invalid token"
        now = time.time()
        if record.expires is not None and record.expires <= now:
            return None, "expired token"
        if touch and now - self._touched.get(record.name, 0.0) > TOUCH_EVERY_S:
            if len(self._touched) > SUCCESS_SEEN_MAX:
                self._touched.clear()
            self._touched[record.name] = now
            await self.store.touch_token(record.name, now)
        principal = Principal(
            f"token:{record.name}", record.name, record.scopes, "bearer", credential=digest, expires=record.expires
        )
        return principal, "ok"

    async def _admin_token_revoked(self, digest: str) -> bool:
        """Whether `mcp-bastion lockdown` revoked the .env admin token (one store lookup, admin-token requests only).

        Once seen revoked, the answer is kept for good; a store that cannot answer fails closed (the caller's 503).
        """
        if self._admin_revoked:
            return True
        self._admin_revoked = await self.store.is_revoked(digest)
        return self._admin_revoked

    async def by_cookie(self, value: str) -> tuple[Principal | None, str, LoginSession | None]:
        """The principal of a login-session cookie, re-validated against its token, or None and the reason."""
        session = await self.store.session_by_hash(token_hash(value))
        if session is None:
            return None, "unknown session", None
        if session.expires <= time.time():
            await self.store.delete_session(session.id_hash)
            return None, "expired session", None
        principal, reason = await self.session_principal(session)
        if principal is None:
            await self.store.delete_session(session.id_hash)
            return None, f"session ended: {reason}", None
        return principal._replace(via="cookie", login=session.id_hash), "ok", session

    async def session_principal(self, session: LoginSession) -> tuple[Principal | None, str]:
        """The principal behind a login session now: its token must still be valid (not revoked, rotated, expired).

        Raises:
            StoreError: the store could not answer (the caller fails closed).
        """
        digest = session.extra.get(TOKEN_KEY)
        if not digest:
            return None, "session not bound to a token"
        return await self.by_hash(digest)


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


def presented_hash(scope: Scope, route: Route) -> str | None:
    """The hash of the one credential a request carries (a bearer token, or a login cookie on a route that takes
    it), without any look-up: what `KnownCredentials` is asked about. None when there is none or it is malformed."""
    values = [v for k, v in scope["headers"] if k == b"authorization"]
    if len(values) == 1:
        token = bearer(values[0])
        return token_hash(token) if token is not None else None
    if values or not route.cookie:
        return None
    cookie = cookie_value(scope["headers"], SESSION_COOKIE)
    return token_hash(cookie) if cookie is not None else None


class AuthenticationMiddleware:
    """401 unless a valid bearer token (every route) or session cookie (routes that accept it) is presented."""

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
        ctx = context_of(scope)
        if self.disabled:
            scope[CONTEXT_KEY] = ctx.with_principal(ANONYMOUS)
            await self.app(scope, receive, send)
            return
        if ctx.route.access is Access.PUBLIC:
            await self.app(scope, receive, send)
            return
        try:
            locked = await self.limiter.locked_out(ctx.client_ip)
        except DependencyUnavailable as exc:
            await self._unavailable(ctx, scope, send, exc)
            return
        try:
            if locked is not None and not await self._may_pass_lockout(scope, ctx):
                await self._locked(ctx, scope, send, locked)
                return
            principal, reason, presented, login = await self._identify(scope, ctx)
            if locked is not None and not await self._known(ctx, principal):
                await self._locked(ctx, scope, send, locked)
                return
        except (StoreError, DependencyUnavailable) as exc:
            await self._unavailable(ctx, scope, send, exc)
            return
        if principal is None:
            try:
                if presented:  # a request with no credential at all (OAuth discovery, a first probe) is no attack
                    await self.limiter.failed_auth(ctx.client_ip)
                # Issue 10 item 1: a refused request is unauthenticated traffic: it counts against its address.
                counted = await self.limiter.hit_address(ctx.client_ip)
            except DependencyUnavailable as exc:  # the refusal cannot be counted: refuse as an outage
                await self._unavailable(ctx, scope, send, exc)
                return
            if not counted.allowed:
                await refuse_rate(self.audit, scope, send, ctx, counted, "per-ip")
                return
            ended = reason == "expired session" or reason.startswith("session ended")
            self._record(ctx, scope, "session.expired" if ended else "auth.failure", reason)
            challenge = _challenge(self.auth.oauth, ctx, invalid=presented)
            await refuse(scope, send, 401, "Unauthorized", _public_reason(reason), [challenge])
            return
        if principal.via == "cookie" and scope["method"] not in SAFE_METHODS and not _csrf_ok(scope, login):
            ctx = ctx.with_principal(principal)
            self._record(ctx, scope, "auth.failure", "missing or wrong CSRF token")
            await refuse(scope, send, 403, "Forbidden", "Missing or invalid X-CSRF-Token header")
            return
        ctx = ctx.with_principal(principal)
        scope[CONTEXT_KEY] = ctx
        self._success(ctx, scope, principal)
        # A grant's credential is its grant id: only then is the presented token's hash worth a second hashing.
        issued = self.auth.issued
        grant = issued is not None and principal.credential is not None and issued.owns_credential(principal.credential)
        await self._remember(ctx, principal, presented_hash(scope, ctx.route) if grant else None)
        await self.app(scope, receive, send)

    async def _may_pass_lockout(self, scope: Scope, ctx: RequestContext) -> bool:
        """Whether a request from a locked-out address may be identified at all (Issue 9 item 10).

        A bearer token must be known good from this address (decided on its hash, without a store lookup, so
        guesses during a lockout cost nothing), or be one the gateway signed (a grant's token after a refresh);
        a login cookie is looked up, then its token is checked the same way.
        """
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(values) == 1:
            token = bearer(values[0])
            if token is None:
                return False
            if await self.limiter.known.known(ctx.client_ip, token_hash(token)):
                return True
            # A built-in grant's refreshed access token: its signature, which no guess passes, is checked next, and
            # `_known` then asks whether its grant succeeded from this address before.
            return self.auth.issued is not None and self.auth.issued.claims(token)
        return not values and ctx.route.cookie and cookie_value(scope["headers"], SESSION_COOKIE) is not None

    async def _known(self, ctx: RequestContext, principal: Principal | None) -> bool:
        """Whether an identified principal's credential succeeded from this address before (Issue 9 item 10)."""
        if principal is None or principal.credential is None:
            return False
        return await self.limiter.known.known(ctx.client_ip, principal.credential)

    async def _remember(self, ctx: RequestContext, principal: Principal, presented: str | None) -> None:
        """Remember the credential as known good from this address (Issue 9 item 10); best effort: when the shared
        storage is down, the credential only loses its exception to a lockout (the lockout itself fails closed).

        A login cookie is remembered too (by its hash, `login`), so that an address over its per-IP limit still
        lets a known dashboard session through without a store look-up (Issue 10 item 1). So is the hash of the
        token presented (`presented`): a grant's credential is its grant id, not its token's hash, and the
        lockout's first check knows only the token.
        """
        hashes = {principal.credential, principal.login, presented}
        with contextlib.suppress(DependencyUnavailable):
            for digest in sorted(h for h in hashes if h is not None):
                await self.limiter.known.remember(ctx.client_ip, digest)

    async def _locked(self, ctx: RequestContext, scope: Scope, send: Send, locked: Verdict) -> None:
        self._record(ctx, scope, "ratelimit.exceeded", "too many failed authentications")
        message = "Too many failed authentication attempts; try again later"
        await refuse_limited(scope, send, message, locked.headers(), locked.reset_s)

    async def _identify(
        self, scope: Scope, ctx: RequestContext
    ) -> tuple[Principal | None, str, bool, LoginSession | None]:
        if QUERY_TOKEN.search(scope.get("query_string", b"")):
            return None, "token in query string refused", True, None
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(values) > 1:
            return None, "more than one Authorization header", True, None
        if values:
            token = bearer(values[0])
            if token is None:
                return None, "malformed Authorization header", True, None
            principal, reason = await self.auth.by_bearer(token, ctx.server)
            return principal, reason, True, None
        cookie = cookie_value(scope["headers"], SESSION_COOKIE)
        if cookie is not None and ctx.route.cookie:
            return await self._cookie(cookie)
        return None, "missing credentials", False, None

    async def _cookie(self, cookie: str) -> tuple[Principal | None, str, bool, LoginSession | None]:
        principal, reason, session = await self.auth.by_cookie(cookie)
        return principal, reason, True, session

    async def _unavailable(self, ctx: RequestContext, scope: Scope, send: Send, exc: Exception) -> None:
        """Fail closed on an outage of the store or the shared limiter: 503 + Retry-After naming it, audited."""
        known = exc if isinstance(exc, DependencyUnavailable) else None  # a plain StoreError (SQLite) names the store
        dependency = known.dependency if known else "store"
        retry_after_s = known.retry_after_s if known else 1
        self._record(ctx, scope, "auth.failure", f"{dependency} unavailable")
        message = "Authentication is temporarily unavailable"
        await refuse_unavailable(scope, send, dependency, retry_after_s, message)

    def _success(self, ctx: RequestContext, scope: Scope, principal: Principal) -> None:
        key = (principal.id, ctx.client_ip)
        now = time.monotonic()
        if now - self._success_seen.get(key, -SUCCESS_AUDIT_EVERY_S) >= SUCCESS_AUDIT_EVERY_S:
            if len(self._success_seen) > SUCCESS_SEEN_MAX:
                self._success_seen.clear()
            self._success_seen[key] = now
            self._record(ctx, scope, "auth.success", principal.via, outcome="ok")

    def _record(self, ctx: RequestContext, scope: Scope, event: str, reason: str, outcome: str = "denied") -> None:
        self.audit.record(
            event, outcome=outcome, reason=reason, method=scope.get("method"), path=scope.get("path"), **ctx.who()
        )


def _csrf_ok(scope: Scope, login: LoginSession | None) -> bool:
    sent = dict(scope["headers"]).get(b"x-csrf-token")
    if sent is None or login is None or not login.csrf_hash:
        return False
    return hmac.compare_digest(token_hash(sent.decode("latin-1")), login.csrf_hash)


def _challenge(
    oauth: ResourceServer | None, ctx: RequestContext, *, invalid: bool = False, scope: str | None = None
) -> tuple[bytes, bytes]:
    """The WWW-Authenticate header of a refusal: with OAuth on, it names the resource's metadata (RFC 9728)."""
    if oauth is None:
        if scope is not None:
            return (b"www-authenticate", f'Bearer error="insufficient_scope", scope="{scope}"'.encode())
        return CHALLENGE_INVALID if invalid else CHALLENGE
    error = "insufficient_scope" if scope is not None else "invalid_token" if invalid else None
    return (b"www-authenticate", oauth.challenge(ctx.server, error=error, scope=scope))


def _public_reason(reason: str) -> str:
    if reason == "missing credentials":
        return "Authentication required: send Authorization: Bearer <token>"
    if reason == "token in query string refused":
        return "Tokens in the URL are refused; send Authorization: Bearer <token>"
    return "Invalid or expired credentials"


class AuthorizationMiddleware:
    """403 when the principal's scopes do not cover the route (admin routes, the `{server}` of MCP routes).

    Tools, resources, prompts and every other MCP method are decided by the same authorizer where the body is
    parsed (transports.policy), with the same grammar.
    """

    def __init__(self, app: ASGIApp, *, audit: AuditLog, oauth: ResourceServer | None = None) -> None:
        self.app = app
        self.audit = audit
        self.oauth = oauth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = context_of(scope)
        principal = ctx.principal
        if principal is None:
            if ctx.route.access is not Access.PUBLIC:  # deny by default: only public routes pass without one
                await refuse(scope, send, 401, "Unauthorized", "Authentication required", [_challenge(self.oauth, ctx)])
                return
            await self.app(scope, receive, send)
            return
        needed = needed_scope(ctx.route, ctx.server, principal.scopes)
        if needed is None:
            await self.app(scope, receive, send)
            return
        self.audit.record("auth.forbidden", outcome="denied", reason=f"needs {needed}", path=scope["path"], **ctx.who())
        challenge = _challenge(self.oauth, ctx, scope=needed)
        await refuse(scope, send, 403, "Forbidden", f"This token lacks the {needed!r} scope", [challenge])
