"""The `mcp-bastion` CLI: named tokens shared with a running gateway through the store, and the serve preflight
(weak tokens and unauthenticated non-loopback binds refused, ALLOWED_IPS=0.0.0.0 warned about)."""

import json
import subprocess
import time
from pathlib import Path

import httpx

from mcp_bastion.security import weakness
from tests.harness import free_port, spec, wait_until
from tests.security.support import (
    CLI,
    admin_token,
    assert_rejection,
    audit_events,
    audit_text,
    bearer,
    clean_env,
    modern_call,
    run_cli,
    secure_gateway,
    write_env,
)


def create(tmp_path: Path, env_file: Path, name: str, *args: str) -> dict:  # type: ignore[type-arg]
    done = run_cli(tmp_path, env_file, "token", "create", name, *args, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_token_create_prints_the_value_once_and_the_running_gateway_accepts_it(tmp_path: Path) -> None:
    """AUTH-08, SEC-06, AZ-01: `token create NAME --scope S --json` prints an object with `token`; the value works at
    once on a gateway sharing the store, within its scope; the store holds only its hash; `token list` never shows
    it; token.created is audited without the value."""
    env_file = write_env(tmp_path)
    store_url = f"sqlite:///{tmp_path}/s.db"
    with secure_gateway([spec("toolbox"), spec("demo")], tmp_path, auth_token=admin_token(), store_url=store_url) as gw:
        created = create(tmp_path, env_file, "laptop", "--scope", "server:toolbox")
        assert set(created) == {"name", "token", "scopes", "expires"}
        assert created["name"] == "laptop"
        assert created["scopes"] == ["server:toolbox"]
        assert created["expires"] is None
        value = created["token"]
        assert len(value) >= 40
        with httpx.Client(timeout=10) as client:
            who = client.get(f"{gw.url}/auth/session", headers=bearer(value))
            assert who.json() == {"principal": "laptop", "scopes": ["server:toolbox"], "via": "bearer"}
            assert modern_call(client, gw.mcp("toolbox"), value, "tools/list").status_code == 200
            assert modern_call(client, gw.mcp("demo"), value, "tools/list").status_code == 403
            assert client.get(f"{gw.url}/admin/sessions", headers=bearer(value)).status_code == 403
        listed = run_cli(tmp_path, env_file, "token", "list", "--json")
        assert listed.returncode == 0
        [row] = json.loads(listed.stdout)["tokens"]
        assert row["name"] == "laptop"
        assert value not in listed.stdout
        plain = run_cli(tmp_path, env_file, "token", "list")
        assert value not in plain.stdout
    for path in tmp_path.glob("s.db*"):
        assert value.encode() not in path.read_bytes(), path
    [line] = audit_events(tmp_path, "token.created")
    assert (line["token"], line["scopes"]) == ("laptop", ["server:toolbox"])
    assert value not in audit_text(tmp_path)  # both files: the calls log and the security log


def test_token_revoke_takes_effect_on_the_running_server_at_once(tmp_path: Path) -> None:
    """AUTH-08: `token revoke NAME` makes the very next request with that token 401; token.revoked audited."""
    env_file = write_env(tmp_path)
    store_url = f"sqlite:///{tmp_path}/s.db"
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token(), store_url=store_url) as gw:
        value = create(tmp_path, env_file, "ci", "--scope", "server:toolbox")["token"]
        with httpx.Client(timeout=10) as client:
            assert client.get(f"{gw.url}/auth/session", headers=bearer(value)).status_code == 200
            done = run_cli(tmp_path, env_file, "token", "revoke", "ci")
            assert done.returncode == 0, done.stderr
            assert_rejection(client.get(f"{gw.url}/auth/session", headers=bearer(value)), 401, "Unauthorized")
        missing = run_cli(tmp_path, env_file, "token", "revoke", "ci")
        assert missing.returncode == 2
        assert "no token named 'ci'" in missing.stderr
    [line] = audit_events(tmp_path, "token.revoked")
    assert line["token"] == "ci"
    assert line["outcome"] == "ok"


def test_token_rotate_replaces_the_value(tmp_path: Path) -> None:
    """AUTH-08: `token rotate NAME --json` returns a new value; the old one stops working at once, scopes are kept."""
    env_file = write_env(tmp_path)
    store_url = f"sqlite:///{tmp_path}/s.db"
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token(), store_url=store_url) as gw:
        old = create(tmp_path, env_file, "bot", "--scope", "tool:toolbox/echo")["token"]
        rotated = run_cli(tmp_path, env_file, "token", "rotate", "bot", "--json")
        assert rotated.returncode == 0, rotated.stderr
        new = json.loads(rotated.stdout)["token"]
        assert new != old
        with httpx.Client(timeout=10) as client:
            assert client.get(f"{gw.url}/auth/session", headers=bearer(old)).status_code == 401
            who = client.get(f"{gw.url}/auth/session", headers=bearer(new)).json()
            assert who["scopes"] == ["tool:toolbox/echo"]


