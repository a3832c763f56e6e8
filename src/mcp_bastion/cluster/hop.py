"""The signed hop: what an instance tells the owner of a session when it forwards a request there.

The first instance authenticated the caller, counted its rate limits and wrote its audit lines; the owner trusts the
hop instead of doing that again, so the hop must be unforgeable and useless elsewhere: it is sealed with the cluster
secret, names the instance it is for, the method, path, query, the MCP headers that choose the session, stream and
call (SIGNED_HEADERS) and a hash of the body, expires within HOP_TTL_S, and is accepted once (its id is remembered
for as long as it is valid). A captured hop can be neither replayed nor re-aimed at another session or instance.
"""

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from mcp_bastion.access import Principal
from mcp_bastion.middleware.hop import Hop, HopError, HopRequest
from mcp_bastion.sealing import Sealer, SealError

PURPOSE = "mcp-hop"
HOP_TTL_S = 10.0  # forwarding starts within milliseconds; clocks of a cluster agree far better than this
HOP_ID_BYTES = 12  # the random id that makes a hop single-use
# Hops remembered for single use: 10 s of 10,000 forwarded requests/s, ~10 MB; past it a hop is refused (fail closed)
# until older ones expire.
SEEN_HOPS_MAX = 100_000
# The request headers a hop binds: which session, which stream position, which protocol revision, which call.
SIGNED_HEADERS = (b"mcp-session-id", b"last-event-id", b"mcp-protocol-version", b"mcp-method", b"mcp-name")


def _digest(request: HopRequest) -> str:
    digest = hashlib.sha256(b"%s %s?%s\0" % (request.method.encode(), request.path.encode(), request.query))
    for name in SIGNED_HEADERS:
        for key, value in request.headers:
            if key == name:
                digest.update(b"%s:%s\0" % (name, value))
    digest.update(b"\0" + request.body)
    return digest.hexdigest()


class HopSigner:
    """Signs hops this instance forwards and verifies hops it receives."""

    def __init__(self, sealer: Sealer, instance_id: str, wall: Callable[[], float] = time.time) -> None:
        self.sealer = sealer
        self.instance_id = instance_id
        self.wall = wall
        self._seen: dict[str, float] = {}  # hop id -> when it expires, in arrival order (so oldest first)

    def sign(self, hop: Hop, request: HopRequest, to: str) -> str:
        """The header value for one request forwarded to instance `to`."""
        payload: dict[str, Any] = {
            "from": self.instance_id,
            "to": to,
            "id": secrets.token_urlsafe(HOP_ID_BYTES),
            "req": _digest(request),
            "rid": hop.request_id,
            "ip": hop.client_ip,
            "who": hop.principal._asdict(),
        }
        return self.sealer.seal(PURPOSE, payload, now=self.wall(), ttl_s=HOP_TTL_S)

    def verify(self, value: str, request: HopRequest) -> Hop:
        """The hop a header carries, if it signs exactly this request, for this instance, is fresh and unused.

        Raises:
            HopError: forged, expired, another request's or instance's, used before, or unreadable.
        """
        now = self.wall()
        try:
            payload = self.sealer.open(PURPOSE, value, now=now)
        except SealError as exc:
            raise HopError(exc.message) from None
        if payload.get("to") != self.instance_id:
            raise HopError("the hop is for another instance")
        if payload.get("req") != _digest(request):
            raise HopError("the hop signs another request")
        self._use(str(payload.get("id", "")), now)
        try:
            who = payload["who"]
            principal = Principal(**{name: _tupled(who[name]) for name in Principal._fields if name in who})
            return Hop(principal, str(payload["ip"]), str(payload["rid"]), str(payload["from"]))
        except (KeyError, TypeError) as exc:
            raise HopError("unreadable hop") from exc

    def _use(self, hop_id: str, now: float) -> None:
        """Accept a hop id once while it is valid.

        Raises:
            HopError: no id, used before, or too many hops in flight to remember another.
        """
        if not hop_id:
            raise HopError("unreadable hop")
        while self._seen:  # oldest first: stop at the first one still valid
            oldest = next(iter(self._seen))
            if self._seen[oldest] > now:
                break
            del self._seen[oldest]
        if hop_id in self._seen:
            raise HopError("the hop was used before")
        if len(self._seen) >= SEEN_HOPS_MAX:
            raise HopError("too many hops in flight")
        self._seen[hop_id] = now + HOP_TTL_S


def _tupled(value: Any) -> Any:
    """JSON arrays back into the tuples a Principal holds (scopes, audit pairs)."""
    return tuple(_tupled(item) for item in value) if isinstance(value, list) else value
