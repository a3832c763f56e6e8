"""How many client registrations (RFC 7591) are taken: per address block and from all addresses together.

The pipeline's per-address limit already counts every public request, but an IPv6 host has a whole /64 to send
from, and unapproved registrations from many addresses live OAUTH_CLIENT_UNUSED_TTL_S each: both are bounded here,
with the limiter's counters (shared between instances when REDIS_URL is set).
"""

import ipaddress

from mcp_bastion.ratelimit import Limit, Limiter, Verdict

IPV6_HOST_PREFIX = 64  # what one IPv6 host is given (RFC 6177): its registrations are counted together


def address_block(client_ip: str) -> str:
    """What registrations are counted by: an IPv6 address's /64, any other address itself."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, IPV6_HOST_PREFIX), strict=False))
    return client_ip


class RegistrationLimits:
    """The per-block limit is the per-address one (RATE_LIMIT_*); `total` registrations per `window_s` in all."""

    def __init__(self, limiter: Limiter, *, total: int, window_s: float) -> None:
        self.limiter = limiter
        per_ip = limiter.per_ip
        self.per_block = Limit("oauth-register-block", per_ip.amount, per_ip.window_s, "registrations")
        self.total = Limit("oauth-register-all", total, max(1, int(window_s)), "registrations")

    async def refusal(self, client_ip: str) -> Verdict | None:
        """None when a registration from `client_ip` may go ahead; else the verdict that refuses it.

        Raises:
            DependencyUnavailable: the shared counters cannot answer (fail closed: 503).
        """
        block = await self.limiter.hit(self.per_block, address_block(client_ip))
        if not block.allowed:
            return block
        total = await self.limiter.hit(self.total, "all")
        return None if total.allowed else total
