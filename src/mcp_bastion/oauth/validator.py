"""JWT access tokens (RFC 9068) checked strictly: the one module that imports PyJWT.

Signature against the issuer's JWKS with an explicit algorithm allowlist (asymmetric only: `none` and HMAC are never
accepted, so a public key can never be used as a shared secret), `iss` exact, `aud` containing the resource (RFC 8707
binding: a token for another resource, even from the same issuer, is refused), `exp` required, `nbf` and `iat` checked,
each with a small leeway, and `typ` `at+jwt` (or plain `JWT`, which most IdPs still send, then without the claims
only an ID token carries).
"""

import time
from collections.abc import Callable
from typing import Any

import jwt

from mcp_bastion.oauth.jwks import KeySource

ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})  # what Keycloak, Entra, Okta, Auth0, Google and Dex sign with
KEY_TYPES = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})  # RFC 9068 section 2.1, and what IdPs still send
# Claims only an OpenID ID token carries (OpenID Connect Core 2 and 3.1.3.6): an ID token typed plain `JWT` (as most
# IdPs type both kinds) is told apart by them, since an ID token names who logged in, not what a client may do.
ID_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash")
TOKEN_MAX_CHARS = 8192  # an access token past this is no access token (headers are capped at 16 KiB anyway)
KEY_CACHE_MAX = 64  # parsed keys kept per key set
# Tokens whose signature checked out, kept (by hash) while the key set is fresh and until they expire: a client reuses
# one token for many calls, and a signature costs 0.2-0.6 ms of CPU (RS256 .. EdDSA, measured on the test machine).
VERIFIED_CACHE_MAX = 10_000


class InvalidToken(Exception):
    """The token is refused; the message is the reason for the audit line (never the token or its claims)."""


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts: a JWS compact serialization (a named token never has a dot)."""
    return token.count(".") == 2 and len(token) <= TOKEN_MAX_CHARS


class TokenValidator:
    """Validates JWT access tokens of one issuer against its keys."""

    def __init__(
        self, keys: KeySource, *, issuer: str, leeway_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.clock = clock
        self._parsed: dict[str | None, jwt.PyJWK] = {}
        self._generation = -1
        self._verified: dict[str, tuple[int, dict[str, Any]]] = {}

    async def claims(self, token: str, audience: str, digest: str | None = None) -> dict[str, Any]:
        """The verified claims of `token` if it is valid for `audience` (a token seen valid before, by its hash
        `digest`, is not verified again while the key set it was checked against is fresh: only exp and aud are).

        Raises:
            InvalidToken: why it is refused.
            KeysUnavailable: the issuer's keys cannot be had (the caller answers 503).
        """
        cached = self._verified.get(digest) if digest is not None else None
        if cached is not None and cached[0] == self.keys.generation and self.keys.fresh:
            return self._still_valid(cached[1], audience, digest)
        claims = await self._decode(token, audience)
        if digest is not None:
            self._remember(digest, claims)
        return claims

    def _still_valid(self, claims: dict[str, Any], audience: str, digest: str | None) -> dict[str, Any]:
        if self.clock() > float(claims["exp"]) + self.leeway_s:
            self._verified.pop(digest or "", None)
            raise InvalidToken("expired token")
        aud = claims["aud"]
        if audience not in (aud if isinstance(aud, list) else [aud]):
            raise InvalidToken("token for another resource (aud)")
        return claims

    def _remember(self, digest: str, claims: dict[str, Any]) -> None:
        if len(self._verified) >= VERIFIED_CACHE_MAX:
            now = self.clock()
            self._verified = {k: v for k, v in self._verified.items() if float(v[1]["exp"]) + self.leeway_s >= now}
            while len(self._verified) >= VERIFIED_CACHE_MAX:
                del self._verified[next(iter(self._verified))]
        self._verified[digest] = (self.keys.generation, claims)

    async def _decode(self, token: str, audience: str) -> dict[str, Any]:
        alg, kid = _header(token)
        key = await self._key(kid, alg)
        claims = self._verified_claims(token, key, alg, audience)
        if any(claim in claims for claim in ID_TOKEN_CLAIMS):
            raise InvalidToken("not an access token (an ID token's claims)")
        return claims

    def _verified_claims(self, token: str, key: jwt.PyJWK, alg: str, audience: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=[self.issuer],
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired token") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token not yet valid (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token for another resource (aud)") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token from another issuer (iss)") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token lacks the {exc.claim} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken(f"malformed token ({type(exc).__name__})") from None

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        jwk = await self.keys.key(kid)
        if jwk is None:
            raise InvalidToken("signed with a key the issuer does not publish (kid)")
        if jwk.get("kty") != KEY_TYPES[alg] or jwk.get("alg", alg) != alg:
            raise InvalidToken("the key named by kid is not for this algorithm")
        if self._generation != self.keys.generation:
            self._parsed, self._generation = {}, self.keys.generation
        parsed = self._parsed.get(kid)
        if parsed is None:
            try:
                parsed = jwt.PyJWK(jwk, algorithm=alg)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
                raise InvalidToken(f"unusable key in the JWKS ({type(exc).__name__})") from None
            if len(self._parsed) < KEY_CACHE_MAX:
                self._parsed[kid] = parsed
        return parsed


def _header(token: str) -> tuple[str, str | None]:
    """The algorithm and kid of an unverified token header, refused unless allowlisted."""
    if len(token) > TOKEN_MAX_CHARS:
        raise InvalidToken("token too long")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidToken("malformed token header") from None
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise InvalidToken(f"algorithm not allowed ({str(alg)[:16]})")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES):
        raise InvalidToken("not an access token (typ)")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed kid")
    if "crit" in header:
        raise InvalidToken("critical header extensions are not understood")
    return alg, kid
