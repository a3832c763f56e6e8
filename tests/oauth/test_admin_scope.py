"""An identity provider's token never becomes a gateway admin unless the operator opted in (review 4): with an
empty OAUTH_SCOPE_PREFIX any IdP scope named `admin` (one a user may be able to request) would otherwise be one."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_bastion.config import Settings
from mcp_bastion.oauth import ResourceServer, oauth_config
from tests.harness import RunningGateway, spec
from tests.oauth.support import PUBLIC_URL, Issuer, claims_for, loopback_issuer, new_key, sign
from tests.security.support import admin_token, audit_events, bearer, secure_gateway


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with loopback_issuer(new_key()) as running:
        yield running


def gateway(issuer: Issuer, tmp_path: Path, **extra: Any) -> Any:
    settings = {"public_url": PUBLIC_URL, "oauth_issuer": issuer.url, "oauth_scope_prefix": "", **extra}
    config = oauth_config(Settings(**settings))
    assert config is not None
    oauth = ResourceServer(config)
    return secure_gateway([spec("files")], tmp_path, auth_token=admin_token(), oauth=oauth, **settings)


def admin_sessions(gw: RunningGateway, issuer: Issuer) -> httpx.Response:
    value = sign(claims_for(issuer.url, PUBLIC_URL, "admin server:files"), issuer.keys[0])
    return httpx.get(gw.url + "/admin/sessions", headers=bearer(value), timeout=5)


def test_an_idp_admin_scope_is_ignored_by_default(issuer: Issuer, tmp_path: Path) -> None:
    with gateway(issuer, tmp_path) as gw:
        answer = admin_sessions(gw, issuer)
        assert answer.status_code == 403, answer.text
        assert 'error="insufficient_scope", scope="admin"' in answer.headers["www-authenticate"]
        metadata = httpx.get(gw.url + "/.well-known/oauth-protected-resource", timeout=5).json()
        assert metadata["scopes_supported"] == []
    assert [e["reason"] for e in audit_events(tmp_path, "auth.forbidden")] == ["needs admin"]


def test_oauth_allow_admin_scope_lets_it_through(issuer: Issuer, tmp_path: Path) -> None:
    with gateway(issuer, tmp_path, oauth_allow_admin_scope=True) as gw:
        assert admin_sessions(gw, issuer).status_code == 200
        metadata = httpx.get(gw.url + "/.well-known/oauth-protected-resource", timeout=5).json()
        assert metadata["scopes_supported"] == ["admin"]
