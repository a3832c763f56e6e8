"""The built-in OAuth 2.1 authorization server (Issue 14): AUTHORIZATION_SERVER=builtin.

Web AI clients connect only through OAuth; this lets the gateway be its own issuer, tied to what it has: the
operator's login approves, grants carry the gateway's scopes, revocation and audit are the ones named tokens have.

`keys` (signing keys, 0600 file), `tokens` (the one PyJWT module), `records` (what the store keeps), `resources`
(RFC 8707 targets and scopes), `clients` (RFC 7591 and metadata documents), `admission` (registration limits),
`cimd` (the one httpx module: SSRF-guarded fetches), `authorize` and `exchange` (the endpoints' rules, no HTTP),
`grants` (token -> Principal), `pages` (HTML) and `routes` (HTTP).
"""

from collections.abc import Iterable
from dataclasses import dataclass

from mcp_bastion.audit import AuditLog
from mcp_bastion.authserver.authorize import Authorizations
from mcp_bastion.authserver.cimd import CimdFetcher
from mcp_bastion.authserver.clients import Clients
from mcp_bastion.authserver.exchange import Exchange, Lifetimes
from mcp_bastion.authserver.grants import GrantTokens, display_name
from mcp_bastion.authserver.keys import SigningKeys
from mcp_bastion.authserver.resources import Resources
from mcp_bastion.config import Settings
from mcp_bastion.relay import Gateway
from mcp_bastion.store import Store


@dataclass(frozen=True)
class AuthServer:
    """The parts, built once at start-up: `grants` is the authentication stage's hook, the rest serve routes."""

    issuer: str
    keys: SigningKeys
    grants: GrantTokens
    clients: Clients
    authorizations: Authorizations
    exchange: Exchange
    scopes: list[str]


def known_tools(gateway: Gateway, server: str) -> list[str]:
    """The tools a shared server's child listed last (none before it has run): the consent page's narrower choices."""
    backend = gateway.backends.get(server)
    return sorted(backend.tool_schemas) if backend is not None else []


def build_authserver(
    settings: Settings,
    servers: Iterable[str],
    *,
    store: Store,
    audit: AuditLog,
    gateway: Gateway | None = None,
    fetcher: CimdFetcher | None = None,
) -> AuthServer | None:
    """The built-in authorization server when AUTHORIZATION_SERVER=builtin (keys created on first start), else None.

    Raises:
        ConfigError: the signing key file cannot be read or written.
    """
    if settings.authorization_server != "builtin" or settings.public_url is None:
        return None
    issuer = settings.public_url
    names = list(servers)
    keys = SigningKeys(settings.oauth_signing_key_file, token_ttl_s=settings.oauth_access_token_ttl_s)
    keys.ensure()
    resources = Resources(issuer, names)
    grants = GrantTokens(
        store=store, keys=keys, issuer=issuer, resources=resources, exclusive=settings.oauth_issuer is None
    )
    fetcher = fetcher or CimdFetcher(allow_loopback=settings.oauth_cimd_allow_loopback)
    clients = Clients(
        store=store,
        fetcher=fetcher,
        unused_ttl_s=settings.oauth_client_unused_ttl_s,
        used_ttl_s=settings.oauth_grant_ttl_s,
        unapproved_max=settings.oauth_unapproved_clients_max,
    )
    lifetimes = Lifetimes(access_s=settings.oauth_access_token_ttl_s, grant_s=settings.oauth_grant_ttl_s)
    return AuthServer(
        issuer=issuer,
        keys=keys,
        grants=grants,
        clients=clients,
        authorizations=Authorizations(
            store=store,
            clients=clients,
            resources=resources,
            issuer=issuer,
            tools=(lambda server: known_tools(gateway, server)) if gateway is not None else (lambda server: []),
        ),
        exchange=Exchange(store=store, grants=grants, keys=keys, issuer=issuer, lifetimes=lifetimes, audit=audit),
        scopes=[f"server:{name}" for name in names],
    )


__all__ = ["AuthServer", "build_authserver", "display_name"]
