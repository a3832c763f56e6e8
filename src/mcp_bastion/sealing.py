"""Sealed values: small JSON payloads the gateway hands to a client and must get back unchanged.

A sealed value is `base64url(json) "." base64url(HMAC-SHA256(key, purpose "\\0" json))`. The purpose separates
uses (a session id can never be replayed as a request state), the payload carries its own expiry (`exp`, seconds
since the epoch), and the MAC is checked in constant time before anything in the payload is read. No I/O; the
caller passes the time, so tests use an injected clock. The payload is readable by the client (not encrypted):
never seal a secret.
"""

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from mcp_bastion.errors import INVALID_PARAMS, GatewayError

SEAL_KEY_BYTES = 32  # HMAC-SHA256 key size; a per-process key when no cluster secret is configured
SEALED_MAX_CHARS = 4096  # a sealed value arrives in a header or a JSON field: refuse anything longer unread
EXPIRY_FIELD = "exp"


class SealError(GatewayError):
    """A sealed value that is malformed, forged, for another purpose, or expired (callers may map it further)."""

    http_status = 400
    jsonrpc_code = INVALID_PARAMS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Seals and opens payloads with one key (from CLUSTER_SECRET in cluster mode, else random per process)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(SEAL_KEY_BYTES)

    @classmethod
    def from_secret(cls, secret: str) -> "Sealer":
        """A sealer whose key derives from a shared secret, so every instance of a cluster opens the same values."""
        return cls(hashlib.sha256(b"mcp-bastion seal v1\0" + secret.encode("utf-8")).digest())

    def _mac(self, purpose: str, body: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode("ascii") + b"\0" + body, hashlib.sha256).digest()

    def tag(self, purpose: str, data: bytes) -> str:
        """A keyed digest of `data` (hex): a sealed payload may carry it where a plain hash could be confirmed by
        guessing `data`."""
        return self._mac(purpose, data).hex()

    def seal(self, purpose: str, payload: dict[str, Any], *, now: float, ttl_s: float) -> str:
        """Seal `payload` for `purpose`, valid for `ttl_s` seconds from `now`."""
        body = json.dumps({**payload, EXPIRY_FIELD: round(now + ttl_s, 3)}, separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._mac(purpose, body))}"

    def open(self, purpose: str, sealed: str, *, now: float) -> dict[str, Any]:
        """The payload of a value sealed for `purpose` (without `exp`); SealError if it is not exactly that."""
        if not isinstance(sealed, str) or len(sealed) > SEALED_MAX_CHARS or sealed.count(".") != 1:
            raise SealError("malformed sealed value")
        body_text, mac_text = sealed.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError as exc:
            raise SealError("malformed sealed value") from exc
        if not hmac.compare_digest(mac, self._mac(purpose, body)):
            raise SealError("sealed value does not verify")
        payload: dict[str, Any] = json.loads(body)  # only this key's holder made `body`: it is our own JSON object
        expiry = payload.pop(EXPIRY_FIELD, None)
        if not isinstance(expiry, (int, float)) or now >= expiry:
            raise SealError("sealed value expired")
        return payload
