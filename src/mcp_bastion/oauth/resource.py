"""What the gateway says about itself as an OAuth resource: identifiers, Protected Resource Metadata, challenges.

Pure: no I/O. Resource identifiers (RFC 8707, RFC 9728) derive from PUBLIC_URL: the gateway itself is `PUBLIC_URL`
(management routes), each MCP server is `PUBLIC_URL/mcp/NAME`, the URL MCP clients connect to and send as
`resource`. PUBLIC_URL is only an identifier: nothing here or elsewhere ever calls it.
"""

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mcp_bastion.config import Settings
from mcp_bastion.security import ADMIN_SCOPE

PRM_PATH = "/.well-known/oauth-protected-resource"
METADATA_MAX_AGE_S = 300  # clients may cache the metadata this long; an operator's change shows within 5 minutes


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """The OAuth settings a resource server needs, read once from Settings."""

    public_url: str
    issuer: str
    jwks_url: str | None = None
    audience: str | None = None
    scope_prefix: str = ""
    principal_claim: str = "sub"
    leeway_s: float = 30.0
    introspection_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    builtin_issuer: str | None = None  # Issue 14: the gateway's own authorization server, named first in the PRM
    allow_admin: bool = False  # OAUTH_ALLOW_ADMIN_SCOPE: a token's `admin` scope counts (refused by default)

    @property
    def issuer_host(self) -> str:
        """The issuer's host[:port], the middle part of an OAuth principal id."""
        return urlsplit(self.issuer).netloc.lower()

    def resource(self, server: str | None) -> str:
        """The resource identifier of one MCP server, or of the gateway itself (server None)."""
        return self.public_url if server is None else f"{self.public_url}/mcp/{server}"

    def audiences(self, server: str | None) -> str:
        """The `aud` a token must contain to be used on this resource."""
        return self.audience or self.resource(server)

    def metadata_url(self, server: str | None) -> str:
        """Where the Protected Resource Metadata of this resource is served (RFC 9728 section 3.1)."""
        return self.public_url + PRM_PATH + ("" if server is None else f"/mcp/{server}")

    def external_scope(self, scope: str) -> str:
        """A gateway scope as the identity provider names it (with OAUTH_SCOPE_PREFIX)."""
        return self.scope_prefix + scope


def oauth_config(settings: Settings) -> OAuthConfig | None:
    """The resource server's configuration, or None when OAUTH_ISSUER is unset (OAuth off)."""
    if settings.oauth_issuer is None and settings.authorization_server == "builtin" and settings.public_url:
        # Issue 14: the gateway is its own issuer; its metadata and challenges name it (authserver judges the tokens)
        return OAuthConfig(public_url=settings.public_url, issuer=settings.public_url)
    if settings.oauth_issuer is None or settings.public_url is None:
        return None
    secret = settings.oauth_client_secret
    return OAuthConfig(
        public_url=settings.public_url,
        issuer=settings.oauth_issuer,
        jwks_url=settings.oauth_jwks_url,
        audience=settings.oauth_audience or None,
        scope_prefix=settings.oauth_scope_prefix,
        principal_claim=settings.oauth_principal_claim,
        leeway_s=settings.oauth_leeway_s,
        introspection_url=settings.oauth_introspection_url,
        client_id=settings.oauth_client_id,
        client_secret=secret.get_secret_value() if secret is not None else None,
        builtin_issuer=settings.public_url if settings.authorization_server == "builtin" else None,
        allow_admin=settings.oauth_allow_admin_scope,
    )


def protected_resource_metadata(config: OAuthConfig, server: str | None) -> dict[str, Any]:
    """The RFC 9728 document of one resource: the scopes offered are the ones a client should ask for by default
    (the MCP spec has clients request `scopes_supported` when a challenge names none)."""
    scope = ADMIN_SCOPE if server is None else f"server:{server}"
    offered = [] if scope == ADMIN_SCOPE and not config.allow_admin else [config.external_scope(scope)]
    return {
        "resource": config.resource(server),
        "authorization_servers": list(dict.fromkeys(filter(None, [config.builtin_issuer, config.issuer]))),
        "scopes_supported": offered,
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-bastion" if server is None else f"mcp-bastion: {server}",
    }


def challenge(config: OAuthConfig, server: str | None, *, error: str | None = None, scope: str | None = None) -> bytes:
    """A `WWW-Authenticate: Bearer` value naming the resource's metadata (RFC 9728 section 5.1), plus the error
    (RFC 6750 section 3) and the scope a step-up needs. Every value is ours or a scope of the grammar: no quoting
    is needed (scopes are printable ASCII without spaces, server names are URL-safe)."""
    parts = [f'resource_metadata="{config.metadata_url(server)}"']
    if error is not None:
        parts.append(f'error="{error}"')
    if scope is not None:
        parts.append(f'scope="{config.external_scope(scope)}"')
    return ("Bearer " + ", ".join(parts)).encode()
