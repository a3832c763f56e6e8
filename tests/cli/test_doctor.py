"""`mcp-bastion doctor`: static checks on crafted .env / mcp.json files, and `--live` security tests against a real
gateway (a secure one passes everything, a weak one fails). The CLI runs as a subprocess, on loopback only."""

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_bastion.cli.doctor import secret_args
from mcp_bastion.security import new_token
from tests.harness import DEMO, free_port, run_gateway, spec

CLI = Path(sys.executable).parent / "mcp-bastion"
TIMEOUT_S = 120.0
GHP = "ghp_" + "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4"  # looks like a GitHub token, is not one
OPAQUE = "Zx8Qm2LpR7vT4nK9wB3cY6dF1gH5jS0a"


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def setup(tmp_path: Path, servers: dict[str, Any] | None = None, mode: int = 0o600, **values: str) -> Path:
    """A .env (strong token, private store and audit log under tmp_path unless overridden) and an mcp.json."""
    values.setdefault("AUTH_TOKEN", new_token())
    values.setdefault("STORE_URL", f"sqlite:///{tmp_path}/data/s.db")
    values.setdefault("AUDIT_LOG", str(tmp_path / "logs" / "audit.jsonl"))
    values.setdefault("MCP_CONFIG", str(tmp_path / "mcp.json"))
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v != "<unset>"), encoding="utf-8")
    env_file.chmod(mode)
    if servers is None:
        servers = {"demo": {"command": DEMO[0], "args": DEMO[1:]}}
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return env_file


def doctor(tmp_path: Path, env_file: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    done = cli(tmp_path, "doctor", "--env-file", str(env_file), "--json", *extra)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout), done.stdout + done.stderr


def lines(report: dict[str, Any], check: str) -> list[dict[str, str]]:
    return [c for c in report["checks"] if c["check"] == check]


def test_a_clean_setup_passes_every_static_check(tmp_path: Path) -> None:
    env_file = setup(tmp_path)
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 0
    assert report["ok"] is True
    assert {c["status"] for c in report["checks"]} == {"PASS"}, report
    names = {c["check"] for c in report["checks"]}
    assert {"env file", "auth token", "bind address", "allowed IPs", "CORS origins", "TLS", "servers"} <= names
    assert {"secrets in args", "audit log", "store", "serve start-up"} <= names
    assert not (tmp_path / "data" / "s.db").exists(), "doctor must not create the store"
    human = cli(tmp_path, "doctor", "--env-file", str(env_file))
    assert human.returncode == 0
    assert "PASS" in human.stdout
    assert "FAIL" not in human.stdout


@pytest.mark.parametrize(
    ("values", "mode", "check", "status", "hint"),
    [
        ({}, 0o644, "env file", "WARN", "chmod 600 /"),
        ({}, 0o640, "env file", "WARN", "chmod 600 /"),
        ({"AUTH_TOKEN": "changeme"}, 0o600, "auth token", "FAIL", "mcp-bastion token generate"),
        ({"AUTH_TOKEN": "short-token"}, 0o600, "auth token", "FAIL", "mcp-bastion token generate"),
        ({"AUTH_TOKEN": "a" * 40}, 0o600, "auth token", "FAIL", "mcp-bastion token generate"),
        ({"AUTH_TOKEN": "<unset>"}, 0o600, "auth token", "WARN", "token create NAME --scope admin"),
        ({"AUTH_TOKEN": "<unset>", "HOST": "0.0.0.0"}, 0o600, "auth token", "FAIL", "token generate"),
        ({"INSECURE_NO_AUTH": "true"}, 0o600, "auth token", "WARN", "remove INSECURE_NO_AUTH"),
        ({"ALLOWED_IPS": "0.0.0.0"}, 0o600, "allowed IPs", "WARN", "list your clients in ALLOWED_IPS"),
        ({"ALLOWED_IPS": "0.0.0.0", "HOST": "0.0.0.0"}, 0o600, "allowed IPs", "WARN", "instead of 0.0.0.0"),
        ({"ALLOWED_IPS": "0.0.0.0", "HOST": "0.0.0.0"}, 0o600, "bind address", "WARN", "ALLOWED_IPS"),
        ({"ALLOWED_IPS": "", "HOST": "0.0.0.0"}, 0o600, "bind address", "WARN", "ALLOWED_IPS"),
        ({"HOST": "0.0.0.0"}, 0o600, "bind address", "WARN", "add your clients' addresses"),
        ({"ALLOWED_IPS": "not-an-ip"}, 0o600, "allowed IPs", "FAIL", "CIDR"),
        ({"ALLOWED_ORIGINS": "https://a.example,*"}, 0o600, "CORS origins", "FAIL", "list exact origins"),
        ({"ALLOWED_ORIGINS": "null"}, 0o600, "CORS origins", "FAIL", "list exact origins"),
        ({"HOST": "0.0.0.0", "ALLOWED_IPS": "10.0.0.0/8"}, 0o600, "TLS", "FAIL", "ALLOW_PLAINTEXT=1"),
        ({"TLS_CERT_FILE": "/nonexistent/cert.pem"}, 0o600, "TLS", "FAIL", "TLS_KEY_FILE"),
        ({"PORT": "99999"}, 0o600, "settings", "FAIL", "fix that value"),
    ],
)
def test_each_bad_setting_is_reported_with_its_fix(
    tmp_path: Path, values: dict[str, str], mode: int, check: str, status: str, hint: str
) -> None:
    env_file = setup(tmp_path, mode=mode, **values)
    code, report, output = doctor(tmp_path, env_file)
    found = lines(report, check)
    assert any(c["status"] == status and hint in c["hint"] for c in found), found
    assert code == (1 if any(c["status"] == "FAIL" for c in report["checks"]) else 0)
    if status == "FAIL":
        assert code == 1
        assert report["ok"] is False
    token = values.get("AUTH_TOKEN")
    if token and token != "<unset>":
        assert token not in output


