"""The resource server: an access token from the configured issuer becomes a Principal for one resource.

JWTs are validated locally (validator); other tokens are introspected when OAUTH_INTROSPECTION_URL is set. The
principal is `oauth:<issuer-host>:<claim>` (never confusable with `token:NAME` or `env:admin`), its scopes are the
token's `scope`/`scp` values that carry OAUTH_SCOPE_PREFIX, stripped, and read with the gateway's one scope grammar
(anything else is ignored; `admin` too, unless OAUTH_ALLOW_ADMIN_SCOPE). Its credential is the token's hash, so
sessions and streams opened with a token end when that token expires, as they do for named tokens (revocation.py
asks `known`).
"""

import time
from collections.abc import Callable
from typing import Any

from mcp_bastion.access import Principal, valid_scope
from mcp_bastion.errors import DependencyUnavailable
from mcp_bastion.oauth.http import JsonFetcher, OAuthFetchError
from mcp_bastion.oauth.introspection import Introspector
from mcp_bastion.oauth.jwks import JWKS_RETRY_S, KeySource, KeysUnavailable
from mcp_bastion.oauth.resource import OAuthConfig, challenge
from mcp_bastion.oauth.validator import InvalidToken, TokenValidator, looks_like_jwt
from mcp_bastion.security import ADMIN_SCOPE

DEPENDENCY = "oauth"  # how a 503 names the identity provider
SEEN_MAX = 65_536  # tokens whose sessions are tracked; past it the oldest are forgotten (their sessions end: closed)
CLAIM_MAX_CHARS = 256  # a principal claim longer than this is refused rather than cut (ids must not collide)
SCOPES_MAX = 256  # scope values read from one token
REFRESH_TOKEN_TYPES = frozenset({"refresh_token", "refresh"})  # introspection's token_type (RFC 7662; Keycloak)


