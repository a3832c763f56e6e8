"""The authorization server's signing keys: ES256 (P-256), generated at first start, kept in one 0600 file.

The newest key signs; a rotated key stays published in the JWKS (and accepted) until every token it signed has
expired. The file may be rewritten by `mcp-bastion oauth rotate-key` while a server runs: the server re-reads it
when its modification time changes (looked at most once per RELOAD_CHECK_S).
"""

import base64
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mcp_bastion.errors import ConfigError
from mcp_bastion.files import write_private

KID_PREFIX = "bastion-"  # a token signed here names one of these keys: how the gateway tells its tokens apart
KID_BYTES = 8  # random bytes in a key id
RELOAD_CHECK_S = 1.0  # a rotation by the CLI is seen by a running server within this
ALGORITHM = "ES256"  # widely verified (every JOSE library), short signatures, no RSA key generation at start


@dataclass(frozen=True)
class SigningKey:
    """One key: its id, the private key, when it was made and when it stopped signing (None: it signs now)."""

    kid: str
    private: ec.EllipticCurvePrivateKey
    created: float
    retired: float | None = None

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        """The key that verifies its signatures."""
        return self.private.public_key()

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 7517), as the JWKS publishes it."""
        numbers = self.public.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
            "kid": self.kid,
            "use": "sig",
            "alg": ALGORITHM,
        }


class SigningKeys:
    """The key file: the active key, the keys still published, rotation."""

    def __init__(self, path: Path, *, token_ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.token_ttl_s = token_ttl_s
        self.clock = clock
        self._keys: list[SigningKey] = []
        self._mtime_ns = -1
        self._checked = -RELOAD_CHECK_S

    def ensure(self) -> None:
        """Load the key file, creating it with a first key when there is none.

        Raises:
            ConfigError: the file exists but cannot be read or holds no usable key.
        """
        if not os.path.lexists(self.path):
            self._keys = [_new_key(self.clock())]
            self._save()
        self._load()

    def active(self) -> SigningKey:
        """The key that signs now."""
        self._maybe_reload()
        return self._keys[-1]

    def published(self) -> list[SigningKey]:
        """The keys that verify: the active one and retired ones whose tokens may still be unexpired."""
        self._maybe_reload()
        now = self.clock()
        return [k for k in self._keys if k.retired is None or k.retired + self.token_ttl_s > now]

    def verifier(self, kid: str) -> SigningKey | None:
        """The published key with that id."""
        return next((k for k in self.published() if k.kid == kid), None)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (RFC 7517 section 5)."""
        return {"keys": [k.jwk() for k in self.published()]}

    def rotate(self) -> SigningKey:
        """Retire the active key (kept published until its tokens expire) and sign with a new one from now on."""
        self._load()
        now = self.clock()
        kept = [k if k.retired is not None else SigningKey(k.kid, k.private, k.created, now) for k in self._keys]
        self._keys = [k for k in kept if k.retired is None or k.retired + self.token_ttl_s > now]
        self._keys.append(_new_key(now))
        self._save()
        self._load()
        return self._keys[-1]

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S and self._keys:
            return
        self._checked = now
        try:
            changed = os.stat(self.path).st_mtime_ns != self._mtime_ns
        except OSError:
            changed = False  # keep signing with what was loaded; the file comes back with the next rotation
        if changed or not self._keys:
            self._load()

    def _load(self) -> None:
        try:
            stat = os.stat(self.path)
            document = json.loads(self.path.read_text(encoding="utf-8"))
            keys = [_key_from(entry) for entry in document["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: cannot read the OAuth signing keys ({exc.__class__.__name__})") from None
        if not keys or keys[-1].retired is not None:
            raise ConfigError(f"{self.path}: no active OAuth signing key; run `mcp-bastion oauth rotate-key`")
        self._keys = keys
        self._mtime_ns = stat.st_mtime_ns

    def _save(self) -> None:
        entries = [
            {
                "kid": k.kid,
                "created": k.created,
                "retired": k.retired,
                "pem": k.private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode("ascii"),
            }
            for k in self._keys
        ]
        write_private(self.path, json.dumps({"keys": entries}, indent=1) + "\n")


def _new_key(now: float) -> SigningKey:
    return SigningKey(KID_PREFIX + secrets.token_hex(KID_BYTES), ec.generate_private_key(ec.SECP256R1()), now)


def _key_from(entry: dict[str, Any]) -> SigningKey:
    private = serialization.load_pem_private_key(entry["pem"].encode("ascii"), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not str(entry["kid"]).startswith(KID_PREFIX):
        raise ValueError("not a P-256 key of this gateway")
    return SigningKey(str(entry["kid"]), private, float(entry["created"]), entry.get("retired"))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
