"""The real `mcp-bastion` keeps its promise: every error is one line with a hint and exit code 2, never a traceback,
never a usage panel; `--version`/`-V` exist; a busy port is refused before anything says "serving" (issue 10 item 4).
"""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_bastion import __version__
from tests.harness import free_port

CLI = Path(sys.executable).parent / "mcp-bastion"
RUN_TIMEOUT_S = 30.0
ADMIN_TOKEN = "one-line-errors-admin-token-Kk4Jj7Hh2Gg9Ff5"
DEMO_CONFIG = {"mcpServers": {"demo": {"command": sys.executable, "args": ["-m", "mcp_bastion.demo_server"]}}}


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script from `cwd`, with a clean environment and HOME there."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(cwd), "LANG": "C.UTF-8", "COLUMNS": "80"}
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command, checked: exit 2, `error: ... (hint: ...)`, nothing else."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "(hint: " in lines[0], lines[0]
    assert done.stdout == ""
    return lines[0]


@pytest.fixture
def install(tmp_path: Path) -> Path:
    """A directory with the demo mcp.json and a .env holding a strong AUTH_TOKEN."""
    (tmp_path / "mcp.json").write_text(json.dumps(DEMO_CONFIG))
    env = tmp_path / ".env"
    env.write_text(f"AUTH_TOKEN={ADMIN_TOKEN}\n")
    env.chmod(0o600)
    return tmp_path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (here: this one) listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("flag", ["--version", "-V", "version"])
def test_version_flags_print_the_version(tmp_path: Path, flag: str) -> None:
    done = run_cli(tmp_path, flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __version__


def test_token_create_without_a_name_is_one_line_with_an_example(install: Path) -> None:
    line = one_error_line(run_cli(install, "token", "create"))
    assert "Missing argument" in line
    assert "e.g. `mcp-bastion token create cursor-laptop" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["token", "list", "--bogus"], ["No such option: --bogus", "token list --help"]),
        (["serve", "--port", "abc"], ["'--port'", "e.g. `mcp-bastion serve"]),
        (["no-such-command"], ["No such command", "--help"]),
        (["token", "create", "ci", "--expires", "3q"], ["--expires '3q'", "30d"]),
        (["token", "create", "no spaces"], ["token name 'no spaces'", "cursor-laptop"]),
    ],
)
def test_bad_flags_and_values_are_one_line_with_a_hint(install: Path, args: list[str], words: list[str]) -> None:
    line = one_error_line(run_cli(install, *args))
    assert all(word in line for word in words), line


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_missing_mcp_json_says_how_to_write_one(tmp_path: Path, command: str) -> None:
    line = one_error_line(run_cli(tmp_path, command))
    assert "no server file at mcp.json" in line
    assert "`mcp-bastion demo`" in line
    assert "`mcp-bastion init`" in line


def test_a_bad_setting_names_it_and_where_to_fix_it(install: Path) -> None:
    (install / ".env").write_text("PORT=abc\n")
    line = one_error_line(run_cli(install, "check-config"))
    assert "setting PORT" in line
    assert "fix it in .env" in line


@pytest.mark.parametrize("command", [["check-config"], ["token", "list"], ["serve"]])
def test_a_settings_file_that_is_a_directory_is_refused_not_ignored(install: Path, command: list[str]) -> None:
    (install / "settings").mkdir()
    line = one_error_line(run_cli(install, *command, "--env-file", "settings"))
    assert "the settings file settings is a directory" in line


@pytest.mark.parametrize("command", [["check-config"], ["token", "list"]])
def test_a_settings_file_that_is_not_utf8_is_one_line_not_a_traceback(install: Path, command: list[str]) -> None:
    (install / ".env").write_bytes(b"AUTH_TOKEN=\xff\xfe\n")
    line = one_error_line(run_cli(install, *command))
    assert "not UTF-8" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_settings_file_is_one_line(install: Path) -> None:
    (install / ".env").chmod(0)
    line = one_error_line(run_cli(install, "check-config"))
    assert "cannot read the settings file .env" in line


def test_an_unreachable_store_is_one_line_with_a_hint(install: Path) -> None:
    closed = free_port()
    (install / ".env").write_text(f"AUTH_TOKEN={ADMIN_TOKEN}\nSTORE_URL=redis://127.0.0.1:{closed}/0\n")
    line = one_error_line(run_cli(install, "token", "list"))
    assert "STORE_URL" in line


def test_serve_on_a_busy_port_is_one_line_and_no_banner(install: Path, busy_port: int) -> None:
    done = run_cli(install, "serve", "--port", str(busy_port))
    line = one_error_line(done)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line
    assert "--port" in line
    assert "serving" not in done.stderr
    assert "Try it" not in done.stderr


def test_serve_on_a_busy_port_with_json_logs_is_one_json_line(install: Path, busy_port: int) -> None:
    done = run_cli(install, "serve", "--port", str(busy_port), "--log-format", "json")
    assert done.returncode == 2, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert len(entries) == 1, done.stderr
    assert entries[0]["level"] == "error"
    assert f"cannot listen on 127.0.0.1:{busy_port}" in entries[0]["message"]
    assert "(hint: " in entries[0]["message"]


def test_serve_on_an_address_that_is_not_ours_is_one_line(install: Path) -> None:
    # TEST-NET-1 (RFC 5737) is never assigned to this machine; ALLOW_PLAINTEXT and ALLOWED_IPS get past preflight.
    with (install / ".env").open("a") as env:
        env.write("ALLOW_PLAINTEXT=1\nALLOWED_IPS=192.0.2.0/24\n")
    line = one_error_line(run_cli(install, "serve", "--host", "192.0.2.1", "--port", str(free_port())))
    assert "cannot listen on 192.0.2.1" in line
    assert "not an address of this machine" in line
