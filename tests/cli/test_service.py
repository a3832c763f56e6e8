"""`mcp-bastion service systemd|pm2`: files systemd and node accept, hardened, naming paths and never secrets."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "mcp-bastion"
RUN_TIMEOUT_S = 30.0
ADMIN_TOKEN = "service-test-admin-token-Zq8vW3xK9mP2rT5yB7nC4"
SESSION_SECRET = "service-test-session-secret-Hj6Lk1Qw0Er9Ty8Ui7"
GITHUB_TOKEN = "ghp_serviceTestSecretValue0123456789abcdef"
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RestrictRealtime=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "UMask=0077",
    "KillMode=control-group",
    "Restart=on-failure",
]


TMP_DIRS = ("/tmp/", "/var/tmp/")
OUTSIDE_TMP = ("/dev/shm", "/run", "/var/lib")


@pytest.fixture
def install(tmp_path: Path) -> Path:
    """A deployment directory with a .env full of secrets and an mcp.json referring to one of them."""
    return deployment(tmp_path / "srv")


@pytest.fixture
def install_outside_tmp() -> Iterator[Path]:
    """The same deployment outside /tmp and /var/tmp (where a real one lives), removed afterwards."""
    base = next((Path(p) for p in OUTSIDE_TMP if os.access(p, os.W_OK | os.X_OK)), None)
    if base is None:
        pytest.skip("no writable directory outside /tmp")
    with tempfile.TemporaryDirectory(prefix="bastion-service-", dir=base) as directory:
        yield deployment(Path(directory) / "srv")


def deployment(directory: Path) -> Path:
    directory.mkdir()
    env = directory / ".env"
    env.write_text(f"AUTH_TOKEN={ADMIN_TOKEN}\nSESSION_SECRET={SESSION_SECRET}\nGITHUB_TOKEN={GITHUB_TOKEN}\n")
    env.chmod(0o600)
    (directory / "mcp.json").write_text(
        '{"mcpServers": {"gh": {"command": "npx", "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}}}}'
    )
    return directory


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )


def unit_settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def assert_no_secret(text: str) -> None:
    for secret in (ADMIN_TOKEN, SESSION_SECRET, GITHUB_TOKEN):
        assert secret not in text


def test_systemd_unit_is_hardened_runs_this_venv_and_holds_no_secret(install_outside_tmp: Path, tmp_path: Path) -> None:
    install = install_outside_tmp
    target = tmp_path / "out" / "mcp-bastion.service"
    target.parent.mkdir()
    done = run_cli(tmp_path, "service", "systemd", "--user", "nobody", "--dir", str(install), "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert str(target) in done.stdout
    for step in ("systemctl daemon-reload", "systemctl enable", "systemctl start"):
        assert step in done.stdout
    text = target.read_text()
    settings = unit_settings(text)
    for line in HARDENING:
        assert line in text.splitlines(), line
    exec_start = settings["ExecStart"][0].split()
    assert exec_start[0] == str(CLI.absolute())
    assert exec_start[1:] == [
        "serve",
        "--env-file",
        str(install / ".env"),
        "--config",
        str(install / "mcp.json"),
        "--log-format",
        "json",
    ]
    assert settings["User"] == ["nobody"]
    assert settings["WorkingDirectory"] == [str(install)]
    assert settings["ReadWritePaths"] == [str(install)]
    assert settings["ProtectHome"][0] in ("yes", "read-only")
    assert settings["PrivateTmp"] == (["no"] if str(CLI.absolute()).startswith(TMP_DIRS) else ["yes"])
    for key in ("RestartSec", "TimeoutStopSec", "LimitNOFILE"):
        assert int(settings[key][0]) > 0
    assert_no_secret(text + done.stdout + done.stderr)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(install: Path, tmp_path: Path) -> None:
    target = tmp_path / "mcp-bastion.service"
    assert run_cli(tmp_path, "service", "systemd", "--dir", str(install), "--output", str(target)).returncode == 0
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    assert verify.returncode == 0, verify.stderr
    # verify exits 0 on lines it ignores; those name the file.
    complaints = [line for line in (verify.stdout + verify.stderr).splitlines() if target.name in line]
    assert complaints == []


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_pm2_ecosystem_is_valid_javascript_and_holds_no_secret(install: Path, tmp_path: Path) -> None:
    done = run_cli(tmp_path, "service", "pm2", "--dir", str(install))
    assert done.returncode == 0, done.stderr
    target = install / "ecosystem.config.js"
    assert str(target) in done.stdout
    assert f"pm2 start {target}" in done.stdout
    check = subprocess.run(
        ["node", "--check", str(target)], capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    assert check.returncode == 0, check.stderr
    loaded = subprocess.run(
        ["node", "-e", f"console.log(JSON.stringify(require({str(target)!r})))"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    app = json.loads(loaded.stdout)["apps"][0]
    assert app["script"] == str(CLI.absolute())
    assert app["args"] == ["serve", "--env-file", str(install / ".env"), "--config", str(install / "mcp.json")]
    assert app["cwd"] == str(install)
    assert app["autorestart"] is True
    assert app["max_restarts"] > 0
    assert app["kill_timeout"] > 0
    assert app["env"] == {}
    assert_no_secret(target.read_text() + done.stdout + done.stderr)


@pytest.mark.parametrize("kind", ["systemd", "pm2"])
def test_an_existing_file_is_kept_unless_forced(install: Path, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "existing"
    target.write_text("mine")
    refused = run_cli(tmp_path, "service", kind, "--dir", str(install), "--output", str(target))
    assert refused.returncode == 2
    assert "--force" in refused.stderr
    assert target.read_text() == "mine"
    forced = run_cli(tmp_path, "service", kind, "--dir", str(install), "--output", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "mcp-bastion" in target.read_text()


def test_a_directory_with_spaces_is_refused_rather_than_mis_quoted(tmp_path: Path) -> None:
    spaced = tmp_path / "my server"
    spaced.mkdir()
    done = run_cli(tmp_path, "service", "systemd", "--dir", str(spaced))
    assert done.returncode == 2
    assert "special characters" in done.stderr
    assert not (spaced / "mcp-bastion.service").exists()


def test_an_install_under_tmp_turns_private_tmp_off_and_says_why(install: Path, tmp_path: Path) -> None:
    """Issue 10 item 10: with the directory under /tmp, PrivateTmp=yes would give the service an empty /tmp of its
    own and it could never start; the unit sets PrivateTmp=no (with a comment) and the command warns, naming the
    path and a lasting place to install instead."""
    assert str(install).startswith(TMP_DIRS)
    target = tmp_path / "unit.service"
    done = run_cli(tmp_path, "service", "systemd", "--user", "nobody", "--dir", str(install), "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert unit_settings(target.read_text())["PrivateTmp"] == ["no"]
    warning = " ".join(done.stderr.split())
    assert f"warning: {install}" in warning
    assert "PrivateTmp=yes would hide" in warning
    assert "/opt or /srv" in warning
