"""Authorization server metadata (RFC 8414, OpenID Connect Discovery 1.0): where the issuer's keys are.

The MCP authorization spec has clients try the RFC 8414 location first, then OpenID's, path-inserted then appended;
the gateway reads them in the same order, so it trusts the document its clients trust.
"""

from typing import Any
from urllib.parse import urlsplit

from mcp_bastion.config import url_problem
from mcp_bastion.oauth.http import JsonFetcher, OAuthFetchError

OAUTH_METADATA = "/.well-known/oauth-authorization-server"
OPENID_METADATA = "/.well-known/openid-configuration"


def discovery_urls(issuer: str) -> list[str]:
    """The metadata URLs of an issuer, in the order the MCP spec has clients try them."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [origin + OAUTH_METADATA, origin + OPENID_METADATA]
    return [origin + OAUTH_METADATA + path, origin + OPENID_METADATA + path, origin + path + OPENID_METADATA]


async def discover(fetcher: JsonFetcher, issuer: str) -> dict[str, Any]:
    """The issuer's metadata document: the first that answers, and it must name this exact issuer (RFC 8414 3.3).

    Raises:
        OAuthFetchError: no location answered, or the document names another issuer or an unusable jwks_uri.
    """
    problems: list[str] = []
    for url in discovery_urls(issuer):
        try:
            document = (await fetcher.get(url, "issuer metadata")).document
        except OAuthFetchError as exc:
            problems.append(str(exc))
            continue
        if document.get("issuer") != issuer:
            raise OAuthFetchError(f"the metadata at {url} names another issuer than OAUTH_ISSUER")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or url_problem(jwks_uri) is not None:
            raise OAuthFetchError(f"the metadata at {url} has no usable jwks_uri (https, or http on loopback)")
        return document
    raise OAuthFetchError("; ".join(problems) or "no metadata location")
