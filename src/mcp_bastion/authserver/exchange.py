"""The token endpoint's rules (OAuth 2.1 section 4.1.3 and 4.3, RFC 7009), without HTTP.

A code is redeemed once: the redemption is claimed atomically in the store, and a second one ends the grant the
first created (the code was stolen, or replayed). A refresh token is used once and replaced (rotation); presenting
a used one again ends the whole family, i.e. the grant, so a thief and the client can never both go on.
"""

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from mcp_bastion.audit import AuditLog
from mcp_bastion.authserver.authorize import pkce_ok
from mcp_bastion.authserver.grants import CREDENTIAL_PREFIX, GrantTokens, grant_fields
from mcp_bastion.authserver.keys import SigningKeys
from mcp_bastion.authserver.records import CODE, CODE_USED, REFRESH, REFRESH_USED, Code, Grant, Refresh, from_record
from mcp_bastion.authserver.records import to_record as record_of
from mcp_bastion.authserver.tokens import AccessClaims, issue, new_token_id
from mcp_bastion.security import REFRESH_PREFIX, token_hash
from mcp_bastion.store import Store

REFRESH_BYTES = 32
# A used-code claim outlives its code by this: a replay at the code's last moment still finds the claim (the store's
# clock and ours may differ by a little), and a replay marker still reaches a first redemption that was slow.
CODE_CLAIM_MARGIN_S = 300.0
MAX_PARAM_CHARS = 4096


