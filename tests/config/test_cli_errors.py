"""The real `mcp-bastion` CLI on bad configuration: exit code 2, one line naming file, server and key."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import FIXTURES

CLI = Path(sys.executable).parent / "mcp-bastion"
RUN_TIMEOUT_S = 15.0
TOOLBOX = {"command": sys.executable, "args": [str(FIXTURES / "toolbox.py")]}


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a clean environment (nothing of ours leaks in) from an empty directory."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(CLI), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )


def stderr_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.strip().splitlines() if line.strip()]


def write_config(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "bastion.env"
    path.write_text("")
    return path


# (config document, words the one error line must contain besides the file name)
BAD_CONFIGS = {
    "bad-json": ('{"mcpServers": {"s": {"command": "x",}}}', ["invalid JSON", "line 1", "column"]),
    "unknown-key": ({"mcpServers": {"files": {**TOOLBOX, "comand": "typo"}}}, ["'files'", "'comand'", "unknown key"]),
    "missing-variable": (
        {"mcpServers": {"github": {**TOOLBOX, "env": {"GITHUB_TOKEN": "${BASTION_TEST_UNSET_TOKEN}"}}}},
        ["'github'", "'env'", "${BASTION_TEST_UNSET_TOKEN}", "not set"],
    ),
    "command-not-found": (
        {"mcpServers": {"ghost": {"command": "bastion-no-such-command-7f3a", "args": []}}},
        ["'ghost'", "'command'", "'bastion-no-such-command-7f3a'", "not found"],
    ),
}


@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_exits_2_with_one_line_naming_file_server_and_key(
    tmp_path: Path, env_file: Path, command: str, case: str
) -> None:
    document, words = BAD_CONFIGS[case]
    config = write_config(tmp_path, document)
    done = run_cli(tmp_path, command, "--config", str(config), "--env-file", str(env_file))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = stderr_lines(done)
    assert str(config) in lines[0]
    for word in words:
        assert word in lines[0]
    assert len(lines) == 1, f"expected exactly one line on stderr, got {lines!r}"


def test_config_text_that_looks_like_console_markup_is_reported_verbatim(tmp_path: Path, env_file: Path) -> None:
    """An error message quotes the user's own text; `[/x]` in a key must not crash or vanish."""
    config = write_config(tmp_path, {"mcpServers": {"s": {**TOOLBOX, "[/path/to/server]": 1}}})
    done = run_cli(tmp_path, "check-config", "--config", str(config), "--env-file", str(env_file))
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stderr
    assert "'[/path/to/server]'" in done.stderr


def test_a_claude_desktop_file_passes_check_config(tmp_path: Path, env_file: Path) -> None:
    env_file.write_text("BASTION_TEST_TOKEN=from-dotenv\n")
    config = write_config(
        tmp_path,
        {
            "mcpServers": {
                "files": {**TOOLBOX, "env": {"TOKEN": "${BASTION_TEST_TOKEN}", "MODE": "${BASTION_TEST_MODE:-ro}"}},
                "typed": {"type": "stdio", **TOOLBOX},
            }
        },
    )
    done = run_cli(tmp_path, "check-config", "--config", str(config), "--env-file", str(env_file))
    assert done.returncode == 0, done.stderr
    assert " ".join(done.stdout.split()) == f"{config}: 2 server(s) OK: files, typed"


@pytest.mark.parametrize(
    ("flags", "dotenv", "host"),
    [
        (["--host", "0.0.0.0"], "", "0.0.0.0"),
        (["--host", "::"], "", "::"),
        ([], "HOST=0.0.0.0\n", "0.0.0.0"),
    ],
    ids=["flag-any-ipv4", "flag-any-ipv6", "dotenv-any-ipv4"],
)
def test_serve_refuses_a_non_loopback_host(
    tmp_path: Path, env_file: Path, flags: list[str], dotenv: str, host: str
) -> None:
    env_file.write_text(dotenv)
    config = write_config(tmp_path, {"mcpServers": {"toolbox": TOOLBOX}})
    done = run_cli(tmp_path, "serve", "--config", str(config), "--env-file", str(env_file), "--port", "0", *flags)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    first = stderr_lines(done)[0]
    assert first.startswith(f"error: refusing to bind {host}")
