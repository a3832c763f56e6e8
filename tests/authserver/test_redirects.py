"""The authorization endpoint never redirects to a URI it did not validate, and no input makes it fail with a 5xx
(the review's open redirect: `http://evil.example\\@127.0.0.1/cb` is 127.0.0.1 for Python, evil.example for a
browser; its CR/LF variant ended in a 500)."""

from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.authserver.support import Browser, Builtin, authorize_params, pkce, register

REGISTERED = "http://127.0.0.1/cb"
FUZZ_EXAMPLES = 60  # enough to walk every branch of the checks; each example is one real HTTP round trip

ATTACKS = [
    "http://evil.example\\@127.0.0.1/cb",
    "http://evil.example%5C@127.0.0.1/cb",
    "http://x\r\nSet-Cookie:injected=1@127.0.0.1/cb",
    "http://127.0.0.1/cb\r\nSet-Cookie: injected=1",
    "http://127.0.0.1:8080/cb\n",
    "http://user@127.0.0.1:8080/cb",
    "http://127.0.0.1:08080/cb",
    "http://127.0.0.1:99999/cb",
    "http://127.0.0.1:/cb",
    "http://127.0.0.1\t:8080/cb",
    "http://127.0.0.1:8080/cb#frag",
    "http://127.0.0.1:8080/c\u00e9b",
    "http://127.0.0.1:8080/cb?x=1",
    "HTTP://127.0.0.1:8080/cb",
    "http://127.0.0.1 :8080/cb",
    "http:/127.0.0.1:8080/cb",
    "//127.0.0.1:8080/cb",
    "http://[::1/cb",
    "http://[zz]:8080/cb",
]

BAD_CLIENT_IDS = [
    "mcpc_unknown",
    "https://[::1/client.json",
    "https://[zz]/client.json",
    "https://a.test:99999/client.json",
    "https://a.test:abc/client.json",
    "https://a.test/\r\nx",
    "https://a..test/client.json",
    "https://" + "a" * 70 + ".test/client.json",
]


@pytest.fixture(scope="module")
def client_id(env: Builtin) -> str:
    return register(env, [REGISTERED], name="Victim App")


def authorize(env: Builtin, params: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{env.url}/oauth/authorize?" + urlencode(params), timeout=10, follow_redirects=False)


def assert_safe(answer: httpx.Response) -> None:
    """No server error, and a redirect only ever to the registered URI (its port may differ)."""
    assert answer.status_code < 500, answer.text
    if answer.status_code in (301, 302, 303, 307, 308):
        target = urlsplit(answer.headers["location"])
        assert (target.scheme, target.hostname, target.path) == ("http", "127.0.0.1", "/cb"), target
        assert target.username is None
        assert answer.headers["location"].startswith(("http://127.0.0.1/cb?", "http://127.0.0.1:"))


@pytest.mark.parametrize("uri", ATTACKS)
@pytest.mark.parametrize("response_type", ["token", "code"])
def test_a_redirect_uri_that_only_parses_like_the_registered_one_is_shown_not_followed(
    env: Builtin, client_id: str, uri: str, response_type: str
) -> None:
    _, challenge = pkce()
    params = authorize_params(client_id, challenge, resource=env.resource(), redirect_uri=uri)
    answer = authorize(env, {**params, "response_type": response_type})
    assert answer.status_code == 400, answer.text
    assert "location" not in answer.headers
    assert "redirect_uri is not one the client registered" in answer.text


def test_a_loopback_redirect_on_another_port_goes_to_the_registered_uri_with_that_port(
    env: Builtin, client_id: str, browser: Browser
) -> None:
    _, challenge = pkce()
    params = authorize_params(client_id, challenge, resource=env.resource(), redirect_uri="http://127.0.0.1:40001/cb")
    answer = authorize(env, {**params, "response_type": "token"})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("http://127.0.0.1:40001/cb?error=unsupported_response_type")
    page = browser.consent_page(params)
    back = browser.decide(page, "approve")
    assert back.status_code == 303
    assert back.headers["location"].startswith("http://127.0.0.1:40001/cb?code=")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    redirect=st.one_of(st.sampled_from(ATTACKS), st.text(max_size=60), st.just(REGISTERED)),
    fields=st.dictionaries(
        st.sampled_from(["response_type", "state", "code_challenge", "code_challenge_method", "resource", "scope"]),
        st.text(max_size=80),
    ),
    client=st.one_of(
        st.just("registered"), st.sampled_from(BAD_CLIENT_IDS), st.text(max_size=40).map(lambda t: "https://a.test" + t)
    ),
)
def test_no_authorization_request_fails_with_a_server_error(
    env: Builtin, client_id: str, redirect: str, fields: dict[str, str], client: str
) -> None:
    params = {"client_id": client_id if client == "registered" else client, "redirect_uri": redirect, **fields}
    assert_safe(authorize(env, params))