class TokenRefused(Exception):
    """A token request refused; `error` is the RFC 6749 section 5.2 code (status 400, or 401 for invalid_client)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Lifetimes:
    """How long what the endpoint issues lives."""

    access_s: float
    grant_s: float


class Exchange:
    """Codes and refresh tokens for access tokens."""

    def __init__(
        self,
        *,
        store: Store,
        grants: GrantTokens,
        keys: SigningKeys,
        issuer: str,
        lifetimes: Lifetimes,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.grants = grants
        self.keys = keys
        self.issuer = issuer
        self.lifetimes = lifetimes
        self.audit = audit
        self.clock = clock
        # The revocation sweep (app: RevocationWatcher.revoked): a grant ended on any path ends its sessions and
        # streams at once, on every instance. Set by the routes, which the app builds with it.
        self.on_revoked: Callable[[], Awaitable[object]] | None = None

    async def token(self, form: Mapping[str, str], who: dict[str, Any]) -> dict[str, Any]:
        """Answer a token request (the JSON body of a 200).

        Raises:
            TokenRefused
        """
        if any(len(v) > MAX_PARAM_CHARS for v in form.values()):
            raise TokenRefused("invalid_request", "a parameter is too long")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return await self._redeem(form, who)
        if grant_type == "refresh_token":
            return await self._refresh(form, who)
        raise TokenRefused("unsupported_grant_type", "use authorization_code or refresh_token")

    async def revoke(self, token: str, who: dict[str, Any]) -> None:
        """RFC 7009: a refresh token or access token of ours ends its grant; anything else is ignored (200 anyway)."""
        grant_id = None
        data = await self.store.get_record(REFRESH, token_hash(token))
        if data is not None:
            grant_id = from_record(Refresh, data).grant_id
        elif self.grants.owns(token):
            principal, _ = await self.grants.principal(token)
            grant_id = principal.id.removeprefix(CREDENTIAL_PREFIX) if principal is not None else None
        if grant_id is not None:
            await self.end(grant_id, "revoked by the client (RFC 7009)", who)

    async def end(self, grant_id: str, reason: str, who: dict[str, Any]) -> Grant | None:
        """Revoke a grant, audit it, and end what it opened (`on_revoked`)."""
        grant = await self.grants.revoke(grant_id)
        if grant is not None:
            self.audit.record("oauth.grant.revoked", outcome="ok", reason=reason, **grant_fields(grant), **who)
            if self.on_revoked is not None:
                await self.on_revoked()
        return grant

    async def _redeem(self, form: Mapping[str, str], who: dict[str, Any]) -> dict[str, Any]:
        digest = token_hash(form.get("code", ""))
        data = await self.store.get_record(CODE, digest)
        if data is None:
            raise TokenRefused("invalid_grant", "unknown or expired code")
        code = from_record(Code, data)
        if form.get("client_id") != code.client_id:
            raise TokenRefused("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != code.redirect_uri:
            raise TokenRefused("invalid_grant", "redirect_uri differs from the authorization request's")
        if form.get("resource", code.resource) != code.resource:
            raise TokenRefused("invalid_target", "resource differs from the one approved")
        if not pkce_ok(form.get("code_verifier"), code.code_challenge):
            raise TokenRefused("invalid_grant", "code_verifier does not match the code_challenge")
        claim_expires = code.expires + CODE_CLAIM_MARGIN_S
        if not await self.store.put_record(CODE_USED, digest, {"grant": code.grant_id}, claim_expires, only_new=True):
            # Mark the replay before ending the grant: a first redemption still writing it sees the mark afterwards.
            await self.store.put_record(CODE_USED, digest, {"grant": code.grant_id, "reused": True}, claim_expires)
            await self._code_reused(code, who)
        grant = self._new_grant(code)
        await self.grants.put(grant)
        marked = await self.store.get_record(CODE_USED, digest)
        if marked is None or marked.get("reused"):  # replayed while the grant was being written: end it now
            await self._code_reused(code, who)
        self.audit.record("oauth.code.redeemed", outcome="ok", **grant_fields(grant), **who)
        return await self._tokens(grant)

    async def _code_reused(self, code: Code, who: dict[str, Any]) -> NoReturn:
        self.audit.record("oauth.code.reused", outcome="denied", client=code.client_name, **who)
        await self.end(code.grant_id, "authorization code used twice", who)
        raise TokenRefused("invalid_grant", "code already used; what it issued is revoked")

    def _new_grant(self, code: Code) -> Grant:
        now = self.clock()
        return Grant(
            id=code.grant_id,
            client_id=code.client_id,
            client_name=code.client_name,
            resource=code.resource,
            scopes=code.scopes,
            approved_by=code.approved_by,
            created=now,
            expires=now + self.lifetimes.grant_s,
        )

    async def _refresh(self, form: Mapping[str, str], who: dict[str, Any]) -> dict[str, Any]:
        digest = token_hash(form.get("refresh_token", ""))
        data = await self.store.get_record(REFRESH, digest)
        if data is None:
            raise TokenRefused("invalid_grant", "unknown or expired refresh token")
        refresh = from_record(Refresh, data)
        grant = await self.grants.get(refresh.grant_id)
        if grant is None:
            raise TokenRefused("invalid_grant", "the grant was revoked or has expired")
        if form.get("client_id") != grant.client_id:
            raise TokenRefused("invalid_grant", "the refresh token was issued to another client")
        if form.get("resource", grant.resource) != grant.resource:
            raise TokenRefused("invalid_target", "resource differs from the one approved")
        claimed = await self.store.put_record(REFRESH_USED, digest, {}, refresh.expires, only_new=True)
        if not claimed:
            self.audit.record("oauth.refresh.reused", outcome="denied", **grant_fields(grant), **who)
            await self.end(grant.id, "refresh token used twice (family revoked)", who)
            raise TokenRefused("invalid_grant", "refresh token already used; the grant is revoked")
        self.audit.record("oauth.token.refreshed", outcome="ok", **grant_fields(grant), **who)
        return await self._tokens(grant)

    async def _tokens(self, grant: Grant) -> dict[str, Any]:
        now = self.clock()
        expires = min(now + self.lifetimes.access_s, grant.expires)
        claims = AccessClaims(grant.id, grant.client_id, grant.resource, grant.scopes, expires, new_token_id())
        access = issue(self.keys, issuer=self.issuer, claims=claims, now=now)
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(REFRESH_BYTES)
        await self.store.put_record(
            REFRESH, token_hash(refresh), record_of(Refresh(grant.id, grant.expires)), grant.expires
        )
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(expires - now),
            "refresh_token": refresh,
            "scope": " ".join(grant.scopes),
        }
