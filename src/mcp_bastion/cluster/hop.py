"""The signed hop: what an instance tells the owner of a session when it forwards a request there.

The first instance authenticated the caller, counted its rate limits and wrote its audit lines; the owner trusts the
hop instead of doing that again, so the hop must be unforgeable and useless elsewhere: it is sealed with the cluster
secret, names the method, path, query and a hash of the body, and expires within HOP_TTL_S. A captured hop can be
replayed only verbatim, only within that window, and only for the one request it signed.
"""

import hashlib
import time
from collections.abc import Callable
from typing import Any

from mcp_bastion.access import Principal
from mcp_bastion.middleware.hop import Hop, HopError
from mcp_bastion.sealing import Sealer, SealError

PURPOSE = "mcp-hop"
HOP_TTL_S = 10.0  # forwarding starts within milliseconds; clocks of a cluster agree far better than this


def _digest(method: str, path: str, query: bytes, body: bytes) -> str:
    return hashlib.sha256(b"%s %s?%s\0%s" % (method.encode(), path.encode(), query, body)).hexdigest()


class HopSigner:
    """Signs hops this instance forwards and verifies hops it receives."""

    def __init__(self, sealer: Sealer, instance_id: str, wall: Callable[[], float] = time.time) -> None:
        self.sealer = sealer
        self.instance_id = instance_id
        self.wall = wall

    def sign(self, hop: Hop, method: str, path: str, query: bytes, body: bytes) -> str:
        """The header value for one forwarded request."""
        payload: dict[str, Any] = {
            "from": self.instance_id,
            "req": _digest(method, path, query, body),
            "rid": hop.request_id,
            "ip": hop.client_ip,
            "who": hop.principal._asdict(),
        }
        return self.sealer.seal(PURPOSE, payload, now=self.wall(), ttl_s=HOP_TTL_S)

    def verify(self, value: str, method: str, path: str, query: bytes, body: bytes) -> Hop:
        """The hop a header carries, if it signs exactly this request and is fresh.

        Raises:
            HopError: forged, expired, another request's, or unreadable.
        """
        try:
            payload = self.sealer.open(PURPOSE, value, now=self.wall())
        except SealError as exc:
            raise HopError(exc.message) from None
        if payload.get("req") != _digest(method, path, query, body):
            raise HopError("the hop signs another request")
        try:
            who = payload["who"]
            principal = Principal(**{name: _tupled(who[name]) for name in Principal._fields if name in who})
            return Hop(principal, str(payload["ip"]), str(payload["rid"]), str(payload["from"]))
        except (KeyError, TypeError) as exc:
            raise HopError("unreadable hop") from exc


def _tupled(value: Any) -> Any:
    """JSON arrays back into the tuples a Principal holds (scopes, audit pairs)."""
    return tuple(_tupled(item) for item in value) if isinstance(value, list) else value
