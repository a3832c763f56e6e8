"""The gateway's own token formats never go to the identity provider's introspection endpoint (review 7): a revoked
named token (`mcpb_`), the built-in authorization server's refresh tokens (`mcpr_`) and codes (`mcpa_`) are refused
here; only a token of no known format is asked about."""

from pathlib import Path

import pytest

from mcp_bastion.security import new_token
from tests.oauth.support import loopback_issuer, new_key
from tests.oauth.test_lifecycle import _gateway, introspecting
from tests.oauth.test_resource_server import Monotonic, call
from tests.security.support import audit_events


@pytest.mark.parametrize(
    "value", [new_token(), "mcpr_" + "r" * 43, "mcpa_" + "a" * 43], ids=["named", "refresh", "code"]
)
def test_a_token_of_the_gateways_own_format_is_refused_without_introspection(tmp_path: Path, value: str) -> None:
    with loopback_issuer(new_key()) as issuer, _gateway(issuer, tmp_path, Monotonic(), **introspecting(issuer)) as gw:
        assert call(gw, value).status_code == 401
        assert issuer.introspections == 0
        assert call(gw, "opaque-of-the-provider").status_code == 401
        assert issuer.introspections == 1
    assert next(e["reason"] for e in audit_events(tmp_path, "auth.failure")) == "invalid token"
