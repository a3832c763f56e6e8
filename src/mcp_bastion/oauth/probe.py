"""What `doctor` asks about the identity provider: is its metadata there, and are its signing keys reachable and
usable? One fetch each, bounded like the gateway's own; never a token involved."""

from dataclasses import dataclass

from mcp_bastion.oauth.discovery import discover
from mcp_bastion.oauth.http import JsonFetcher, OAuthFetchError
from mcp_bastion.oauth.jwks import parse_key_set
from mcp_bastion.oauth.resource import OAuthConfig
from mcp_bastion.oauth.validator import ALGORITHMS, KEY_TYPES


@dataclass(frozen=True, slots=True)
class Probe:
    """One finding: what was checked, whether it holds, and what was seen."""

    check: str
    ok: bool
    detail: str


async def probe_issuer(config: OAuthConfig, fetcher: JsonFetcher | None = None) -> list[Probe]:
    """Discovery (unless OAUTH_JWKS_URL is set) and the JWKS, as the gateway will fetch them."""
    fetcher = fetcher or JsonFetcher()
    found: list[Probe] = []
    try:
        jwks_url = config.jwks_url
        if jwks_url is None:
            try:
                document = await discover(fetcher, config.issuer)
            except OAuthFetchError as exc:
                return [Probe("OAuth issuer metadata", False, str(exc))]
            jwks_url = str(document["jwks_uri"])
            found.append(Probe("OAuth issuer metadata", True, f"{config.issuer} names its keys at {jwks_url}"))
        found.append(await _keys(fetcher, jwks_url))
    finally:
        await fetcher.close()
    return found


async def _keys(fetcher: JsonFetcher, url: str) -> Probe:
    try:
        keys = parse_key_set((await fetcher.get(url, "JWKS")).document)
    except OAuthFetchError as exc:
        return Probe("OAuth signing keys", False, str(exc))
    kinds = set(KEY_TYPES.values())
    usable = [k for k in keys.values() if k.get("kty") in kinds and k.get("alg", "RS256") in ALGORITHMS]
    if not usable:
        return Probe("OAuth signing keys", False, f"{url}: no RS256, ES256 or EdDSA key (HMAC keys are never used)")
    return Probe("OAuth signing keys", True, f"{url}: {len({id(k) for k in usable})} usable signing key(s)")
