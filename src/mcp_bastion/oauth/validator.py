"""JWT access tokens (RFC 9068) checked strictly: the one module that imports PyJWT.

Signature against the issuer's JWKS with an explicit algorithm allowlist (asymmetric only: `none` and HMAC are never
accepted, so a public key can never be used as a shared secret), `iss` exact, `aud` containing the resource (RFC 8707
binding: a token for another resource, even from the same issuer, is refused), `exp` required, `nbf` and `iat` checked,
each with a small leeway, and `typ` `at+jwt` (or plain `JWT`, which most IdPs still send).
"""

from typing import Any

import jwt

from mcp_bastion.oauth.jwks import KeySource

ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})  # what Keycloak, Entra, Okta, Auth0, Google and Dex sign with
KEY_TYPES = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})  # RFC 9068 section 2.1, and what IdPs still send
TOKEN_MAX_CHARS = 8192  # an access token past this is no access token (headers are capped at 16 KiB anyway)
KEY_CACHE_MAX = 64  # parsed keys kept per key set


class InvalidToken(Exception):
    """The token is refused; the message is the reason for the audit line (never the token or its claims)."""


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts: a JWS compact serialization (a named token never has a dot)."""
    return token.count(".") == 2 and len(token) <= TOKEN_MAX_CHARS


class TokenValidator:
    """Validates JWT access tokens of one issuer against its keys."""

    def __init__(self, keys: KeySource, *, issuer: str, leeway_s: float) -> None:
        self.keys = keys
        self.issuer = issuer
        self.leeway_s = leeway_s
        self._parsed: dict[str | None, jwt.PyJWK] = {}
        self._generation = -1

    async def claims(self, token: str, audience: str) -> dict[str, Any]:
        """The verified claims of `token` if it is valid for `audience`.

        Raises:
            InvalidToken: why it is refused.
            KeysUnavailable: the issuer's keys cannot be had (the caller answers 503).
        """
        alg, kid = _header(token)
        key = await self._key(kid, alg)
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
