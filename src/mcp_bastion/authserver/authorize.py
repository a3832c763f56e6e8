"""The authorization endpoint's rules (RFC 6749 4.1, OAuth 2.1, RFC 7636, RFC 8707, RFC 9207), without HTTP.

`start` checks a request and keeps it as `Pending`; the consent page is shown for it; `decide` turns the operator's
answer into the redirect back to the client, with a single-use code (approve) or `access_denied` (deny). Errors
about the client or its redirect URI are shown to the operator, never sent to an unverified redirect URI.
"""

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from urllib.parse import urlencode

from mcp_bastion.access import valid_scope
from mcp_bastion.authserver.clients import BadClient, Clients, redirect_target
from mcp_bastion.authserver.records import CODE, PENDING, SEEN, Client, Code, Pending, from_record, to_record
from mcp_bastion.authserver.resources import ForeignResource, Resources
from mcp_bastion.security import CODE_PREFIX, token_hash
from mcp_bastion.store import Store

PENDING_TTL_S = 600.0  # an operator has ten minutes from the client's redirect to the decision
CODE_TTL_S = 60.0  # a code is redeemed by the client's callback at once; OAuth 2.1 advises a short life
SEEN_TTL_S = 366 * 86_400.0  # a client approved within a year is not flagged as new
STATE_MAX_CHARS = 1024
PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, unpadded
PKCE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 section 4.1
SECRET_BYTES = 32
MAX_TOOL_CHOICES = 64  # single-tool checkboxes per server on a consent page: more is not a choice a person reads


