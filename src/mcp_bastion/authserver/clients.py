"""Clients: Dynamic Client Registration (RFC 7591), Client ID Metadata Documents, and redirect URI rules.

Every client is public (PKCE, no secret): `token_endpoint_auth_method` is always `none`. Redirect URIs are https, or
plain http on a loopback address (RFC 8252 native apps); they match exactly, except that a loopback redirect may use
any port (RFC 8252 section 7.3).
"""

import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mcp_bastion.authserver.cimd import CimdFetcher, CimdRefused
from mcp_bastion.authserver.records import CLIENT, Client, from_record, to_record
from mcp_bastion.config import is_loopback
from mcp_bastion.store import Store

MAX_REDIRECT_URIS = 10
MAX_URI_CHARS = 2048
MAX_NAME_CHARS = 100
CLIENT_ID_BYTES = 16
GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})
# A redirect's authority: a DNS name, an IPv4 address or a bracketed IPv6 one, and a port. Nothing else, since the
# consent page's CSP names this origin (a `;` or a space there would add directives).
AUTHORITY = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# A redirect URI's characters: printable ASCII without space or backslash. Parsers disagree on the rest (a browser
# reads `\` as `/`, `urlsplit` drops CR, LF and tab), and a redirect goes to the raw text, not to what Python parsed.
URI_CHARS = re.compile(r"[!-\[\]-~]+")
DEFAULT_NAME = "unnamed client"


class BadClient(Exception):
    """A registration or client document the gateway refuses; `error` is the RFC 7591 / 6749 error code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def redirect_problem(uri: Any) -> str | None:
    """Why `uri` cannot be a redirect URI here, or None."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_CHARS:
        return "a redirect URI is a string of at most 2048 characters"
    if not URI_CHARS.fullmatch(uri):
        return "a redirect URI is printable ASCII, without spaces or backslashes"
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "a redirect URI must be a URL"  # e.g. an unclosed or invalid bracketed IPv6 host
    if parts.fragment or "#" in uri:
        return "a redirect URI may not hold a fragment"
    if parts.username is not None or parts.password is not None:
        return "a redirect URI may not hold credentials"
    if not AUTHORITY.fullmatch(parts.netloc):
        return "a redirect URI's host must be a DNS name or an IP address"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return None
    return "redirect URIs must be https, or http on a loopback address"


def redirect_target(registered: str, presented: str) -> str | None:
    """Where to redirect for a presented redirect URI: the registered one when they match exactly, or a loopback http
    one with only its port replaced (RFC 8252 section 7.3); None when the presented URI is not one of them.

    The answer is built from the registered URI, never taken from the request, and the presented text must equal it.
    """
    if redirect_problem(presented) is not None:
        return None
    if registered == presented:
        return registered
    a, b = urlsplit(registered), urlsplit(presented)
    if a.scheme != "http" or not a.hostname or not is_loopback(a.hostname):
        return None
    try:
        port = b.port
    except ValueError:
        return None  # a malformed port is no match
    netloc = without_port(a.netloc) + (f":{port}" if port is not None else "")
    target = urlunsplit(a._replace(netloc=netloc))
    return target if target == presented else None


def without_port(netloc: str) -> str:
    """An authority (as AUTHORITY allows) without its port."""
    host, colon, port = netloc.rpartition(":")
    return host if colon and port.isdigit() and not netloc.endswith("]") else netloc


def client_name(value: Any) -> str:
    """A display name from client metadata: printable, bounded; the default when absent."""
    if not isinstance(value, str):
        return DEFAULT_NAME
    cleaned = "".join(ch for ch in value if ch.isprintable()).strip()[:MAX_NAME_CHARS]
    return cleaned or DEFAULT_NAME


def validated_metadata(data: Any) -> tuple[str, tuple[str, ...]]:
    """(client name, redirect URIs) of registration metadata or a client document.

    Raises:
        BadClient
    """
    if not isinstance(data, dict):
        raise BadClient("invalid_client_metadata", "the body must be a JSON object")
    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not 1 <= len(uris) <= MAX_REDIRECT_URIS:
        raise BadClient("invalid_redirect_uri", f"redirect_uris: a list of 1-{MAX_REDIRECT_URIS} URIs")
    for uri in uris:
        problem = redirect_problem(uri)
        if problem is not None:
            raise BadClient("invalid_redirect_uri", problem)
    grant_types = data.get("grant_types", ["authorization_code"])
    if not _strings(grant_types) or not set(grant_types) <= GRANT_TYPES:
        raise BadClient("invalid_client_metadata", "grant_types: only authorization_code and refresh_token")
    response_types = data.get("response_types", ["code"])
    if not _strings(response_types) or set(response_types) != {"code"}:
        raise BadClient("invalid_client_metadata", "response_types: only code")
    return client_name(data.get("client_name")), tuple(uris)


def _strings(value: Any) -> bool:
    """Whether a metadata value is a list of strings (anything else, e.g. a list of objects, is refused)."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class Clients:
    """Registered clients (in the store, forgotten when unused) and metadata-document clients (fetched)."""

    def __init__(
        self,
        *,
        store: Store,
        fetcher: CimdFetcher,
        unused_ttl_s: float,
        used_ttl_s: float,
        unapproved_max: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.unapproved_max = unapproved_max  # registrations per unused_ttl_s from every address (routes count them)
        self.store = store
        self.fetcher = fetcher
        self.unused_ttl_s = unused_ttl_s
        self.used_ttl_s = used_ttl_s  # an approved client lives as long as its grant can (then unused_ttl_s more)
        self.clock = clock

    async def register(self, data: Any) -> tuple[Client, dict[str, Any]]:
        """Register a client (RFC 7591); the client and the answer's body.

        Raises:
            BadClient
        """
        name, uris = validated_metadata(data)
        client = Client("mcpc_" + secrets.token_urlsafe(CLIENT_ID_BYTES), name, uris, self.clock())
        await self.keep(client)
        body = {
            "client_id": client.client_id,
            "client_id_issued_at": int(client.created),
            "client_name": name,
            "redirect_uris": list(uris),
            "grant_types": sorted(GRANT_TYPES),
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        return client, body

    async def keep(self, client: Client, *, approved: bool = False) -> None:
        """Store (or extend) a registration: `unused_ttl_s` from now, or past its grant's life once approved."""
        if client.metadata_document:
            return  # nothing to keep: its document is the registration
        ttl = self.unused_ttl_s + (self.used_ttl_s if approved else 0.0)
        await self.store.put_record(CLIENT, client.client_id, to_record(client), self.clock() + ttl)

    async def find(self, client_id: str) -> Client:
        """The client an authorization request names.

        Raises:
            BadClient: unknown or expired registration; a metadata document refused or invalid.
        """
        if client_id.startswith("https://"):
            return await self._document_client(client_id)
        data = await self.store.get_record(CLIENT, client_id) if len(client_id) <= MAX_URI_CHARS else None
        if data is None:
            raise BadClient("invalid_client", "unknown client_id (registrations expire when unused)")
        return from_record(Client, data)

    async def _document_client(self, url: str) -> Client:
        try:
            document = await self.fetcher.document(url)
        except CimdRefused as exc:
            raise BadClient("invalid_client", str(exc)) from None
        if document.get("client_id") != url:
            raise BadClient("invalid_client", "the client document's client_id is not its URL")
        if document.get("token_endpoint_auth_method", "none") != "none":
            raise BadClient("invalid_client", "only public clients (token_endpoint_auth_method none) are served")
        name, uris = validated_metadata(document)
        return Client(url, name, uris, self.clock(), metadata_document=True)
