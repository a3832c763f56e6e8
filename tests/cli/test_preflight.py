"""Issue 10 item 5: `serve`, `check-config` and `doctor` judge settings with one preflight (cli/preflight.py), so
a setting one of them refuses is refused by all three, with the same sentence and the same fix."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port
from tests.security.support import admin_token, run_cli, write_env

WEAK = "change-this-default-token"  # the well-known default, refused as too weak

# (the settings, the words of the refusal every command must show)
REFUSED: dict[str, tuple[dict[str, str], list[str]]] = {
    "weak-token": ({"AUTH_TOKEN": WEAK}, ["AUTH_TOKEN is too weak", "mcp-bastion token generate"]),
    "proxies-everything": ({"TRUSTED_PROXIES": "0.0.0.0/0"}, ["TRUSTED_PROXIES covers every address"]),
    "proxies-halves": ({"TRUSTED_PROXIES": "0.0.0.0/1,128.0.0.0/1"}, ["TRUSTED_PROXIES covers every address"]),
    "no-auth-behind-proxy": (
        {"AUTH_TOKEN": "", "INSECURE_NO_AUTH": "true", "TRUSTED_PROXIES": "127.0.0.1"},
        ["INSECURE_NO_AUTH cannot be used with TRUSTED_PROXIES", "set AUTH_TOKEN"],
    ),
    "plaintext-off-loopback": (
        {"HOST": "192.0.2.1"},
        ["refusing to serve plain HTTP on 192.0.2.1", "ALLOW_PLAINTEXT=1"],
    ),
    "no-token-off-loopback": (
        {"AUTH_TOKEN": "", "HOST": "192.0.2.1", "ALLOW_PLAINTEXT": "1"},
        ["refusing to bind 192.0.2.1 with no token"],
    ),
    "cors-wildcard": ({"ALLOWED_ORIGINS": "*"}, ["ALLOWED_ORIGINS may not contain *", "list exact origins"]),
    "bad-allowed-ips": ({"ALLOWED_IPS": "not-an-ip"}, ["'not-an-ip' is not an IP address"]),
    "tls-half": ({"TLS_CERT_FILE": "/nonexistent/cert.pem"}, ["TLS_KEY_FILE is not set"]),
}


def settings(tmp_path: Path, values: dict[str, str]) -> Path:
    """A private .env with a strong token, no servers, and these values (an empty value unsets one)."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {}}), encoding="utf-8")
    merged = {"AUTH_TOKEN": admin_token(), "PORT": str(free_port()), "MCP_CONFIG": str(config), **values}
    merged["LOG_DIR"] = str(tmp_path / "logs")
    return write_env(tmp_path, **{key: value for key, value in merged.items() if value})


def error_lines(done: subprocess.CompletedProcess[str], prefix: str) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith(prefix)]


def doctor_rows(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 1, (done.stdout, done.stderr)
    return list(json.loads(done.stdout)["checks"])


@pytest.mark.parametrize("case", list(REFUSED))
def test_serve_check_config_and_doctor_refuse_the_same_settings_with_the_same_words(tmp_path: Path, case: str) -> None:
    """Issue 10 item 5: each bad setting makes serve exit 2 before binding, check-config exit 2 with a `refused:`
    line, and doctor fail both the row it concerns and its serve start-up verdict; every one of them names the
    same problem and fix, and none echoes the weak token."""
    values, words = REFUSED[case]
    env_file = settings(tmp_path, values)
    serve = run_cli(tmp_path, env_file, "serve", COLUMNS="400")
    check = run_cli(tmp_path, env_file, "check-config", COLUMNS="400")
    doctor = run_cli(tmp_path, env_file, "doctor", "--json")
    assert serve.returncode == 2, (serve.stdout, serve.stderr)
    assert check.returncode == 2, (check.stdout, check.stderr)
    served = error_lines(serve, "error:")
    refused = error_lines(check, "refused:")
    rows = doctor_rows(doctor)
    failed = [row for row in rows if row["status"] == "FAIL" and row["check"] != "serve start-up"]
    [verdict] = [row for row in rows if row["check"] == "serve start-up"]
    assert verdict["status"] == "FAIL"
    for word in words:
        assert any(word in line for line in served), (word, serve.stderr)
        assert any(word in line for line in refused), (word, check.stderr)
        assert any(word in f"{row['detail']}; {row['hint']}" for row in failed), (word, failed)
        assert word in verdict["detail"], (word, verdict)
    assert "serving" not in serve.stderr
    for done in (serve, check, doctor):
        assert WEAK not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr


def test_check_config_prints_serves_warnings_and_passes(tmp_path: Path) -> None:
    """Issue 10 item 5: what serve only warns about (ALLOWED_IPS=0.0.0.0) check-config warns about too, on stderr,
    and still exits 0 with its OK line on stdout; doctor shows the same warning as a WARN row."""
    env_file = settings(tmp_path, {"ALLOWED_IPS": "0.0.0.0"})
    check = run_cli(tmp_path, env_file, "check-config", COLUMNS="400")
    assert check.returncode == 0, check.stderr
    [warning] = error_lines(check, "warning:")
    assert "ALLOWED_IPS=0.0.0.0 lets EVERY address on the network connect" in warning
    assert "server(s) OK" in check.stdout
    doctor = run_cli(tmp_path, env_file, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout
    [row] = [row for row in json.loads(doctor.stdout)["checks"] if row["check"] == "allowed IPs"]
    assert row["status"] == "WARN"
    assert "ALLOWED_IPS=0.0.0.0 lets EVERY address on the network connect" in row["detail"]