class AuthorizeRefused(Exception):
    """A request refused: shown on a page (`redirect_uri` None) or sent back to the client's verified redirect."""

    def __init__(self, error: str, description: str, *, redirect_uri: str | None = None, state: str | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state


def s256(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_ok(verifier: str | None, challenge: str) -> bool:
    """Whether a code_verifier answers the challenge (constant-time compare)."""
    if verifier is None or not PKCE_VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)


def redirect_with(uri: str, params: Mapping[str, str | None]) -> str:
    """The client's redirect URI with response parameters added to its query."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


class Authorizations:
    """Pending requests, consent decisions and the codes they produce."""

    def __init__(
        self,
        *,
        store: Store,
        clients: Clients,
        resources: Resources,
        issuer: str,
        tools: Callable[[str], list[str]] = lambda server: [],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tools = tools  # the tools a server is known to have (its child's last tools/list), for narrowing
        self.store = store
        self.clients = clients
        self.resources = resources
        self.issuer = issuer
        self.clock = clock

    async def start(self, params: Mapping[str, str]) -> Pending:
        """Check an authorization request and keep it for the consent page.

        Raises:
            AuthorizeRefused
        """
        client_id, presented = params.get("client_id", ""), params.get("redirect_uri", "")
        try:
            client = await self.clients.find(client_id)
        except BadClient as exc:
            raise AuthorizeRefused(exc.error, exc.description) from None
        targets = (redirect_target(uri, presented) for uri in client.redirect_uris)
        redirect_uri = next((t for t in targets if t is not None), None)
        if redirect_uri is None:
            raise AuthorizeRefused("invalid_request", "redirect_uri is not one the client registered")
        state = params.get("state")

        def refuse(error: str, description: str) -> AuthorizeRefused:
            return AuthorizeRefused(error, description, redirect_uri=redirect_uri, state=state)

        if state is not None and len(state) > STATE_MAX_CHARS:
            raise refuse("invalid_request", "state is too long")
        if params.get("response_type") != "code":
            raise refuse("unsupported_response_type", "only response_type=code is supported")
        if params.get("code_challenge_method") != "S256":
            raise refuse("invalid_request", "PKCE with code_challenge_method=S256 is required (plain is refused)")
        challenge = params.get("code_challenge", "")
        if not PKCE_CHALLENGE.fullmatch(challenge):
            raise refuse("invalid_request", "code_challenge must be the base64url SHA-256 of the verifier")
        resource = params.get("resource")
        if not resource:
            raise refuse("invalid_target", "resource is required (RFC 8707): this gateway or one of its servers")
        try:
            offered = self.resources.offered(resource, params.get("scope"))
        except ForeignResource:
            raise refuse("invalid_target", "resource is neither this gateway nor one of its servers") from None
        seen = await self.store.get_record(SEEN, client.client_id)
        pending = Pending(
            id=secrets.token_urlsafe(SECRET_BYTES),
            client_id=client.client_id,
            client_name=client.client_name,
            redirect_uri=redirect_uri,
            state=state,
            code_challenge=challenge,
            resource=resource,
            scopes=offered,
            first_seen=seen is None,
            tools=self._tool_choices(offered),
        )
        await self._keep(pending)
        return pending

    def _tool_choices(self, offered: tuple[str, ...]) -> tuple[str, ...]:
        """Single tools of each whole server offered: the operator may grant some of them instead."""
        choices = []
        for scope in offered:
            kind, _, server = scope.partition(":")
            if kind == "server":
                choices += [f"tool:{server}/{name}" for name in self.tools(server)[:MAX_TOOL_CHOICES]]
        return tuple(c for c in dict.fromkeys(choices) if c not in offered and valid_scope(c))

    async def pending(self, pending_id: str) -> Pending | None:
        """A request waiting for consent."""
        data = await self.store.get_record(PENDING, pending_id) if len(pending_id) < 100 else None
        return from_record(Pending, data) if data is not None else None

    async def show(self, pending: Pending, login: str) -> str:
        """Bind the request to the operator's login session before its consent page is shown; the page's CSRF
        token (kept only as a hash)."""
        csrf = secrets.token_urlsafe(SECRET_BYTES)
        await self._keep(replace(pending, csrf_hash=token_hash(csrf), login=login))
        return csrf

    async def take(self, pending_id: str, csrf: str, login: str) -> Pending | None:
        """The request a consent form answers, consumed (a decision is made once), if the form's CSRF token and the
        login session are the ones its page was shown to; None otherwise (nothing consumed)."""
        pending = await self.pending(pending_id)
        if pending is None or not pending.csrf_hash or not hmac.compare_digest(pending.login, login):
            return None
        if not hmac.compare_digest(token_hash(csrf), pending.csrf_hash):
            return None
        if not await self.store.delete_record(PENDING, pending_id):
            return None  # another instance took it first
        return pending

    async def approve(self, pending: Pending, scopes: tuple[str, ...], approved_by: str) -> tuple[str, Code]:
        """Issue a code for the approved scopes (a subset of those offered); the redirect URL and the code record."""
        code = CODE_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
        record = Code(
            grant_id=secrets.token_hex(12),
            client_id=pending.client_id,
            client_name=pending.client_name,
            redirect_uri=pending.redirect_uri,
            code_challenge=pending.code_challenge,
            resource=pending.resource,
            scopes=tuple(s for s in (*pending.scopes, *pending.tools) if s in scopes),
            approved_by=approved_by,
            expires=self.clock() + CODE_TTL_S,
            digest=token_hash(code),
        )
        await self.store.put_record(CODE, record.digest, to_record(record), record.expires)
        await self.store.put_record(SEEN, pending.client_id, {"first": self.clock()}, self.clock() + SEEN_TTL_S)
        client = await self._client(pending.client_id)
        if client is not None:
            await self.clients.keep(client, approved=True)
        url = redirect_with(pending.redirect_uri, {"code": code, "state": pending.state, "iss": self.issuer})
        return url, record

    def deny(self, pending: Pending) -> str:
        """The redirect URL telling the client the operator said no."""
        params = {"error": "access_denied", "error_description": "the operator denied the request"}
        return redirect_with(pending.redirect_uri, {**params, "state": pending.state, "iss": self.issuer})

    async def _client(self, client_id: str) -> Client | None:
        """A registered client still on record (None for a metadata-document client, or one forgotten meanwhile)."""
        if client_id.startswith("https://"):
            return None
        try:
            return await self.clients.find(client_id)
        except BadClient:
            return None

    async def _keep(self, pending: Pending) -> None:
        await self.store.put_record(PENDING, pending.id, to_record(pending), self.clock() + PENDING_TTL_S)