@pytest.mark.parametrize("client_id", BAD_CLIENT_IDS)
def test_a_malformed_client_id_url_is_shown_as_a_page(env: Builtin, client_id: str) -> None:
    _, challenge = pkce()
    answer = authorize(env, authorize_params(client_id, challenge, resource=env.resource()))
    assert answer.status_code == 400, answer.text
    assert "location" not in answer.headers


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.lists(
        st.tuples(st.sampled_from(["request", "csrf_token", "decision", "scope", "token", "x"]), st.text(max_size=80)),
        max_size=6,
    ),
    path=st.sampled_from(["/oauth/consent", "/oauth/login"]),
)
def test_no_consent_or_login_form_fails_with_a_server_error(
    env: Builtin, fields: list[tuple[str, str]], path: str
) -> None:
    body = urlencode(fields).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    answer = httpx.post(f"{env.url}{path}", content=body, headers=headers, timeout=10, follow_redirects=False)
    assert 400 <= answer.status_code < 500, answer.text
    page = httpx.get(f"{env.url}/oauth/consent", params=dict(fields), timeout=10, follow_redirects=False)
    assert 200 <= page.status_code < 500, page.text


@pytest.mark.parametrize("uri", ["http://[::1/cb", "http://[zz]/cb", "http://127.0.0.1\\/cb", "http://127.0.0.1/c b"])
def test_registration_refuses_a_redirect_uri_that_does_not_parse_cleanly(env: Builtin, uri: str) -> None:
    answer = httpx.post(f"{env.url}/oauth/register", json={"redirect_uris": [uri]}, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_redirect_uri"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
REGISTRATION_KEYS = ["redirect_uris", "grant_types", "response_types", "client_name", "token_endpoint_auth_method"]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(REGISTRATION_KEYS), JSON, max_size=5) | JSON)
def test_no_registration_fails_with_a_server_error(env: Builtin, body: object) -> None:
    answer = httpx.post(f"{env.url}/oauth/register", json=body, timeout=10)
    assert answer.status_code in (201, 400), answer.text


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(
        st.sampled_from(["grant_type", "code", "code_verifier", "client_id", "redirect_uri", "refresh_token", "token"]),
        st.one_of(st.text(max_size=60), st.sampled_from(["authorization_code", "refresh_token", "a.b.c", "mcpr_x"])),
    ),
    path=st.sampled_from(["/oauth/token", "/oauth/revoke"]),
)
def test_no_token_or_revocation_request_fails_with_a_server_error(
    env: Builtin, fields: dict[str, str], path: str
) -> None:
    answer = httpx.post(f"{env.url}{path}", data=fields, timeout=10)
    assert answer.status_code in (200, 400), answer.text


@pytest.mark.parametrize("key", ["grant_types", "response_types"])
@pytest.mark.parametrize("value", [[{}], [["code"]], "code", [None]])
def test_registration_with_odd_metadata_types_is_a_400(env: Builtin, key: str, value: object) -> None:
    body = {"redirect_uris": ["https://a.test/cb"], key: value}
    answer = httpx.post(f"{env.url}/oauth/register", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_client_metadata"
