"""Grants: what the operator approved, and how a grant's access tokens become a Principal on each request.

The authentication stage asks `GrantTokens` about a bearer token that names one of our signing keys: the signature
and expiry are checked locally, then the grant in the store (fail closed: a store error reaches the caller). A
grant's principal is `grant:<id>` (stable, never confusable with `token:NAME` or `oauth:<issuer>:<subject>`); people
read it as `oauth:<client name>`. Its credential is `grant:<id>` too, so the revocation sweep ends every MCP session
and login it opened once the grant is gone, whichever of its tokens opened them.
"""

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mcp_bastion.access import Principal
from mcp_bastion.authserver.keys import SigningKeys
from mcp_bastion.authserver.records import CODE, GRANT, GRANT_USED, PENDING, Grant, from_record, to_record
from mcp_bastion.authserver.resources import Resources
from mcp_bastion.authserver.tokens import AccessClaims, BadToken, is_ours, verify
from mcp_bastion.security import token_hash
from mcp_bastion.store import Store

CREDENTIAL_PREFIX = "grant:"
DISPLAY_PREFIX = "oauth:"
TOUCH_EVERY_S = 60.0  # a grant's last use is written at most once a minute
TOUCHED_MAX = 65_536  # grants whose last write time is remembered; past it the table starts over
# Tokens whose signature was checked, by hash, until they expire: an ES256 check costs ~0.3 ms a request, the
# grant's store look-up (revocation) still happens every time. Past the bound the oldest half is dropped.
VERIFIED_MAX = 4096


async def all_grants(store: Store) -> list[Grant]:
    """Every grant in force with its last use, oldest first (the CLI reads the store directly)."""
    grants = []
    for record in await store.list_records(GRANT):
        grant = from_record(Grant, record)
        used = await store.get_record(GRANT_USED, grant.id)
        grants.append(replace(grant, last_used=used["last_used"]) if used else grant)
    return sorted(grants, key=lambda g: g.created)


async def end_all_grants(store: Store) -> int:
    """Revoke every grant, and the consents and codes not redeemed yet (`lockdown`); how many grants ended."""
    for pending in await store.list_records(PENDING):
        await store.delete_record(PENDING, str(pending["id"]))
    for code in await store.list_records(CODE):
        await store.delete_record(CODE, str(code["digest"]))
    ended = 0
    for grant in await store.list_records(GRANT):
        ended += await store.delete_record(GRANT, str(grant["id"]))
    return ended


def display_name(grant: Grant) -> str:
    """How people see a grant: `oauth:<client name>`."""
    return f"{DISPLAY_PREFIX}{grant.client_name}"


def grant_fields(grant: Grant) -> dict[str, Any]:
    """Audit fields naming a grant (never a token)."""
    return {"grant": grant.id, "client": display_name(grant), "scopes": list(grant.scopes), "resource": grant.resource}


class GrantTokens:
    """The grants in the store, and the principals their access tokens stand for."""

    def __init__(
        self,
        *,
        store: Store,
        keys: SigningKeys,
        issuer: str,
        resources: Resources,
        exclusive: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.exclusive = exclusive  # no other issuer configured: every JWT presented is ours to judge (and refuse)
        self.store = store
        self.keys = keys
        self.issuer = issuer
        self.resources = resources
        self.clock = clock
        self._touched: dict[str, float] = {}
        self._verified: dict[str, AccessClaims] = {}

    def owns(self, token: str) -> bool:
        """Whether a bearer token is one of ours (its header names one of our keys); cheap, verifies nothing."""
        return token_hash(token) in self._verified or is_ours(token, self.keys)

    def claims(self, token: str) -> bool:
        """Whether this server judges a bearer token: ours by its header, or any JWT when no other issuer is set."""
        return self.owns(token) or (self.exclusive and token.count(".") == 2)

    def owns_credential(self, credential: str) -> bool:
        """Whether a Principal.credential is a grant's."""
        return credential.startswith(CREDENTIAL_PREFIX)

    async def principal(self, token: str) -> tuple[Principal | None, str]:
        """The principal of an access token of ours, or None and the reason.

        Raises:
            StoreError: the store could not answer (the caller fails closed).
        """
        try:
            claims = self._claims(token)
        except BadToken as exc:
            return None, str(exc)
        grant, reason = await self._live(claims.grant_id)
        if grant is None:
            return None, reason
        if claims.audience != grant.resource or claims.client_id != grant.client_id:
            return None, "token does not match its grant"
        scopes = self.resources.bound(grant.resource, [s for s in claims.scopes if s in grant.scopes])
        await self._touch(grant)
        return self._principal(grant, scopes, min(claims.expires, grant.expires)), "ok"

    def _claims(self, token: str) -> AccessClaims:
        """The claims of a token, verified once and remembered until it expires.

        Raises:
            BadToken
        """
        digest = token_hash(token)
        claims = self._verified.get(digest)
        if claims is not None and claims.expires > self.clock():
            return claims
        claims = verify(token, self.keys, issuer=self.issuer)
        if len(self._verified) >= VERIFIED_MAX:
            for key in list(self._verified)[: VERIFIED_MAX // 2]:
                del self._verified[key]
        self._verified[digest] = claims
        return claims

    async def by_credential(self, credential: str) -> tuple[Principal | None, str]:
        """The principal of a grant still in force (what the revocation sweep and login sessions ask)."""
        grant, reason = await self._live(credential.removeprefix(CREDENTIAL_PREFIX))
        if grant is None:
            return None, reason
        return self._principal(grant, self.resources.bound(grant.resource, grant.scopes), grant.expires), "ok"

    async def get(self, grant_id: str) -> Grant | None:
        """A grant in force (None once revoked or expired)."""
        grant, _ = await self._live(grant_id)
        return grant

    async def put(self, grant: Grant) -> None:
        """Keep a grant until it expires."""
        await self.store.put_record(GRANT, grant.id, to_record(grant), grant.expires)

    async def revoke(self, grant_id: str) -> Grant | None:
        """End a grant: every access and refresh token of it is refused from the next request on. The revoked grant,
        or None when there was none."""
        grant = await self.get(grant_id)
        await self.store.delete_record(GRANT, grant_id)
        return grant

    async def all(self) -> list[Grant]:
        """Every grant in force with its last use, oldest first."""
        return await all_grants(self.store)

    async def _live(self, grant_id: str) -> tuple[Grant | None, str]:
        data = await self.store.get_record(GRANT, grant_id)
        if data is None:
            return None, "revoked grant"
        grant = from_record(Grant, data)
        if grant.expires <= self.clock():
            return None, "expired grant"
        return grant, "ok"

    async def _touch(self, grant: Grant) -> None:
        now = self.clock()
        if now - self._touched.get(grant.id, 0.0) <= TOUCH_EVERY_S:
            return
        if len(self._touched) > TOUCHED_MAX:
            self._touched.clear()
        self._touched[grant.id] = now
        # A record of its own: rewriting the grant could bring back one revoked in between.
        await self.store.put_record(GRANT_USED, grant.id, {"last_used": now}, grant.expires)

    def _principal(self, grant: Grant, scopes: tuple[str, ...], expires: float) -> Principal:
        credential = f"{CREDENTIAL_PREFIX}{grant.id}"
        return Principal(credential, display_name(grant), scopes, "bearer", credential=credential, expires=expires)
