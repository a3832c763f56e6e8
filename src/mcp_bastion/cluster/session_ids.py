"""Session ids in cluster mode: sealed values that name the owner instance and the principal, so any instance can
route a request for a session to its owner, and a client can neither forge an id nor point one at another owner.

The payload is readable by the client (sealed, not encrypted), so it holds a keyed digest of the principal (an HMAC
with the cluster's key), never its name nor a plain hash a holder could confirm by guessing the name.
"""

import secrets
import time
from collections.abc import Callable
from typing import NamedTuple

from mcp_bastion.sealing import Sealer, SealError

PURPOSE = "mcp-session"
PRINCIPAL_PURPOSE = "mcp-session-principal"  # the principal's digest: its own purpose, never a valid seal's MAC
SESSION_ID_TTL_S = 30 * 86_400.0  # far past any idle timeout: the session ends first, never its id
NONCE_BYTES = 16  # the random part: two sessions never share an id
PRINCIPAL_HASH_CHARS = 32  # 128 bits of HMAC-SHA256: binds the id to its principal without naming it


class SessionOwner(NamedTuple):
    """Who holds a session: the owner instance, and whether the caller is the principal the id was minted for."""

    instance: str
    same_principal: bool


class SessionIds:
    """Mints and reads this cluster's session ids."""

    def __init__(self, sealer: Sealer, instance_id: str, wall: Callable[[], float] = time.time) -> None:
        self.sealer = sealer
        self.instance_id = instance_id
        self.wall = wall

    def mint(self, principal: str | None) -> str:
        """A new session id owned by this instance, bound to `principal`."""
        payload = {"i": self.instance_id, "p": self._principal(principal), "n": secrets.token_urlsafe(NONCE_BYTES)}
        return self.sealer.seal(PURPOSE, payload, now=self.wall(), ttl_s=SESSION_ID_TTL_S)

    def owner(self, session_id: str, principal: str | None) -> SessionOwner | None:
        """The owner of a session id this cluster minted, or None when it is not one (forged, expired, malformed)."""
        try:
            payload = self.sealer.open(PURPOSE, session_id, now=self.wall())
        except SealError:
            return None
        instance = payload.get("i")
        if not isinstance(instance, str):
            return None
        return SessionOwner(instance, payload.get("p") == self._principal(principal))

    def _principal(self, principal: str | None) -> str:
        """The principal as a sealed id carries it: keyed, so only the cluster can compute or confirm it."""
        return self.sealer.tag(PRINCIPAL_PURPOSE, (principal or "").encode())[:PRINCIPAL_HASH_CHARS]
