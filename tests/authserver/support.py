"""A gateway with the built-in authorization server on, and a small browser that walks its pages over HTTP."""

import base64
import contextlib
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.harness import RunningGateway, free_port, spec
from tests.security.support import admin_token, secure_gateway

REDIRECT = "http://127.0.0.1:33418/callback"
HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')
ONWARD = re.compile(r'<a id="continue" href="([^"]+)">')


@dataclass
class Builtin:
    gw: RunningGateway
    admin: str
    logs: Path

    @property
    def url(self) -> str:
        return self.gw.url

    def resource(self, server: str | None = "toolbox") -> str:
        return self.url if server is None else f"{self.url}/mcp/{server}"


@contextlib.contextmanager
def builtin_gateway(tmp_path: Path, admin: str | None = None, **settings: Any) -> Iterator[Builtin]:
    """A real gateway on loopback, AUTHORIZATION_SERVER=builtin, PUBLIC_URL its own URL, servers toolbox and other."""
    port = free_port()
    admin = admin or admin_token()
    values: dict[str, Any] = {
        "port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "authorization_server": "builtin",
        "oauth_signing_key_file": tmp_path / "data" / "oauth-keys.json",
        **settings,
    }
    with secure_gateway([spec("toolbox"), spec("other")], tmp_path, auth_token=admin, **values) as gw:
        yield Builtin(gw, admin, tmp_path)


def pkce() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def register(env: Builtin, redirect_uris: list[str] | None = None, name: str = "Test Client") -> str:
    answer = httpx.post(
        f"{env.url}/oauth/register",
        json={"client_name": name, "redirect_uris": redirect_uris or [REDIRECT], "token_endpoint_auth_method": "none"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["client_id"])


def authorize_params(client_id: str, challenge: str, **extra: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "st-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return {k: v for k, v in params.items() if v is not None}


def hidden(page: str) -> dict[str, str]:
    return {name: unescape(value) for name, value in HIDDEN.findall(page)}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class Browser:
    """An operator's browser: cookies kept, redirects walked by hand so each step can be checked."""

    def __init__(self, env: Builtin) -> None:
        self.env = env
        self.http = httpx.Client(base_url=env.url, timeout=10, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def start(self, params: dict[str, str]) -> httpx.Response:
        """GET /oauth/authorize as the client's redirect sends the browser there."""
        return self.http.get("/oauth/authorize?" + urlencode(params))

    def consent_page(self, params: dict[str, str] | str) -> httpx.Response:
        """From the authorization request (its parameters, or the whole URL a client opens) to the consent page,
        logging in on the way when needed."""
        first = self.start(params) if isinstance(params, dict) else self.http.get(params)
        assert first.status_code == 200, first.text
        onward = ONWARD.search(first.text)
        assert onward is not None, first.text
        page = self.http.get(unescape(onward.group(1)))
        if 'action="/oauth/login"' in page.text:
            form = {"request": hidden(page.text)["request"], "token": self.env.admin}
            logged = self.http.post("/oauth/login", data=form)
            assert logged.status_code == 303, logged.text
            page = self.http.get(logged.headers["location"])
        assert page.status_code == 200, page.text
        return page

    def decide(self, page: httpx.Response, decision: str, scopes: list[str] | None = None) -> httpx.Response:
        """Submit the consent form as a browser would (unchecked boxes are simply not sent)."""
        fields = hidden(page.text)
        chosen = scopes if scopes is not None else re.findall(r'name="scope" value="([^"]+)" checked', page.text)
        body = [*fields.items(), ("decision", decision), *(("scope", s) for s in chosen)]
        return self.http.post("/oauth/consent", content=urlencode(body), headers=FORM)

    def code_for(self, params: dict[str, str] | str, scopes: list[str] | None = None) -> dict[str, str]:
        """The whole approval; the redirect's query (code, state, iss)."""
        answer = self.decide(self.consent_page(params), "approve", scopes)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"].startswith(REDIRECT + "?")
        return query_of(answer.headers["location"])


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def token_request(env: Builtin, **form: str) -> httpx.Response:
    return httpx.post(f"{env.url}/oauth/token", data=form, timeout=10)


def redeem(env: Builtin, client_id: str, code: str, verifier: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": client_id}
    return token_request(env, redirect_uri=REDIRECT, **{**form, **extra})


def issue_tokens(env: Builtin, browser: Browser, scopes: list[str] | None = None, server: str = "toolbox") -> Any:
    """Register, approve and redeem: (client_id, token response JSON)."""
    client_id = register(env)
    verifier, challenge = pkce()
    answer = browser.code_for(authorize_params(client_id, challenge, resource=env.resource(server)), scopes)
    tokens = redeem(env, client_id, answer["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    return client_id, tokens.json()
