"""The authorization server's HTTP endpoints (the route table declares them: all public, rate-limited per address).

GET  /.well-known/oauth-authorization-server   RFC 8414 metadata
GET  /oauth/jwks                               the public signing keys
POST /oauth/register                           RFC 7591
GET  /oauth/authorize                          checks the request, then on to the consent page
GET  /oauth/consent, POST /oauth/consent       the consent page (login session required) and its answer
POST /oauth/login                              the no-script login form of the consent flow
POST /oauth/token, POST /oauth/revoke          RFC 6749 / 7009
"""

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from mcp_bastion.access import Principal, context_of
from mcp_bastion.admin import AdminRoutes
from mcp_bastion.audit import AuditLog
from mcp_bastion.authserver import pages
from mcp_bastion.authserver.admission import RegistrationLimits
from mcp_bastion.authserver.authorize import Authorizations, AuthorizeRefused, redirect_with
from mcp_bastion.authserver.clients import BadClient, Clients
from mcp_bastion.authserver.exchange import Exchange, TokenRefused
from mcp_bastion.authserver.forms import BadForm, form_of
from mcp_bastion.authserver.grants import display_name
from mcp_bastion.authserver.keys import SigningKeys
from mcp_bastion.authserver.records import Pending
from mcp_bastion.middleware.auth import SESSION_COOKIE, Authenticator, cookie_value
from mcp_bastion.oauth import METADATA_MAX_AGE_S
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.security import ADMIN_SCOPE
from mcp_bastion.store import LoginSession
from mcp_bastion.transports.http import Headers, Request, send_bytes, send_json

TOO_MANY = "too_many_registrations"
FORM_MAX_BYTES = 16 * 1024  # token and consent forms: a few parameters of at most a few KiB
REGISTER_MAX_BYTES = 16 * 1024  # a registration is a few hundred bytes
NO_STORE: Headers = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
PUBLIC_CACHE: Headers = [(b"cache-control", f"public, max-age={METADATA_MAX_AGE_S}".encode())]  # metadata, JWKS


