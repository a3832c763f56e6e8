"""Run a real gateway (uvicorn on a free loopback port, real stdio children) for tests."""

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from mcp_bastion.app import BastionApp, create_app
from mcp_bastion.config import ServerSpec, Settings

FIXTURES = Path(__file__).parent / "fixtures"
TOOLBOX = [sys.executable, str(FIXTURES / "toolbox.py")]
DEMO = [sys.executable, "-m", "mcp_bastion.demo_server"]
START_TIMEOUT_S = 20.0


def default_sigint() -> None:
    """preexec_fn for a child a test interrupts: a suite started with SIGINT ignored (a background job) would pass
    that disposition on, and the child's Ctrl-C handling would never run."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spec(name: str, command: list[str] | None = None, **extra: Any) -> ServerSpec:
    command = command or TOOLBOX
    return ServerSpec.model_validate({"name": name, "command": command[0], "args": command[1:], **extra})


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll with a bound; fail the test if the condition never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the bound")
        time.sleep(interval)


@dataclass
class RunningGateway:
    url: str
    app: BastionApp
    server: uvicorn.Server
    thread: threading.Thread
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def mcp(self, name: str) -> str:
        return f"{self.url}/mcp/{name}"

    headers: dict[str, str] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/health", headers=self.headers, timeout=5).json()

    def state(self, name: str) -> str:
        """Read in-process, so it works whatever the authentication settings."""
        return str(self.app.gateway.server_view(name)["state"])


@contextlib.contextmanager
def run_gateway(servers: list[ServerSpec], tmp_path: Path, **settings: Any) -> Iterator[RunningGateway]:
    """A gateway serving `servers`, ready (every auto-start server running or failed) when entered."""
    port = free_port()
    defaults: dict[str, Any] = {
        # Transport and relay tests run without the auth stage (as the conformance suite must); the security
        # tests turn it on by passing auth_token / insecure_no_auth=False.
        "insecure_no_auth": True,
        "store_url": "memory://",
        "audit_log": tmp_path / "logs" / "audit.jsonl",
        "security_log": tmp_path / "logs" / "audit.jsonl",  # one file, as tests read it; the split has its own tests
        "rate_limit_max_requests": 1_000_000,
        "rate_limit_token_max_requests": 1_000_000,
    }
    config = Settings(host="127.0.0.1", port=port, log_dir=tmp_path / "logs", **{**defaults, **settings})
    events: list[tuple[str, dict[str, Any]]] = []
    app = create_app(config, {s.name: s for s in servers}, events=lambda e, **f: events.append((e, f)))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    running = RunningGateway(f"http://127.0.0.1:{port}", app, server, thread, events)
    if config.auth_token is not None:
        running.headers = {"Authorization": f"Bearer {config.auth_token.get_secret_value()}"}
    wait_until(lambda: server.started, START_TIMEOUT_S)
    auto = [s.name for s in servers if s.auto_start and s.isolation == "shared"]
    wait_until(lambda: all(running.state(n) in ("running", "failed") for n in auto), START_TIMEOUT_S)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(30)


SERVE_START_TIMEOUT_S = 30.0
SERVE_STOP_TIMEOUT_S = 15.0


@contextlib.contextmanager
def serve_process(
    argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """The real CLI `serve` as a subprocess, output to `log`; entered once `ready()` holds, TERM then KILL on exit.

    Fails at once (with the log) if the process exits before it is ready.
    """
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    try:

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                return ready()
            except httpx.TransportError:
                return False

        try:
            wait_until(started, SERVE_START_TIMEOUT_S, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nserve output:\n{log.read_text(errors='replace')}") from None
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a grace period; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(SERVE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(SERVE_STOP_TIMEOUT_S)
