"""Which socket addresses may present a hop: the other instances, known by their advertise URLs in the registry.

A hop header from any other address is no hop at all: the pipeline strips it and treats the request like any other
(address allowlist, authentication), so an outsider learns nothing about cluster mode and gets no work done before
the allowlist. An advertise host that is an IP literal is matched as is; a name (docker compose's service names) is
resolved, and re-resolved when an unknown address presents a hop (at most once per PEER_REFRESH_MIN_S, with the
registry read fresh, so an instance that just joined is recognised at once).
"""

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from mcp_bastion.cluster.registry import Registry
from mcp_bastion.errors import DependencyUnavailable

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PEER_REFRESH_MIN_S = 1.0  # an unknown address presenting hops costs at most one registry read and lookup a second
RESOLVE_S = 1.0  # one name lookup of a peer's advertise host (a cluster's DNS answers in milliseconds)


def _address(text: str) -> IpAddress | None:
    try:
        found = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return found.ipv4_mapped or found if isinstance(found, ipaddress.IPv6Address) else found


class Peers:
    """The addresses of the live instances, from the registry's view."""

    def __init__(self, registry: Registry, wall: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.wall = wall
        self._resolved: dict[str, frozenset[IpAddress]] = {}  # advertise host name -> its addresses
        self._refreshed = -PEER_REFRESH_MIN_S
        self._refresh: asyncio.Future[None] | None = None

    async def admits(self, address: str) -> bool:
        """Whether `address` (a socket's peer address) is one of the cluster's instances."""
        found = _address(address)
        if found is None:
            return False
        if found in self._known():
            return True
        if self._refresh is None and self.wall() - self._refreshed < PEER_REFRESH_MIN_S:
            return False
        if self._refresh is None:  # one refresh at a time; concurrent hops wait for it
            self._refreshed = self.wall()
            self._refresh = asyncio.ensure_future(self._reread())
            self._refresh.add_done_callback(self._refreshed_now)
        await asyncio.shield(self._refresh)
        return found in self._known()

    def _refreshed_now(self, _: "asyncio.Future[None]") -> None:
        self._refresh = None

    def _known(self) -> set[IpAddress]:
        known: set[IpAddress] = set()
        for host in self._hosts():
            literal = _address(host)
            known.update([literal] if literal is not None else self._resolved.get(host, ()))
        return known

    def _hosts(self) -> set[str]:
        hosts = set()
        for info in list(self.registry.view.values()):
            with contextlib.suppress(ValueError):
                host = urlsplit(info.advertise_url).hostname
                if host:
                    hosts.add(host)
        return hosts

    async def _reread(self) -> None:
        with contextlib.suppress(DependencyUnavailable):  # Redis down: the view as it is decides
            await self.registry.instances()
        loop = asyncio.get_running_loop()
        for host in self._hosts():
            if _address(host) is not None:
                continue
            try:
                infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_S)
            except (OSError, TimeoutError):
                continue  # unresolvable now: its hops are not admitted until it resolves
            self._resolved[host] = frozenset(a for a in (_address(str(i[4][0])) for i in infos) if a is not None)