class ResourceServer:
    """Validates the access tokens of one issuer for the gateway's resources."""

    def __init__(
        self,
        config: OAuthConfig,
        *,
        fetcher: JsonFetcher | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.fetcher = fetcher or JsonFetcher()
        self.clock = clock  # wall time: token lifetimes
        self.keys = KeySource(self.fetcher, issuer=config.issuer, jwks_url=config.jwks_url, clock=monotonic)
        self.validator = TokenValidator(self.keys, issuer=config.issuer, leeway_s=config.leeway_s, clock=clock)
        self.introspector: Introspector | None = None
        if config.introspection_url and config.client_id and config.client_secret:
            self.introspector = Introspector(
                self.fetcher,
                url=config.introspection_url,
                client_id=config.client_id,
                client_secret=config.client_secret,
                clock=clock,
            )
        self._seen: dict[str, Principal] = {}

    def takes(self, token: str) -> bool:
        """Whether `token` is this resource server's to judge before the named tokens are asked (a JWT)."""
        return looks_like_jwt(token)

    @property
    def introspects(self) -> bool:
        """Whether tokens that are neither JWTs nor named tokens are asked about at the issuer."""
        return self.introspector is not None

    async def verify(self, token: str, digest: str, server: str | None) -> tuple[Principal | None, str]:
        """The principal of `token` on the resource `server` names (None: the gateway itself), or None and why.

        Raises:
            DependencyUnavailable: the issuer's keys or introspection endpoint cannot be reached (fail closed: 503).
        """
        audience = self.config.audiences(server)
        try:
            if looks_like_jwt(token):
                claims = await self.validator.claims(token, audience, digest)
            else:
                claims = await self._introspected(token, digest, audience)
            principal = self._principal(claims, digest)
        except InvalidToken as exc:
            return None, str(exc)
        except KeysUnavailable as exc:
            raise DependencyUnavailable(str(exc), dependency=DEPENDENCY, retry_after_s=exc.retry_after_s) from None
        except OAuthFetchError as exc:
            message = f"the identity provider cannot be reached ({exc})"
            raise DependencyUnavailable(message, dependency=DEPENDENCY, retry_after_s=int(JWKS_RETRY_S)) from None
        self._remember(digest, principal)
        return principal, "ok"

    def known(self, digest: str) -> Principal | None:
        """The principal of a token seen valid here, while it has not expired (what ends its sessions)."""
        principal = self._seen.get(digest)
        if principal is None:
            return None
        if principal.expires is not None and principal.expires <= self.clock():
            del self._seen[digest]
            return None
        return principal

    def challenge(self, server: str | None, *, error: str | None = None, scope: str | None = None) -> bytes:
        """The WWW-Authenticate value for a refusal on this resource."""
        return challenge(self.config, server, error=error, scope=scope)

    async def close(self) -> None:
        """Close the connections to the identity provider."""
        await self.keys.close()
        await self.fetcher.close()

    async def _introspected(self, token: str, digest: str, audience: str) -> dict[str, Any]:
        if self.introspector is None:
            raise InvalidToken("invalid token")
        answer = await self.introspector.introspect(token, digest)
        if answer.get("active") is not True:
            raise InvalidToken("inactive token (introspection)")
        if str(answer.get("token_type", "")).lower() in REFRESH_TOKEN_TYPES:
            raise InvalidToken("a refresh token is not an access token")
        if answer.get("iss", self.config.issuer) != self.config.issuer:
            raise InvalidToken("token from another issuer (iss)")
        aud = answer.get("aud")
        if audience not in (aud if isinstance(aud, list) else [aud]):
            raise InvalidToken("token for another resource (aud)")
        now, leeway = self.clock(), self.config.leeway_s
        if _number(answer.get("exp"), float("inf")) <= now - leeway:
            raise InvalidToken("expired token")
        if _number(answer.get("nbf"), 0.0) > now + leeway:
            raise InvalidToken("token not yet valid (nbf or iat in the future)")
        return answer

    def _principal(self, claims: dict[str, Any], digest: str) -> Principal:
        config = self.config
        value = claims.get(config.principal_claim)
        if value is None and config.principal_claim == "sub":
            # A client-credentials token has no user: the client is the principal (RFC 9068 2.2 has JWTs say so in
            # `sub`; introspection answers often carry only `client_id`).
            value = claims.get("client_id")
        if not isinstance(value, str) or not value or len(value) > CLAIM_MAX_CHARS or not value.isprintable():
            raise InvalidToken(f"token lacks a usable {config.principal_claim} claim")
        pid = f"oauth:{config.issuer_host}:{value}"
        exp = claims.get("exp")
        expires = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
        scopes = scopes_of(claims, config.scope_prefix)
        return Principal(
            pid,
            pid,
            scopes if config.allow_admin else tuple(s for s in scopes if s != ADMIN_SCOPE),
            "bearer",
            credential=digest,
            expires=expires,
            audit=audit_fields(claims, config.issuer),
        )

    def _remember(self, digest: str, principal: Principal) -> None:
        if digest not in self._seen and len(self._seen) >= SEEN_MAX:
            now = self.clock()
            self._seen = {k: p for k, p in self._seen.items() if p.expires is None or p.expires > now}
            while len(self._seen) >= SEEN_MAX:
                del self._seen[next(iter(self._seen))]
        self._seen[digest] = principal


def scopes_of(claims: dict[str, Any], prefix: str) -> tuple[str, ...]:
    """The gateway scopes a token carries: `scope` (space-separated, RFC 9068) or `scp` (a list or a string: Entra,
    Okta), only values with the prefix, stripped, and valid in the scope grammar."""
    raw = claims.get("scope", claims.get("scp"))
    values = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    found: list[str] = []
    for value in values[:SCOPES_MAX]:
        if isinstance(value, str) and value.startswith(prefix):
            scope = value[len(prefix) :]
            if valid_scope(scope) and scope not in found:
                found.append(scope)
    return tuple(found)


def audit_fields(claims: dict[str, Any], issuer: str) -> tuple[tuple[str, str], ...]:
    """What an audit line records about an OAuth principal: issuer, subject, client and token id (never the token)."""
    client = claims.get("azp", claims.get("client_id"))
    fields = {"oauth_issuer": issuer, "oauth_subject": claims.get("sub"), "oauth_client": client}
    fields["oauth_jti"] = claims.get("jti")
    return tuple((k, v[:CLAIM_MAX_CHARS]) for k, v in fields.items() if isinstance(v, str) and v)


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