def test_a_weak_token_also_gets_serves_own_refusal(tmp_path: Path) -> None:
    env_file = setup(tmp_path, AUTH_TOKEN="change-this-default-token")
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 1
    [verdict] = lines(report, "serve start-up")
    assert verdict["status"] == "FAIL"
    assert "refuses to start" in verdict["detail"]


def test_warnings_exit_zero_unless_strict(tmp_path: Path) -> None:
    env_file = setup(tmp_path, ALLOWED_IPS="0.0.0.0")
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 0
    assert report["counts"]["WARN"] >= 1
    assert report["counts"]["FAIL"] == 0
    strict, _, _ = doctor(tmp_path, env_file, "--strict")
    assert strict == 1


def test_tls_files_missing_or_a_key_readable_by_others_fail(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert", encoding="utf-8")
    key.write_text("key", encoding="utf-8")
    key.chmod(0o644)
    env_file = setup(tmp_path, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key))
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 1
    assert any(c["status"] == "FAIL" and c["hint"] == f"chmod 600 {key}" for c in lines(report, "TLS"))
    key.chmod(0o600)
    code, report, _ = doctor(tmp_path, env_file)
    assert [c["status"] for c in lines(report, "TLS")] == ["PASS"]
    assert code == 0
    key.unlink()
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 1
    assert any(c["status"] == "FAIL" and "does not exist" in c["detail"] for c in lines(report, "TLS"))


def test_a_command_not_on_path_is_a_fail_line_not_an_exit(tmp_path: Path) -> None:
    env_file = setup(tmp_path, servers={"ghost": {"command": "no-such-command-mcp-bastion-doctor"}})
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 1
    [servers] = lines(report, "servers")
    assert servers["status"] == "FAIL"
    assert "no-such-command-mcp-bastion-doctor" in servers["detail"]
    assert "check-config" in servers["hint"]
    assert lines(report, "store"), "the checks after the servers still ran"


def test_audit_log_directory_not_writable_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    env_file = setup(tmp_path, AUDIT_LOG=str(blocker / "logs" / "audit.jsonl"))
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 1
    [audit] = lines(report, "audit log")
    assert audit["status"] == "FAIL"
    assert "AUDIT_LOG" in audit["hint"]


def test_an_unreachable_store_fails(tmp_path: Path) -> None:
    env_file = setup(tmp_path, STORE_URL=f"redis://127.0.0.1:{free_port()}/0")
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 1
    [store] = lines(report, "store")
    assert store["status"] == "FAIL"
    assert "STORE_URL" in store["hint"]


def test_an_existing_store_is_opened_and_answers(tmp_path: Path) -> None:
    env_file = setup(tmp_path, AUTH_TOKEN="<unset>")
    created = cli(tmp_path, "token", "create", "ops", "--scope", "admin", "--env-file", str(env_file), "--json")
    assert created.returncode == 0, created.stderr
    code, report, _ = doctor(tmp_path, env_file)
    assert code == 0
    [store] = lines(report, "store")
    assert store["status"] == "PASS"
    assert "1 named token" in store["detail"]
    [token] = lines(report, "auth token")
    assert token["status"] == "PASS"


