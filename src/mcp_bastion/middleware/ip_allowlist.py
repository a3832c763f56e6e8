"""Client address from the socket (forwarded headers only from trusted proxies) checked against ALLOWED_IPS.

Exactly one forwarded header is believed (Issue 8 item 3): FORWARDED_HEADER, `X-Forwarded-For` by default or
`Forwarded` when chosen, and only from a peer in TRUSTED_PROXIES. The other header is ignored, whatever it says:
a proxy that sets one usually passes the other through from the client. Repeated lines of the chosen header are
combined in order (as RFC 9110 says a list header's lines are), and the right-most hop that is not itself a
trusted proxy is the client.
"""

import ipaddress
from collections.abc import Iterable

from mcp_bastion.access import CONTEXT_KEY, context_of
from mcp_bastion.audit import AuditLog
from mcp_bastion.errors import ConfigError
from mcp_bastion.middleware.reply import refuse
from mcp_bastion.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
EVERYONE = ("0.0.0.0", "0.0.0.0/0", "::/0", "*")
MAPPED_PREFIX = 96  # ::ffff:0:0/96 holds the IPv4-mapped addresses
VERDICT_CACHE_MAX = 65_536  # peers remembered; the allowlist is fixed at start, so a verdict never goes stale
FORWARDED_HEADERS = {"x-forwarded-for": b"x-forwarded-for", "forwarded": b"forwarded"}  # FORWARDED_HEADER choices
DEFAULT_FORWARDED_HEADER = "X-Forwarded-For"  # what nginx, HAProxy and most load balancers set


def parse_networks(values: Iterable[str], setting: str) -> list[Network]:
    """Addresses and CIDR ranges; `0.0.0.0` means everyone.

    Raises:
        ConfigError: a value that is not an address or a network.
    """
    networks: list[Network] = []
    for value in values:
        if value in EVERYONE:
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(f"{setting}: {value!r} is not an IP address or CIDR range") from None
        networks.append(_unmapped(network))
    return networks


def _unmapped(network: Network) -> Network:
    """An IPv4-mapped IPv6 range (::ffff:a.b.c.d/96+n) is the IPv4 range a.b.c.d/n: clients are compared as IPv4."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= MAPPED_PREFIX:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - MAPPED_PREFIX}")
    return network


def address(text: str) -> Address | None:
    """Parse an address; IPv4-mapped IPv6 becomes IPv4; brackets, ports and zone ids are stripped."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def forwarded_header_name(value: str) -> bytes:
    """FORWARDED_HEADER as the (lowercase) ASGI header name.

    Raises:
        ConfigError: anything but X-Forwarded-For or Forwarded.
    """
    name = FORWARDED_HEADERS.get(value.strip().lower())
    if name is None:
        raise ConfigError(f"FORWARDED_HEADER: {value!r} is not X-Forwarded-For or Forwarded (the one your proxy sets)")
    return name


def forwarded_chain(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Hops named by header `name` (its lines combined in order), left (client) to right (nearest proxy).

    A hop that names no address (an empty X-Forwarded-For item, a Forwarded element without `for=`) is kept as
    "", which the caller treats as garbled: skipping it would promote the hop to its left.
    """
    lines = [value.decode("latin-1") for key, value in headers if key == name and value.strip()]
    if not lines:
        return []
    joined = ",".join(lines)
    if name == b"forwarded":
        return [_forwarded_for(element) for element in _split_unquoted(joined, ",")]
    return [hop.strip() for hop in joined.split(",")]


def _forwarded_for(element: str) -> str:
    """The `for=` value of one RFC 7239 element ("" when it has none)."""
    found = ""
    for pair in _split_unquoted(element, ";"):
        key, _, value = pair.strip().partition("=")
        if key.strip().lower() == "for":
            found = value.strip()
    return found


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split on `separator` outside RFC 7230 quoted strings (an address may be quoted: for="[2001:db8::1]:80")."""
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


class IpAllowlistMiddleware:
    """403 for addresses outside ALLOWED_IPS; records the client IP for every later stage."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed: list[Network],
        trusted: list[Network],
        audit: AuditLog,
        forwarded_header: str = DEFAULT_FORWARDED_HEADER,
    ) -> None:
        self.app = app
        self.allowed = allowed
        self.trusted = trusted
        self.forwarded_header = forwarded_header_name(forwarded_header)
        self.audit = audit
        self.everyone = any(n.prefixlen == 0 for n in allowed)
        self._verdicts: dict[str, tuple[bool, str]] = {}  # peer → (allowed, client ip) when no proxy is involved

    def client_ip(self, scope: Scope) -> Address | None:
        """The peer, or the right-most untrusted hop when the peer is a trusted proxy."""
        peer = address(scope["client"][0]) if scope.get("client") else None
        if peer is None or not self.trusted or not self._in(peer, self.trusted):
            return peer
        client: Address | None = peer
        for hop in reversed(forwarded_chain(scope["headers"], self.forwarded_header)):
            parsed = address(hop)
            if parsed is None:
                return None  # a garbled chain from a trusted proxy: trust nothing past it
            client = parsed
            if not self._in(parsed, self.trusted):
                break
        return client

    def _decide(self, scope: Scope) -> tuple[bool, str]:
        peer = scope["client"][0] if scope.get("client") else ""
        cached = self._verdicts.get(peer)
        if cached is not None:
            return cached
        ip = self.client_ip(scope)
        verdict = (self.everyone or (ip is not None and self._in(ip, self.allowed)), str(ip) if ip else "unknown")
        peer_ip = address(peer)
        if peer_ip is None or not self._in(peer_ip, self.trusted):  # a proxy's verdict depends on its headers
            if len(self._verdicts) > VERDICT_CACHE_MAX:
                self._verdicts.clear()
            self._verdicts[peer] = verdict
        return verdict

    @staticmethod
    def _in(ip: Address, networks: list[Network]) -> bool:
        return any(ip.version == n.version and ip in n for n in networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed, client_ip = self._decide(scope)
        ctx = context_of(scope).with_client(client_ip)
        scope[CONTEXT_KEY] = ctx
        if allowed:
            await self.app(scope, receive, send)
            return
        self.audit.record(
            "ip.denied",
            outcome="denied",
            request_id=ctx.request_id,
            ip=client_ip,
            path=scope.get("path"),
            method=scope.get("method"),
        )
        await refuse(scope, send, 403, "Access denied", "Your IP address is not allowed")
