"""Issue 8 (preflight): `serve` refuses, before binding and with the fix in its one error line, a TRUSTED_PROXIES
that covers every address, INSECURE_NO_AUTH behind a trusted proxy, and plain HTTP off loopback unless
ALLOW_PLAINTEXT=1 says a proxy in front terminates TLS."""

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from mcp_bastion.cli.serve import preflight
from mcp_bastion.config import Settings
from mcp_bastion.errors import ConfigError
from mcp_bastion.store import open_store
from tests.harness import free_port
from tests.security.support import admin_token, run_cli, write_env


def serve(tmp_path: Path, **values: str) -> subprocess.CompletedProcess[str]:
    """The real `serve` with these settings in its .env (no servers); it is expected to exit on its own."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    env_file = write_env(tmp_path, MCP_CONFIG=str(config), LOG_DIR=str(tmp_path / "logs"), **values)
    return run_cli(tmp_path, env_file, "serve", COLUMNS="250")


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused start (exit 2, no traceback)."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize(
    "proxies",
    ["0.0.0.0/0", "::/0", "*", "0.0.0.0", "10.1.2.3/0", "127.0.0.1, ::/0", "0.0.0.0/1,128.0.0.0/1"],
)
def test_trusted_proxies_covering_every_address_are_refused(tmp_path: Path, proxies: str) -> None:
    """Issue 8 (preflight): any TRUSTED_PROXIES value that trusts every address (a /0 in any spelling, or ranges
    that add up to one) would let any client forge its address; serve exits 2 saying what to list instead."""
    line = error_line(serve(tmp_path, AUTH_TOKEN=admin_token(), PORT=str(free_port()), TRUSTED_PROXIES=proxies))
    assert "TRUSTED_PROXIES covers every address" in line
    assert "TRUSTED_PROXIES=127.0.0.1" in line


def test_insecure_no_auth_behind_a_trusted_proxy_is_refused(tmp_path: Path) -> None:
    """Issue 8 (preflight): on a loopback bind INSECURE_NO_AUTH is allowed alone, but not with a trusted proxy,
    which relays network clients as if they were local."""
    done = serve(tmp_path, INSECURE_NO_AUTH="true", TRUSTED_PROXIES="127.0.0.1", PORT=str(free_port()))
    line = error_line(done)
    assert "INSECURE_NO_AUTH cannot be used with TRUSTED_PROXIES" in line
    assert "set AUTH_TOKEN" in line


def test_plain_http_off_loopback_is_refused_with_the_two_fixes(tmp_path: Path) -> None:
    """Issue 8 (preflight): a non-loopback bind without TLS is refused before binding (192.0.2.1 is TEST-NET: it
    could not be bound anyway), naming both fixes: TLS files, or ALLOW_PLAINTEXT=1 behind a TLS proxy."""
    line = error_line(serve(tmp_path, HOST="192.0.2.1", AUTH_TOKEN=admin_token(), PORT=str(free_port())))
    assert "refusing to serve plain HTTP on 192.0.2.1" in line
    assert "TLS_CERT_FILE and TLS_KEY_FILE" in line
    assert "ALLOW_PLAINTEXT=1" in line


def judge(tmp_path: Path, **values: object) -> list[str]:
    """serve's own preflight on these settings (no .env, an empty store): its warnings, or ConfigError."""
    settings = Settings(auth_token=admin_token(), **values)  # type: ignore[arg-type]
    store = open_store("memory://")
    try:
        return preflight(settings, tmp_path / "absent.env", store)
    finally:
        asyncio.run(store.close())


def test_allow_plaintext_and_narrow_proxies_pass_preflight(tmp_path: Path) -> None:
    """Issue 8 (preflight): the settings a deploy behind a TLS proxy uses are accepted: ALLOW_PLAINTEXT=1 off
    loopback, and TRUSTED_PROXIES naming the proxy (a host or a real range, IPv4 or IPv6)."""
    with pytest.raises(ConfigError, match="ALLOW_PLAINTEXT=1"):
        judge(tmp_path, host="10.0.0.5")
    assert isinstance(judge(tmp_path, host="10.0.0.5", allow_plaintext=True), list)
    assert isinstance(judge(tmp_path, trusted_proxies="127.0.0.1,10.0.0.0/8,fd00::/8"), list)
    with pytest.raises(ConfigError, match="not an IP address"):
        judge(tmp_path, trusted_proxies="proxy.internal")