def test_secrets_in_args_are_flagged_by_server_and_index_never_by_value(tmp_path: Path) -> None:
    secrets = {
        "ghp": GHP,
        "flag": "hunter2-is-my-password",
        "openai": "sk-" + "Q" * 4 + OPAQUE,
        "aws": "AKIA" + "ABCDEFGHIJKLMNOP",
        "slack": "xoxb-" + "1234567890-abcdefghij",
        "url": "s3cr3t-pw",
    }
    servers = {
        "github": {
            "command": DEMO[0],
            "args": ["-y", "@modelcontextprotocol/server-github", "--token", secrets["ghp"], "--port=8080"],
        },
        "misc": {
            "command": DEMO[0],
            "args": [
                f"--api-key={secrets['flag']}",  # 0
                secrets["openai"],  # 1
                "--region",  # 2
                "eu-west-1",  # 3
                secrets["aws"],  # 4
                f"--slack={secrets['slack']}",  # 5
                f"postgresql://app:{secrets['url']}@localhost/db",  # 6
                "/usr/lib/node_modules/some-package/dist/index.js",  # 7
                OPAQUE,  # 8
                "--auth-token=${SERVICE_TOKEN}",  # 9
            ],
        },
    }
    env_file = setup(tmp_path, servers=servers, SERVICE_TOKEN="plain-but-still-secret-" + OPAQUE[:8])
    code, report, output = doctor(tmp_path, env_file)
    assert code == 1
    flagged = {c["detail"].split(":")[0]: c["status"] for c in lines(report, "secrets in args")}
    assert flagged == {
        "server 'github' args[3]": "FAIL",
        "server 'misc' args[0]": "FAIL",
        "server 'misc' args[1]": "FAIL",
        "server 'misc' args[4]": "FAIL",
        "server 'misc' args[5]": "FAIL",
        "server 'misc' args[6]": "FAIL",
        "server 'misc' args[8]": "WARN",
        "server 'misc' args[9]": "FAIL",
    }
    assert all('"env"' in c["hint"] for c in lines(report, "secrets in args"))
    human = cli(tmp_path, "doctor", "--env-file", str(env_file))
    assert human.returncode == 1
    assert "args[3]" in human.stdout
    for value in [*secrets.values(), OPAQUE, "plain-but-still-secret"]:
        assert value not in output
        assert value not in human.stdout + human.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["-y", "@modelcontextprotocol/server-github"],
        ["-m", "mcp_bastion.demo_server", "--port=8080", "--verbose"],
        ["/home/user/projects/my-repository-with-a-long-name", "--root", "/srv/data"],
        ["--token-file", "/run/secrets/token"],
        ["@playwright/mcp@latest", "--headless", "--browser", "chromium"],
        ["postgresql://localhost:5432/app", "https://api.example.com/v1"],
    ],
)
def test_ordinary_arguments_are_not_flagged(args: list[str]) -> None:
    assert secret_args(args) == []


# --- live ----------------------------------------------------------------------------------------------------------
def live(tmp_path: Path, url: str, *extra: str, token: str | None = None) -> tuple[int, dict[str, Any], str]:
    env_file = tmp_path / "none.env"  # the token comes from --token
    args = ["doctor", "--live", url, "--json", "--env-file", str(env_file), *extra]
    done = cli(tmp_path, *args, *(["--token", token] if token else []))
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout), done.stdout + done.stderr


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["check"]: c["status"] for c in report["checks"]}


def test_live_checks_pass_against_a_secure_gateway(tmp_path: Path) -> None:
    token = new_token()
    with run_gateway(
        [spec("demo", DEMO)], tmp_path, insecure_no_auth=False, auth_token=token, rate_limit_max_requests=20
    ) as gw:
        code, report, output = live(tmp_path, gw.url, token=token)
    assert statuses(report) == {
        "reachable": "PASS",
        "no token → 401": "PASS",
        "wrong token → 401": "PASS",
        "good token → 200": "PASS",
        "foreign Origin → 403": "PASS",
        "security headers": "PASS",
        "rate limit → 429": "PASS",
    }, report
    assert code == 0
    assert report["ok"] is True
    [rate] = lines(report, "rate limit → 429")
    sent = int(rate["detail"].split("after ")[1].split(" ")[0])
    assert sent <= 20, "the limit was reached within the configured 20 requests"
    assert token not in output


