"""Test identity provider pieces: signing keys, a token signer, and a tiny loopback issuer (discovery + JWKS +
introspection) whose keys, cache headers and hanging can be changed while a gateway uses it."""

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from mcp.client.auth import TokenStorage
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from tests.harness import free_port

PUBLIC_URL = "https://mcp.example.test"  # only an identifier: the gateway never calls it
PREFIX = "mcp:"
HANG_MAX_S = 30.0  # a hanging endpoint gives up after this, so no server thread outlives its test


@dataclass
class SigningKey:
    """A private key, its kid and algorithm, and its public JWK."""

    alg: str
    kid: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        tool = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        found: dict[str, Any] = json.loads(tool.to_jwk(public))
        return {**found, "kid": self.kid, "alg": self.alg, "use": "sig"}


def new_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    if alg == "RS256":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(alg, kid or f"{alg.lower()}-{secrets.token_hex(4)}", private)


def claims_for(issuer: str, audience: str | list[str], scope: str = "", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    found = {
        "iss": issuer,
        "aud": audience,
        "sub": "svc-robot",
        "azp": "robot-client",
        "jti": secrets.token_hex(8),
        "iat": now,
        "exp": now + 300,
        "scope": scope,
    }
    return {**found, **extra}


def sign(claims: dict[str, Any], key: SigningKey, **header: Any) -> str:
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, key.private, algorithm=key.alg, headers=headers)


def unsigned(claims: dict[str, Any]) -> str:
    """An `alg: none` token (PyJWT refuses to make one with a key, so it is assembled by hand)."""
    part = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'none', 'typ': 'at+jwt'})}.{part(claims)}."


def hmac_with_public_key(claims: dict[str, Any], key: SigningKey) -> str:
    """HS256 'signed' with the RSA public key's PEM: the classic algorithm-confusion forgery."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": key.kid}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    mac = hmac.new(pem, header + b"." + body, hashlib.sha256).digest()
    return (header + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


@dataclass
class Issuer:
    """State of the loopback issuer; tests change it between requests."""

    url: str
    keys: list[SigningKey]
    cache_control: str = "max-age=300"
    hang: threading.Event = field(default_factory=threading.Event)  # set: the JWKS endpoint never answers
    released: threading.Event = field(default_factory=threading.Event)
    jwks_fetches: int = 0
    introspections: int = 0
    opaque: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> introspection answer
    client: tuple[str, str] = ("gateway", "gateway-secret")

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk for key in self.keys]}


def _handler(issuer: Issuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any], cache: str | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            if cache:
                self.send_header("cache-control", cache)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._json(200, {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"})
            elif self.path == "/jwks":
                issuer.jwks_fetches += 1
                if issuer.hang.is_set():
                    issuer.released.wait(HANG_MAX_S)
                    return
                self._json(200, issuer.jwks(), issuer.cache_control)
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            expected = "Basic " + base64.b64encode(":".join(issuer.client).encode()).decode()
            if self.path != "/introspect" or self.headers.get("authorization") != expected:
                self._json(401, {"error": "invalid_client"})
                return
            issuer.introspections += 1
            token = form.get("token", [""])[0]
            self._json(200, issuer.opaque.get(token, {"active": False}))

    return Handler


@contextlib.contextmanager
def loopback_issuer(*keys: SigningKey) -> Iterator[Issuer]:
    """A discovery document, a JWKS and an introspection endpoint on a free loopback port."""
    port = free_port()
    issuer = Issuer(f"http://127.0.0.1:{port}", list(keys))
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(issuer))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        issuer.released.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


class MemoryStorage(TokenStorage):
    """Token storage for the SDK's OAuth clients, in memory (what a test looks at afterwards)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info
