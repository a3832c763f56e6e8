"""OAuth 2.1 resource server (Issue 13): access tokens from the identity provider a team already runs.

`resource` (identifiers, Protected Resource Metadata, challenges: pure), `http` (the one httpx2 seam), `discovery`
(RFC 8414 / OpenID metadata), `jwks` (the cached key set), `validator` (the one PyJWT module), `introspection`
(RFC 7662) and `verifier` (token -> Principal). Reusable by the built-in authorization server (Issue 14).
"""

from mcp_bastion.oauth.http import JsonFetcher, OAuthFetchError
from mcp_bastion.oauth.resource import (
    METADATA_MAX_AGE_S,
    PRM_PATH,
    OAuthConfig,
    challenge,
    oauth_config,
    protected_resource_metadata,
)
from mcp_bastion.oauth.verifier import ResourceServer, scopes_of

__all__ = [
    "METADATA_MAX_AGE_S",
    "PRM_PATH",
    "JsonFetcher",
    "OAuthConfig",
    "OAuthFetchError",
    "ResourceServer",
    "challenge",
    "oauth_config",
    "protected_resource_metadata",
    "scopes_of",
]