def test_live_token_from_the_env_file_and_human_table(tmp_path: Path) -> None:
    token = new_token()
    env_file = setup(tmp_path, AUTH_TOKEN=token)
    with run_gateway([spec("demo", DEMO)], tmp_path, insecure_no_auth=False, auth_token=token) as gw:
        done = cli(tmp_path, "doctor", "--live", gw.url, "--skip-rate-limit", "--env-file", str(env_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "good token → 200" in done.stdout
    assert "rate limit" not in done.stdout
    assert "FAIL" not in done.stdout
    assert token not in done.stdout + done.stderr


def test_live_checks_fail_against_a_gateway_without_authentication(tmp_path: Path) -> None:
    with run_gateway([spec("demo", DEMO)], tmp_path, insecure_no_auth=True, rate_limit_max_requests=20) as gw:
        code, report, _ = live(tmp_path, gw.url, token=new_token())
    found = statuses(report)
    assert found["no token → 401"] == "FAIL"
    assert found["wrong token → 401"] == "FAIL"
    assert found["foreign Origin → 403"] == "PASS"
    assert found["rate limit → 429"] == "PASS"
    assert code == 1
    assert report["ok"] is False
    [no_token] = lines(report, "no token → 401")
    assert "INSECURE_NO_AUTH" in no_token["hint"]


def test_live_reports_a_wrong_token_and_a_missing_rate_limit(tmp_path: Path) -> None:
    with run_gateway(
        [spec("demo", DEMO)], tmp_path, insecure_no_auth=False, auth_token=new_token(), auth_failure_limit=1_000_000
    ) as gw:
        # the harness's default per-address limit is a million: 429 is never reached within the 1000-request bound
        code, report, _ = live(tmp_path, gw.url, token=new_token())
    found = statuses(report)
    assert found["no token → 401"] == "PASS"
    assert found["good token → 200"] == "FAIL"
    assert found["rate limit → 429"] == "FAIL"
    assert code == 1


def test_live_unreachable_server_fails(tmp_path: Path) -> None:
    code, report, _ = live(tmp_path, f"http://127.0.0.1:{free_port()}", token=new_token())
    assert code == 1
    assert statuses(report) == {"reachable": "FAIL"}


def test_live_without_any_token_is_a_usage_error(tmp_path: Path) -> None:
    done = cli(tmp_path, "doctor", "--live", "http://127.0.0.1:1", "--env-file", str(tmp_path / "none.env"))
    assert done.returncode == 2
    assert "needs a token" in done.stderr


def test_help_has_an_example(tmp_path: Path) -> None:
    done = cli(tmp_path, "doctor", "--help")
    assert done.returncode == 0
    assert "Example: mcp-bastion doctor" in done.stdout
    assert "--skip-rate-limit" in done.stdout


@pytest.mark.parametrize(
    ("values", "check", "status", "detail"),
    [
        ({"TRUSTED_PROXIES": "0.0.0.0/0"}, "trusted proxies", "FAIL", "TRUSTED_PROXIES covers every address"),
        ({"TRUSTED_PROXIES": "::/0"}, "trusted proxies", "FAIL", "TRUSTED_PROXIES covers every address"),
        ({"TRUSTED_PROXIES": "127.0.0.1"}, "trusted proxies", "PASS", "TRUSTED_PROXIES=127.0.0.1"),
        (
            {"INSECURE_NO_AUTH": "true", "TRUSTED_PROXIES": "127.0.0.1"},
            "auth token",
            "FAIL",
            "INSECURE_NO_AUTH cannot be used with TRUSTED_PROXIES",
        ),
        ({"HOST": "0.0.0.0", "ALLOWED_IPS": "10.0.0.0/8"}, "TLS", "FAIL", "refusing to serve plain HTTP"),
        ({"HOST": "0.0.0.0", "ALLOWED_IPS": "10.0.0.0/8", "ALLOW_PLAINTEXT": "1"}, "TLS", "PASS", "ALLOW_PLAINTEXT=1"),
    ],
)
def test_doctor_reports_serves_proxy_and_plaintext_refusals(
    tmp_path: Path, values: dict[str, str], check: str, status: str, detail: str
) -> None:
    """Issue 8 (preflight): doctor reports each of serve's new refusals on the check it concerns, with serve's own
    sentence, and its serve start-up verdict fails exactly when one is reported."""
    env_file = setup(tmp_path, **values)
    code, report, _ = doctor(tmp_path, env_file)
    found = lines(report, check)
    assert any(c["status"] == status and detail in c["detail"] for c in found), found
    [verdict] = lines(report, "serve start-up")
    assert (verdict["status"] == "FAIL") == (status == "FAIL"), verdict
    assert code == (1 if status == "FAIL" else 0)


def test_live_refuses_plain_http_off_loopback_and_sends_nothing(tmp_path: Path) -> None:
    """Issue 8 (preflight): `doctor --live http://0.0.0.0:PORT` would send the admin token unencrypted to a
    non-loopback address (Linux routes the wildcard to this machine, where a socket listens): doctor exits 2 with
    one line naming the fixes, and the socket never sees a connection, let alone a byte."""
    env_file = setup(tmp_path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = cli(tmp_path, "doctor", "--env-file", str(env_file), "--live", f"http://0.0.0.0:{port}")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # a connection, even one never written to, would be waiting here
    assert done.returncode == 2, (done.stdout, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert "refusing to send the admin token in clear text" in line
    assert "use https://" in line
    assert "SSH tunnel to loopback" in line
    assert done.stdout == ""
