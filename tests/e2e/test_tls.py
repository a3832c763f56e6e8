"""The real `mcp-bastion serve` with TLS_CERT_FILE/TLS_KEY_FILE: HTTPS only, HSTS, Secure cookies, SDK over TLS.

Certificates come from a throwaway CA (trustme) issued for 127.0.0.1; clients trust that CA only.
"""

import json
import os
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
import trustme
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_bastion.config import Settings
from mcp_bastion.security import new_token
from tests.harness import free_port, serve_process

CLI = Path(sys.executable).with_name("mcp-bastion")


@dataclass
class TlsGateway:
    url: str
    port: int
    token: str
    ca_file: Path
    workdir: Path
    log: Path

    def context(self) -> ssl.SSLContext:
        """A client SSL context that trusts the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.context(), timeout=5, **kwargs)  # type: ignore[arg-type]


def private_write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def clean_env() -> dict[str, str]:
    """This process's environment without any gateway setting, so only the tmp .env configures the server."""
    settings = {name.upper() for name in Settings.model_fields}
    return {key: value for key, value in os.environ.items() if key.upper() not in settings}


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    """`mcp-bastion serve` on a free loopback port with TLS, the demo server behind it, ready when yielded."""
    workdir = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    os.chmod(key_file, 0o600)

    port = free_port()
    token = new_token()
    config = workdir / "mcp.json"
    document = {"mcpServers": {"demo": {"command": sys.executable, "args": ["-m", "mcp_bastion.demo_server"]}}}
    config.write_text(json.dumps(document), encoding="utf-8")
    env_file = workdir / ".env"
    private_write(
        env_file,
        f"HOST=127.0.0.1\nPORT={port}\nAUTH_TOKEN={token}\nSESSION_SECRET={new_token()}\n"
        f"TLS_CERT_FILE={cert_file}\nTLS_KEY_FILE={key_file}\n"
        f"STORE_URL=sqlite://{workdir / 'data' / 'bastion.db'}\nAUDIT_LOG={workdir / 'logs' / 'audit.jsonl'}\n"
        f"LOG_DIR={workdir / 'logs'}\nLOG_LEVEL=warning\n",
    )
    assert CLI.exists(), f"{CLI} missing: is the package installed in the venv?"
    log = workdir / "serve.log"
    running = TlsGateway(f"https://127.0.0.1:{port}", port, token, ca_file, workdir, log)
    argv = [str(CLI), "serve", "--env-file", str(env_file), "--config", str(config)]

    def demo_running() -> bool:
        with running.client() as http:
            health = http.get("/health", headers={"Authorization": f"Bearer {token}"})
        return health.status_code == 200 and health.json()["servers"]["demo"]["state"] == "running"

    with serve_process(argv, cwd=workdir, env=clean_env(), log=log, ready=demo_running):
        yield running


def test_health_over_https_with_hsts(tls_gateway: TlsGateway) -> None:
    """GET /health with the token over HTTPS: 200 and Strict-Transport-Security (also on a refusal)."""
    with tls_gateway.client() as http:
        response = http.get("/health", headers={"Authorization": f"Bearer {tls_gateway.token}"})
        assert response.status_code == 200, response.text
        assert response.url.scheme == "https"
        assert response.json()["servers"]["demo"]["state"] == "running"
        hsts = response.headers["strict-transport-security"]
        assert "max-age=" in hsts
        assert int(hsts.split("max-age=")[1].split(";")[0]) >= 31536000
        refused = http.get("/health")
        assert refused.status_code == 401
        assert "strict-transport-security" in refused.headers
    banner = tls_gateway.log.read_text(errors="replace")
    assert f"https://127.0.0.1:{tls_gateway.port}" in banner
    assert "readable by group" not in banner


def test_login_cookies_are_secure(tls_gateway: TlsGateway) -> None:
    """POST /auth/login over HTTPS sets Secure, HttpOnly, SameSite=Strict on the session cookie (Secure on CSRF)."""
    with tls_gateway.client() as http:
        response = http.post("/auth/login", json={"token": tls_gateway.token})
        assert response.status_code == 200, response.text
        cookies = {}
        for header in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            cookies.update({name: (morsel, header) for name, morsel in jar.items()})
        assert set(cookies) == {"bastion_session", "csrf_token"}
        session, raw = cookies["bastion_session"]
        assert session["secure"] is True, raw
        assert session["httponly"] is True, raw
        assert session["samesite"] == "Strict", raw
        assert session["path"] == "/"
        csrf, raw_csrf = cookies["csrf_token"]
        assert csrf["secure"] is True, raw_csrf
        assert csrf["samesite"] == "Strict", raw_csrf
        assert not csrf["httponly"], raw_csrf  # the page must read it to echo it in X-CSRF-Token
        assert csrf.value == response.json()["csrf_token"]
        # The client's jar sends the Secure cookie back over HTTPS: the session works.
        me = http.get("/auth/session")
        assert me.status_code == 200, me.text
        assert me.json()["via"] == "cookie"
        assert me.json()["principal"] == "admin"


def test_plain_http_and_untrusted_certificates_fail(tls_gateway: TlsGateway) -> None:
    """The TLS port speaks no plain HTTP, and a client that does not trust the CA refuses the certificate."""
    headers = {"Authorization": f"Bearer {tls_gateway.token}"}
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_gateway.port}/health", headers=headers, timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{tls_gateway.url}/health", headers=headers, timeout=5)  # system trust store only
    with tls_gateway.client() as http:  # and the server survived both
        assert http.get("/livez").status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_sdk_client_lists_tools_over_https(tls_gateway: TlsGateway, mode: str) -> None:
    """The official MCP SDK client, trusting the test CA, lists the demo server's tools over Streamable HTTP."""
    headers = {"Authorization": f"Bearer {tls_gateway.token}"}
    with anyio.fail_after(20):
        # The SDK leaves a caller's http_client open: close it here so no connection outlives the test.
        async with httpx2.AsyncClient(verify=tls_gateway.context(), headers=headers, timeout=10) as http_client:
            transport = streamable_http_client(f"{tls_gateway.url}/mcp/demo", http_client=http_client)
            async with Client(transport, mode=mode) as client:
                tools = await client.list_tools()
                assert [t.name for t in tools.tools] == ["echo", "add", "now"]
                answer = await client.call_tool("add", {"a": 2, "b": 40})
                assert answer.content[0].text == "42"
