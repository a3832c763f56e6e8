"""Access tokens of the built-in authorization server: JWTs (RFC 9068 `at+jwt`) signed with `keys`. PyJWT lives here.

A token names its grant (`gid`): the gateway checks the signature locally, then the grant in the store, so revoking
the grant ends every token it issued at once, on every instance.
"""

import secrets
from dataclasses import dataclass
from typing import Any

import jwt

from mcp_bastion.authserver.keys import ALGORITHM, KID_PREFIX, SigningKeys

TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068's media type, not a secret
JTI_BYTES = 16
LEEWAY_S = 5.0  # clock skew between instances sharing one key file: they verify each other's tokens
MAX_TOKEN_CHARS = 4096  # a header of ours is ~100 bytes, claims < 1 KiB: anything longer is not one of ours


class BadToken(Exception):
    """A token of ours that does not verify (signature, issuer, expiry, type); the message says which, never the
    token."""


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says."""

    grant_id: str
    client_id: str
    audience: str
    scopes: tuple[str, ...]
    expires: float
    token_id: str


def is_ours(token: str, keys: SigningKeys) -> bool:
    """Whether a bearer token claims to be signed by one of our keys (header only; nothing verified yet)."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return False
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return False
    return isinstance(kid, str) and kid.startswith(KID_PREFIX)


def issue(keys: SigningKeys, *, issuer: str, claims: AccessClaims, now: float) -> str:
    """Sign an access token for `claims`."""
    key = keys.active()
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": claims.audience,
        "sub": claims.grant_id,
        "client_id": claims.client_id,
        "gid": claims.grant_id,
        "scope": " ".join(claims.scopes),
        "iat": int(now),
        "nbf": int(now),
        "exp": int(claims.expires),
        "jti": claims.token_id,
    }
    return jwt.encode(payload, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": TOKEN_TYPE})


def new_token_id() -> str:
    """A `jti`: names a token in audit lines instead of the token."""
    return secrets.token_hex(JTI_BYTES)


def verify(token: str, keys: SigningKeys, *, issuer: str) -> AccessClaims:
    """The claims of a valid token of ours.

    Raises:
        BadToken: unknown key, bad signature, wrong issuer or type, expired or not yet valid, claims missing.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise BadToken("malformed token") from None
    key = keys.verifier(str(header.get("kid")))
    if key is None:
        raise BadToken("unknown or retired signing key")
    if header.get("typ") != TOKEN_TYPE:
        raise BadToken("not an access token")
    try:
        payload = jwt.decode(
            token,
            key.public,
            algorithms=[ALGORITHM],
            issuer=issuer,
            leeway=LEEWAY_S,
            options={"verify_aud": False, "require": ["exp", "iat", "iss", "aud", "gid", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise BadToken("expired token") from None
    except jwt.PyJWTError as exc:
        raise BadToken(f"invalid token ({exc.__class__.__name__})") from None
    return AccessClaims(
        grant_id=str(payload["gid"]),
        client_id=str(payload.get("client_id", "")),
        audience=str(payload["aud"]),
        scopes=tuple(str(payload.get("scope", "")).split()),
        expires=float(payload["exp"]),
        token_id=str(payload["jti"]),
    )
