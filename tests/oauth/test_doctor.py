"""`doctor` checks the identity provider the gateway will trust: its metadata and its signing keys."""

from mcp_bastion.cli.doctor import check_oauth
from mcp_bastion.cli.preflight import auth_finding
from mcp_bastion.config import load_settings
from tests.harness import free_port
from tests.oauth.support import PUBLIC_URL, loopback_issuer, new_key


def test_doctor_passes_a_reachable_issuer_with_usable_keys() -> None:
    """Issue 13 item 1: doctor passes a reachable issuer with usable keys."""
    with loopback_issuer(new_key("ES256"), new_key("RS256")) as issuer:
        checks = check_oauth(load_settings(None, public_url=PUBLIC_URL, oauth_issuer=issuer.url))
    assert [(c.check, c.status) for c in checks] == [("OAuth issuer metadata", "PASS"), ("OAuth signing keys", "PASS")]
    assert checks[1].detail == f"{issuer.url}/jwks: 2 usable signing key(s)"


def test_doctor_fails_an_issuer_it_cannot_reach_or_that_names_another_issuer() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    checks = check_oauth(load_settings(None, public_url=PUBLIC_URL, oauth_issuer=nobody))
    assert [(c.check, c.status) for c in checks] == [("OAuth issuer metadata", "FAIL")]
    assert "ConnectError" in checks[0].detail
    with loopback_issuer(new_key()) as issuer:
        checks = check_oauth(load_settings(None, public_url=PUBLIC_URL, oauth_issuer=issuer.url + "/"))
    assert checks[0].status == "FAIL"
    assert "names another issuer than OAUTH_ISSUER" in checks[0].detail


def test_doctor_fails_a_key_set_without_a_signing_key_it_accepts() -> None:
    with loopback_issuer() as issuer:
        checks = check_oauth(
            load_settings(None, public_url=PUBLIC_URL, oauth_issuer=issuer.url, oauth_jwks_url=issuer.url + "/jwks")
        )
    assert [(c.check, c.status) for c in checks] == [("OAuth signing keys", "FAIL")]
    assert checks[0].detail.endswith("JWKS: no signing key")


def test_doctor_says_nothing_about_oauth_when_it_is_off() -> None:
    assert check_oauth(load_settings(None)) == []


def test_oauth_alone_is_enough_authentication_to_bind_the_network() -> None:
    """No AUTH_TOKEN and no named token, but an issuer: serve starts on a public address (tokens come from the IdP)."""
    settings = load_settings(None, host="0.0.0.0", public_url=PUBLIC_URL, oauth_issuer="https://idp.example")
    found = auth_finding(settings, lambda: 0)
    assert (found.level, found.message) == ("ok", "no AUTH_TOKEN; OAuth access tokens from https://idp.example")
    bare = auth_finding(load_settings(None, host="0.0.0.0"), lambda: 0)
    assert bare.level == "refuse"