class AuthServerRoutes:
    """The endpoints; `app.BastionApp` routes to them by route name."""

    def __init__(
        self,
        *,
        issuer: str,
        keys: SigningKeys,
        clients: Clients,
        authorizations: Authorizations,
        exchange: Exchange,
        admin: AdminRoutes,
        authenticator: Authenticator,
        limiter: Limiter,
        audit: AuditLog,
        scopes: list[str],
        on_revoked: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        exchange.on_revoked = on_revoked  # the revocation sweep: whatever ends a grant ends what it opened, at once
        self.issuer = issuer
        self.keys = keys
        self.clients = clients
        self.authorizations = authorizations
        self.exchange = exchange
        self.admin = admin
        self.auth = authenticator
        self.limiter = limiter
        self.audit = audit
        self.scopes = scopes
        self.registrations = RegistrationLimits(limiter, total=clients.unapproved_max, window_s=clients.unused_ttl_s)

    def metadata_document(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "registration_endpoint": f"{base}/oauth/register",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "jwks_uri": f"{base}/oauth/jwks",
            "scopes_supported": self.scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": True,
        }

    async def metadata(self, req: Request) -> None:
        """GET /.well-known/oauth-authorization-server."""
        await send_json(req.send, 200, self.metadata_document(), PUBLIC_CACHE)

    async def jwks(self, req: Request) -> None:
        """GET /oauth/jwks."""
        await send_json(req.send, 200, self.keys.jwks(), PUBLIC_CACHE)

    async def register(self, req: Request) -> None:
        """POST /oauth/register (RFC 7591); bounded per address block and in all (admission)."""
        refused = await self.registrations.refusal(context_of(req.scope).client_ip)
        if refused is not None:
            self._record(req, "oauth.client.refused", "denied", reason="too many registrations", error=TOO_MANY)
            body = {"error": TOO_MANY, "error_description": "too many client registrations; try again later"}
            await send_json(req.send, 429, body, refused.headers())
            return
        try:
            data = orjson.loads(await req.body(REGISTER_MAX_BYTES))
        except orjson.JSONDecodeError:
            data = None
        try:
            client, body = await self.clients.register(data)
        except BadClient as exc:
            self._record(req, "oauth.client.refused", "denied", reason=exc.description)
            await send_json(req.send, 400, {"error": exc.error, "error_description": exc.description})
            return
        self._record(req, "oauth.client.registered", "ok", client=client.client_name, client_id=client.client_id)
        await send_json(req.send, 201, body, NO_STORE)

    async def authorize(self, req: Request) -> None:
        """GET /oauth/authorize: check the request, keep it, and move the browser on to the consent page."""
        try:
            params, _ = form_of(req.query)
            pending = await self.authorizations.start(params)
        except BadForm as exc:
            await self._page(req, 400, pages.message("Invalid request", str(exc)))
            return
        except AuthorizeRefused as exc:
            self._record(req, "oauth.authorize.refused", "denied", reason=exc.description, error=exc.error)
            if exc.redirect_uri is None:
                await self._page(req, 400, pages.message("Invalid request", exc.description))
                return
            answer = {"error": exc.error, "error_description": exc.description, "state": exc.state, "iss": self.issuer}
            await self._redirect(req, redirect_with(exc.redirect_uri, answer))
            return
        await self._page(req, 200, pages.onward(f"/oauth/consent?request={pending.id}"))

    async def consent_page(self, req: Request) -> None:
        """GET /oauth/consent?request=ID: the login form, or the consent page for a logged-in operator."""
        pending = await self.authorizations.pending(req.query_param("request") or "")
        if pending is None:
            await self._page(req, 400, pages.message("Request expired", "Start again from the application."))
            return
        operator, login = await self._operator(req)
        if operator is None or login is None:
            await self._page(req, 200, pages.login(pending.client_name, pending.id))
            return
        csrf = await self.authorizations.show(pending, login.id_hash)
        self._record(req, "oauth.consent.shown", "ok", client=pending.client_name, operator=operator.name)
        body = pages.consent(
            client=pending.client_name,
            redirect_uri=pending.redirect_uri,
            resource=pending.resource,
            scopes=pending.scopes,
            tools=pending.tools,
            first_seen=pending.first_seen,
            request=pending.id,
            csrf=csrf,
        )
        await self._page(req, 200, body, [pages.consent_policy(pending.redirect_uri)])

    async def consent(self, req: Request) -> None:
        """POST /oauth/consent: the operator's decision (login session and the page's CSRF token required)."""
        try:
            form, lists = form_of(await req.body(FORM_MAX_BYTES), repeatable=frozenset({"scope"}))
        except BadForm as exc:
            await self._page(req, 400, pages.message("Invalid form", str(exc)))
            return
        operator, login = await self._operator(req)
        pending = None
        if operator is not None and login is not None:
            pending = await self.authorizations.take(form.get("request", ""), form.get("csrf_token", ""), login.id_hash)
        if operator is None or pending is None:
            self._record(req, "oauth.consent.refused", "denied", reason="no login session or a wrong CSRF token")
            await self._page(req, 403, pages.message("Forbidden", "This form is not valid any more; start again."))
            return
        chosen = tuple(s for s in lists.get("scope", []) if s in pending.scopes or s in pending.tools)
        if form.get("decision") != "approve" or not chosen:
            reason = "denied by the operator" if form.get("decision") != "approve" else "no scope approved"
            self._record(req, "oauth.consent.denied", "denied", reason=reason, client=pending.client_name)
            await self._redirect(req, self.authorizations.deny(pending))
            return
        await self._approve(req, pending, chosen, operator)

    async def _approve(self, req: Request, pending: Pending, chosen: tuple[str, ...], operator: Principal) -> None:
        url, code = await self.authorizations.approve(pending, chosen, operator.name)
        fields = {"client": pending.client_name, "scopes": list(code.scopes), "resource": code.resource}
        self._record(req, "oauth.consent.approved", "ok", operator=operator.name, **fields)
        self._record(req, "oauth.code.issued", "ok", grant=code.grant_id, **fields)
        await self._redirect(req, url)

    async def login(self, req: Request) -> None:
        """POST /oauth/login: an admin token turns into a login session, then back to the consent page."""
        try:
            form, _ = form_of(await req.body(FORM_MAX_BYTES))
        except BadForm as exc:
            await self._page(req, 400, pages.message("Invalid form", str(exc)))
            return
        pending = await self.authorizations.pending(form.get("request", ""))
        if pending is None:
            await self._page(req, 400, pages.message("Request expired", "Start again from the application."))
            return
        ctx = context_of(req.scope)
        token = form.get("token", "")
        locked = await self.limiter.locked_out(ctx.client_ip)
        principal, reason = await self.auth.by_token(token) if token and locked is None else (None, "locked out")
        if principal is None or ADMIN_SCOPE not in principal.scopes:
            if locked is None:
                await self.limiter.failed_auth(ctx.client_ip)
            why = reason if principal is None else "needs the admin scope"
            self._record(req, "auth.failure", "denied", reason=why, path="/oauth/login")
            error = "Too many failed attempts; try again later" if locked else "Invalid token, or not an admin token"
            await self._page(req, 401, pages.login(pending.client_name, pending.id, error))
            return
        _, _, cookies = await self.admin.start_session(principal, ctx)
        await self._redirect(req, f"/oauth/consent?request={pending.id}", cookies)

    async def token(self, req: Request) -> None:
        """POST /oauth/token."""
        try:
            form, _ = form_of(await req.body(FORM_MAX_BYTES))
            answer = await self.exchange.token(form, context_of(req.scope).who())
        except BadForm as exc:
            await send_json(req.send, 400, {"error": "invalid_request", "error_description": str(exc)}, NO_STORE)
            return
        except TokenRefused as exc:
            self._record(req, "oauth.token.refused", "denied", reason=exc.description, error=exc.error)
            await send_json(req.send, 400, {"error": exc.error, "error_description": exc.description}, NO_STORE)
            return
        await send_json(req.send, 200, answer, NO_STORE)

    async def revoke(self, req: Request) -> None:
        """POST /oauth/revoke (RFC 7009): 200 whatever the token was."""
        try:
            form, _ = form_of(await req.body(FORM_MAX_BYTES))
        except BadForm as exc:
            await send_json(req.send, 400, {"error": "invalid_request", "error_description": str(exc)})
            return
        await self.exchange.revoke(form.get("token", ""), context_of(req.scope).who())
        await send_json(req.send, 200, {}, NO_STORE)

    async def list_grants(self, req: Request) -> None:
        """GET /api/grants (admin): every grant in force as `oauth:<client name>`, never a token."""
        rows = [
            {
                "id": g.id,
                "name": display_name(g),
                "client_id": g.client_id,
                "resource": g.resource,
                "scopes": list(g.scopes),
                "approved_by": g.approved_by,
                "created": g.created,
                "last_used": g.last_used,
                "expires": g.expires,
            }
            for g in await self.exchange.grants.all()
        ]
        await send_json(req.send, 200, {"grants": rows}, NO_STORE)

    async def revoke_grant(self, req: Request, grant_id: str) -> None:
        """DELETE /api/grants/{id} (admin): its tokens are refused and its sessions end at once."""
        grant = await self.exchange.end(grant_id, "revoked by an admin", context_of(req.scope).who())
        if grant is None:
            await send_json(req.send, 404, {"error": "Not found", "message": "no grant with that id"})
            return
        await send_json(req.send, 200, {"revoked": grant_id, "name": display_name(grant)})

    async def _operator(self, req: Request) -> tuple[Principal | None, LoginSession | None]:
        """The logged-in operator (a login session whose token holds the admin scope), or None.

        Raises:
            StoreError: the store could not answer (the page fails closed with 503).
        """
        value = cookie_value(req.raw_headers, SESSION_COOKIE)
        if value is None:
            return None, None
        principal, _, login = await self.auth.by_cookie(value)
        if principal is None or ADMIN_SCOPE not in principal.scopes:
            return None, None
        return principal, login

    async def _page(self, req: Request, status: int, body: bytes, headers: Headers | None = None) -> None:
        await send_bytes(req.send, status, body, [pages.HTML, pages.NO_STORE, pages.REFERRER, *(headers or [])])

    async def _redirect(self, req: Request, url: str, headers: Headers | None = None) -> None:
        location = (b"location", url.encode("utf-8"))
        await send_bytes(req.send, 303, b"", [location, pages.NO_STORE, *(headers or [])])

    def _record(self, req: Request, event: str, outcome: str, **fields: Any) -> None:
        self.audit.record(event, outcome=outcome, **{**context_of(req.scope).who(), **fields})
