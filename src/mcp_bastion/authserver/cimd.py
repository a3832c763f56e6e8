"""Client ID Metadata Documents: a `client_id` that is an https URL names a JSON document the gateway fetches.

The fetch is made on behalf of whoever sent the authorization request, so it is guarded against server-side
request forgery: https only, the name resolved once here and every address it resolves to checked (no private,
loopback, link-local, reserved or multicast target; loopback only when a test setting allows it), then the
connection made to that checked address (the name kept for TLS and Host: a second resolution cannot rebind it), no
redirects, a size cap and a time cap. Documents are cached. httpx lives here.
"""

import asyncio
import ipaddress
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

FETCH_TIMEOUT_S = 5.0  # DNS, then the whole HTTP exchange, each: a consent page must not hang on a slow host
MAX_DOCUMENT_BYTES = 16 * 1024  # a client's metadata is a few hundred bytes; more is not a client document
CACHE_S = 300.0  # a document is re-fetched after this (clients change redirect URIs rarely)
CACHE_MAX = 512  # documents remembered; the oldest go first
MAX_URL_CHARS = 2048

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CimdRefused(Exception):
    """A client_id URL the gateway will not fetch, or whose answer is no usable document; the message says why."""


# IPv6 forms that carry an IPv4 address a relay or translator delivers to (RFC 6052 NAT64, RFC 4291 IPv4-compatible);
# the local-use NAT64 prefix (RFC 8215) is translated however its operator likes, so it is refused outright.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def target_allowed(address: IpAddress, *, allow_loopback: bool) -> bool:
    """Whether the gateway may connect to `address` for a client document: the address itself and every IPv4 address
    it embeds (mapped, 6to4, teredo, NAT64, IPv4-compatible) must be allowed."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL:
            return False
        if address.ipv4_mapped is not None:
            return target_allowed(address.ipv4_mapped, allow_loopback=allow_loopback)
        inner = embedded_ipv4(address)
        if inner and not all(target_allowed(a, allow_loopback=allow_loopback) for a in inner):
            return False
    if address.is_loopback:
        return allow_loopback
    return address.is_global and not address.is_multicast


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (6to4, teredo's server and client, NAT64, IPv4-compatible)."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour, *(address.teredo or ())) if a is not None]
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):  # `::` and `::1` are no IPv4 address
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return found


def check_url(url: str) -> tuple[str, int]:
    """(host, port) of a client_id URL the gateway may fetch.

    Raises:
        CimdRefused: not https, no host, credentials, a fragment, a root path, or too long.
    """
    if len(url) > MAX_URL_CHARS:
        raise CimdRefused("client_id URL is too long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad bracketed host or port
        raise CimdRefused("client_id URL is malformed") from None
    if parts.scheme != "https" or not parts.hostname:
        raise CimdRefused("client_id URL must be https")
    if parts.username is not None or parts.fragment or parts.path in ("", "/"):
        raise CimdRefused("client_id URL may not carry credentials or a fragment, and needs a path")
    return parts.hostname, port or 443


class CimdFetcher:
    """Fetches and caches client metadata documents."""

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.allow_loopback = allow_loopback
        # One TLS context for every fetch: loading the CA bundle costs ~20 ms of CPU on the event loop. A client (and
        # its connection pool) is still made per fetch: a pooled connection pinned to an address must never serve a
        # request for another name, whose certificate it never checked.
        self.verify = httpx.create_ssl_context(trust_env=False) if verify is True else verify
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def document(self, url: str) -> dict[str, Any]:
        """The JSON object at `url` (cached).

        Raises:
            CimdRefused
        """
        cached = self._cache.get(url)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        document = await self._fetch(url)
        self._cache[url] = (self.clock() + CACHE_S, document)
        self._cache.move_to_end(url)
        while len(self._cache) > CACHE_MAX:
            self._cache.popitem(last=False)
        return document

    async def _fetch(self, url: str) -> dict[str, Any]:
        host, port = check_url(url)
        address = await self._resolve(host, port)
        parts = urlsplit(url)
        netloc = f"[{address}]" if address.version == 6 else str(address)
        pinned = urlunsplit(("https", f"{netloc}:{port}", parts.path, parts.query, ""))
        headers = {"Host": parts.netloc, "Accept": "application/json"}
        # httpx's own timeouts, never a cancellation from outside: cancelled mid-handshake, httpx leaves the socket
        # open; a body that trickles in is cut by the deadline checked between chunks.
        deadline = time.monotonic() + self.timeout_s
        timeout = httpx.Timeout(self.timeout_s)
        try:
            async with (
                httpx.AsyncClient(
                    verify=self.verify, follow_redirects=False, trust_env=False, timeout=timeout
                ) as client,
                client.stream("GET", pinned, headers=headers, extensions={"sni_hostname": host}) as answer,
            ):
                if answer.status_code != 200:
                    raise CimdRefused(f"client_id URL answered {answer.status_code}")
                body = b""
                async for chunk in answer.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise CimdRefused(f"client document is larger than {MAX_DOCUMENT_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise CimdRefused("client_id URL did not answer in time")
        except httpx.TimeoutException:
            raise CimdRefused("client_id URL did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CimdRefused(f"client_id URL could not be fetched ({exc.__class__.__name__})") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise CimdRefused("client document is not JSON") from None
        if not isinstance(document, dict):
            raise CimdRefused("client document is not a JSON object")
        return document

    async def _resolve(self, host: str, port: int) -> IpAddress:
        """The one address to connect to; every address the name has must be allowed (no mixed answers)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise CimdRefused("client_id host did not resolve in time") from None
        except (OSError, UnicodeError):  # UnicodeError: a name IDNA cannot encode (an empty or 64+ char label)
            raise CimdRefused("client_id host does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses:
            raise CimdRefused("client_id host does not resolve")
        for address in addresses:
            if not target_allowed(address, allow_loopback=self.allow_loopback):
                raise CimdRefused("client_id host resolves to a private or local address")
        return addresses[0]
