"""The pure parts of the resource server: cache headers, discovery locations, scopes, audit fields, challenges."""

import pytest

from mcp_bastion.oauth import OAuthConfig, challenge, scopes_of
from mcp_bastion.oauth.discovery import discovery_urls
from mcp_bastion.oauth.http import cache_lifetime
from mcp_bastion.oauth.jwks import parse_key_set
from mcp_bastion.oauth.validator import looks_like_jwt
from mcp_bastion.oauth.verifier import audit_fields


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("public, max-age=3600", 3600),
        ('max-age="60", must-revalidate', 60),
        ("s-maxage=10", None),
        ("no-store", 0),
        ("private, no-cache", 0),
        ("public", None),
    ],
)
def test_cache_control_lifetimes(header: str | None, seconds: int | None) -> None:
    assert cache_lifetime(header) == seconds


def test_discovery_locations_follow_the_order_mcp_clients_use() -> None:
    assert discovery_urls("https://idp.example") == [
        "https://idp.example/.well-known/oauth-authorization-server",
        "https://idp.example/.well-known/openid-configuration",
    ]
    assert discovery_urls("https://kc.example/realms/mcp") == [
        "https://kc.example/.well-known/oauth-authorization-server/realms/mcp",
        "https://kc.example/.well-known/openid-configuration/realms/mcp",
        "https://kc.example/realms/mcp/.well-known/openid-configuration",
    ]


def test_only_prefixed_scopes_of_the_grammar_count() -> None:
    claims = {"scope": "openid mcp:server:files mcp:tool:db/query mcp:bogus server:other mcp:admin mcp:server:files"}
    assert scopes_of(claims, "mcp:") == ("server:files", "tool:db/query", "admin")
    assert scopes_of({"scp": ["server:files", 7, "admin"]}, "") == ("server:files", "admin")
    assert scopes_of({"scp": "server:a server:b"}, "") == ("server:a", "server:b")
    assert scopes_of({"scope": 42}, "") == ()
    assert scopes_of({}, "") == ()


def test_audit_fields_name_the_token_never_hold_it() -> None:
    claims = {"sub": "alice", "client_id": "vscode", "jti": "j-1", "scope": "x", "exp": 1}
    assert audit_fields(claims, "https://idp") == (
        ("oauth_issuer", "https://idp"),
        ("oauth_subject", "alice"),
        ("oauth_client", "vscode"),
        ("oauth_jti", "j-1"),
    )
    assert dict(audit_fields({"azp": "a", "client_id": "b", "jti": 5}, "i"))["oauth_client"] == "a"


def test_challenges_name_the_metadata_and_the_prefixed_scope() -> None:
    config = OAuthConfig(public_url="https://gw", issuer="https://idp", scope_prefix="mcp:")
    assert challenge(config, None) == b'Bearer resource_metadata="https://gw/.well-known/oauth-protected-resource"'
    assert challenge(config, "files", error="insufficient_scope", scope="server:files") == (
        b'Bearer resource_metadata="https://gw/.well-known/oauth-protected-resource/mcp/files", '
        b'error="insufficient_scope", scope="mcp:server:files"'
    )
    assert config.audiences("files") == "https://gw/mcp/files"
    assert OAuthConfig("https://gw", "https://idp", audience="api://gw").audiences("files") == "api://gw"


def test_key_sets_keep_only_public_signing_keys() -> None:
    keys = parse_key_set(
        {
            "keys": [
                {"kty": "RSA", "kid": "sig", "n": "x", "e": "AQAB"},
                {"kty": "RSA", "kid": "enc", "use": "enc", "n": "x", "e": "AQAB"},
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
                {"kty": "RSA", "kid": "private", "n": "x", "e": "AQAB", "d": "y"},
                "junk",
            ]
        }
    )
    assert set(keys) == {"sig", None}  # a set of one key also serves tokens without a kid


def test_a_named_token_is_never_taken_for_a_jwt() -> None:
    assert not looks_like_jwt("mcpb_" + "A" * 43)
    assert looks_like_jwt("a.b.c")
    assert not looks_like_jwt("a.b.c." + "x")
    assert not looks_like_jwt("a.b." + "c" * 9000)
