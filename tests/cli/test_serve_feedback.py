"""The real `serve` under `--log-format json`: every stderr line is a JSON object, each child's fate among them."""

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
from typer.testing import CliRunner

from mcp_bastion.cli import cli
from tests.harness import free_port, wait_until

CLI = Path(sys.executable).parent / "mcp-bastion"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
ADMIN_TOKEN = "feedback-test-admin-token-Rr7Tt2Yy9Uu4Ii1Oo6Pp3"
# Reads the initialize request, then dies: a server that fails every start with a known reason.
FAILING = [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(3)"]


def records(path: Path) -> list[dict[str, Any]]:
    """Every stderr line, each of which must parse as one JSON object."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(entry, dict) for entry in parsed)
    return parsed


def find(entries: list[dict[str, Any]], event: str, server: str) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("event") == event and e.get("server") == server]


def partial_records(path: Path) -> list[dict[str, Any]]:
    """Lines written so far (the last one may be half-written while the server runs)."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


@contextlib.contextmanager
def serving(install: Path, *flags: str) -> Iterator[Path]:
    """The real `serve` on a free loopback port, stderr to a file; always terminated (then killed) on exit."""
    port = free_port()
    stderr_path = install / "stderr.log"
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(install), "LANG": "C.UTF-8"}
    args = [str(CLI), "serve", "--env-file", ".env", "--config", "mcp.json", "--port", str(port), *flags]
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(args, cwd=install, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until(lambda: _live(port), START_TIMEOUT_S, interval=0.05)
        yield stderr_path
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def wait_for(predicate: Callable[[], bool]) -> None:
    wait_until(predicate, START_TIMEOUT_S, interval=0.05)


@pytest.fixture
def install(tmp_path: Path) -> Path:
    env = tmp_path / ".env"
    env.write_text(f"AUTH_TOKEN={ADMIN_TOKEN}\n")
    env.chmod(0o600)
    servers = {
        "demo": {"command": sys.executable, "args": ["-m", "mcp_bastion.demo_server"]},
        "broken": {"command": FAILING[0], "args": FAILING[1:]},
    }
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": servers}))
    return tmp_path


def test_serve_log_format_json_prints_only_json_lines_with_each_childs_start_or_failure(install: Path) -> None:
    with serving(install, "--log-format", "json") as stderr_path:
        wait_for(
            lambda: (
                bool(find(partial_records(stderr_path), "server.start", "demo"))
                and bool(find(partial_records(stderr_path), "server.crash", "broken"))
            )
        )
    entries = records(stderr_path)
    for entry in entries:
        assert {"ts", "level", "logger", "message"} <= set(entry)
    started = find(entries, "server.start", "demo")[0]
    assert isinstance(started["pid"], int)
    assert started["pid"] > 0
    assert f"pid {started['pid']}" in started["message"]
    failed = find(entries, "server.crash", "broken")[0]
    assert failed["level"] == "error"
    assert failed["reason"] == "exited with code 3 during initialize"
    assert failed["reason"] in failed["message"]
    # uvicorn's own lines go through the same formatter.
    assert any(e["logger"].startswith("uvicorn") and "Uvicorn running" in e["message"] for e in entries)
    assert ADMIN_TOKEN not in stderr_path.read_text()


def test_serve_text_format_shows_each_child_on_the_console(install: Path) -> None:
    with serving(install) as stderr_path:
        wait_for(lambda: "demo started (pid" in (text := stderr_path.read_text()) and "broken failed: exited" in text)
    text = stderr_path.read_text()
    assert "broken failed: exited with code 3 during initialize; retrying (1 of" in text
    assert "logs/servers/broken.log" in text


def test_an_unknown_log_format_is_refused_naming_the_setting(install: Path) -> None:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(install), "LANG": "C.UTF-8", "LOG_FORMAT": "xml"}
    done = subprocess.run(
        [str(CLI), "serve", "--env-file", ".env", "--config", "mcp.json", "--port", str(free_port())],
        cwd=install,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 2
    assert "LOG_FORMAT" in done.stderr


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if hasattr(command, "commands"):
        return [found for name, sub in command.commands.items() for found in command_paths(sub, (*path, name))]
    return [path]


COMMANDS = command_paths(typer.main.get_command(cli))


def test_every_command_is_registered_with_help() -> None:
    for expected in [("serve",), ("version",), ("service", "systemd"), ("service", "pm2"), ("token", "create")]:
        assert expected in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_help_shows_an_example(path: tuple[str, ...]) -> None:
    done = CliRunner().invoke(cli, [*path, "--help"])
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())  # undo the console's wrapping
    assert "Example:" in text
    assert f"mcp-bastion {' '.join(path)}" in text.split("Example:", 1)[1]


def _live(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