def test_token_expiry(tmp_path: Path) -> None:
    """AUTH-08: `--expires 30d` records an expiry 30 days out; a `--expires 1s` token is refused once it passes."""
    env_file = write_env(tmp_path)
    store_url = f"sqlite:///{tmp_path}/s.db"
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin_token(), store_url=store_url) as gw:
        month = create(tmp_path, env_file, "month", "--expires", "30d")
        assert abs(month["expires"] - (time.time() + 30 * 86400)) < 60
        short = create(tmp_path, env_file, "short", "--expires", "1s")["token"]
        wait_until(
            lambda: httpx.get(f"{gw.url}/auth/session", headers=bearer(short)).status_code == 401,
            timeout=5,
            interval=0.1,
        )
        assert audit_events(tmp_path, "auth.failure")[-1]["reason"] == "expired token"
        bad = run_cli(tmp_path, env_file, "token", "create", "x", "--expires", "soon")
        assert bad.returncode == 2


def test_token_create_refuses_unknown_scopes(tmp_path: Path) -> None:
    """AZ-07, AZ-08: a scope that is not admin, server:NAME or tool:SERVER/PATTERN is refused (exit 2)."""
    env_file = write_env(tmp_path)
    for scope in ["root", "*"]:
        done = run_cli(tmp_path, env_file, "token", "create", "x", "--scope", scope)
        assert done.returncode == 2, scope
        assert "is not a scope" in done.stderr


def test_token_generate_is_strong(tmp_path: Path) -> None:
    """CFG-03: `token generate` prints a fresh value that passes the AUTH_TOKEN strength check, different each time."""
    runs = [
        subprocess.run(
            [str(CLI), "token", "generate"], env=clean_env(tmp_path), capture_output=True, text=True, timeout=30
        )
        for _ in range(2)
    ]
    values = {run.stdout.strip() for run in runs}
    assert len(values) == 2
    for value in values:
        assert len(value) >= 40
        assert weakness(value) is None


def serve(tmp_path: Path, **values: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    env_file = write_env(tmp_path, MCP_CONFIG=str(config), LOG_DIR=str(tmp_path / "logs"), **values)
    return run_cli(tmp_path, env_file, "serve")


def test_weak_admin_tokens_are_refused_at_start(tmp_path: Path) -> None:
    """AUTH-05, CFG-03: AUTH_TOKEN shorter than 32 characters, the well-known default, or low-variety values make
    `serve` exit 2 with a message that does not echo the value."""
    for weak in ["change-this-default-token", "short-token-0123456789-abcdef"]:
        done = serve(tmp_path, AUTH_TOKEN=weak, PORT=str(free_port()))
        assert done.returncode == 2, (weak, done.stderr)
        assert "AUTH_TOKEN is too weak" in done.stderr
        assert weak not in done.stderr + done.stdout


def test_non_loopback_bind_without_a_token_is_refused(tmp_path: Path) -> None:
    """CFG-03, AUTH-05: HOST off loopback with no AUTH_TOKEN and no stored token is refused (exit 2) before binding;
    so is INSECURE_NO_AUTH off loopback. (192.0.2.1 is TEST-NET: nothing could be bound there anyway.)"""
    done = serve(tmp_path, HOST="192.0.2.1", PORT=str(free_port()))
    assert done.returncode == 2, done.stderr
    assert "refusing to bind 192.0.2.1 with no token" in done.stderr
    insecure = serve(
        tmp_path, HOST="192.0.2.1", PORT=str(free_port()), INSECURE_NO_AUTH="true", AUTH_TOKEN=admin_token()
    )
    assert insecure.returncode == 2
    assert "INSECURE_NO_AUTH" in insecure.stderr


def test_allow_everyone_is_warned_about_loudly(tmp_path: Path) -> None:
    """IP-09: ALLOWED_IPS=0.0.0.0 starts (on loopback) but prints a warning naming the risk before serving."""
    port = free_port()
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    env_file = write_env(
        tmp_path,
        MCP_CONFIG=str(config),
        LOG_DIR=str(tmp_path / "logs"),
        AUTH_TOKEN=admin_token(),
        ALLOWED_IPS="0.0.0.0",
        PORT=str(port),
    )
    stderr = tmp_path / "serve.err"
    with stderr.open("wb") as sink:
        proc = subprocess.Popen(
            [str(CLI), "serve", "--env-file", str(env_file)], cwd=tmp_path, env=clean_env(tmp_path), stderr=sink
        )
        try:
            wait_until(lambda: _live(port), timeout=20, interval=0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    text = stderr.read_text()
    [warning] = [line for line in text.splitlines() if "ALLOWED_IPS=0.0.0.0" in line]
    assert warning.startswith("warning:")
    assert "EVERY address" in warning


def _live(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
