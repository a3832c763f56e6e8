"""The gateway under test as a subprocess: start on a free loopback port, wait until ready, measure, stop.

CPU and RSS come from psutil over the gateway process and all its descendants (the demo child).
"""

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import orjson
import psutil
from httpc import Connection, ConnectionBroken

HOST = "127.0.0.1"
# Gateway settings the caller's environment must not leak into the gateway under test.
SETTINGS_FROM_ENV = frozenset(
    {"HOST", "PORT", "MCP_CONFIG", "LOG_DIR", "LOG_LEVEL", "AUTH_TOKEN", "STORE_URL", "REDIS_URL", "INSECURE_NO_AUTH"}
)
MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1_048_576:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    """A port nobody listens on right now (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_demo_config(path: Path, env_file: Path) -> str:
    """`mcp-bastion demo` writes the mcpServers file and a .env with a fresh AUTH_TOKEN; returns the token."""
    subprocess.run(
        [str(VENV_BIN / "mcp-bastion"), "demo", "--config", str(path), "--env-file", str(env_file), "--force"],
        check=True,
        capture_output=True,
        timeout=60,
        cwd=path.parent,
    )
    for line in env_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("AUTH_TOKEN="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"{env_file} has no AUTH_TOKEN")


class Usage:
    """CPU seconds (user+sys) and RSS bytes of the gateway process and of its descendants, at one instant."""

    __slots__ = ("child_cpu", "child_rss", "children", "gw_cpu", "gw_rss", "when")

    def __init__(self, gw_cpu: float, child_cpu: float, gw_rss: int, child_rss: int, children: int) -> None:
        self.gw_cpu = gw_cpu
        self.child_cpu = child_cpu
        self.gw_rss = gw_rss
        self.child_rss = child_rss
        self.children = children
        self.when = time.perf_counter()


def usage_of(proc: psutil.Process) -> Usage:
    """Snapshot one process tree (children that exited in between are not counted: none do in a run)."""
    with proc.oneshot():
        cpu = proc.cpu_times()
        rss = proc.memory_info().rss
    child_cpu = 0.0
    child_rss = 0
    children = proc.children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            with child.oneshot():
                times = child.cpu_times()
                child_cpu += times.user + times.system
                child_rss += child.memory_info().rss
    return Usage(cpu.user + cpu.system, child_cpu, rss, child_rss, len(children))


class GatewayProcess:
    """`mcp-bastion serve` on a free port with the demo config; always stop() it (try/finally)."""

    def __init__(
        self, config: Path, env_file: Path, workdir: Path, log_name: str, extra_env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.env_file = env_file
        self.workdir = workdir
        self.log_path = workdir / log_name
        self.port = free_port()
        self.extra_env = extra_env or {}
        self.popen: subprocess.Popen[bytes] | None = None
        self.proc: psutil.Process | None = None
        self.children: dict[int, psutil.Process] = {}
        self._log: IO[bytes] | None = None

    def start(self, wrapper: list[str] | None = None) -> None:
        """Spawn the gateway (optionally under a wrapper such as `python -m cProfile -o FILE`)."""
        env = {k: v for k, v in os.environ.items() if k not in SETTINGS_FROM_ENV}
        env.update({"LOG_DIR": str(self.workdir / "logs"), "AUDIT_LOG": str(self.workdir / "logs" / "audit.jsonl")})
        env.update(self.extra_env)
        command = [
            "serve",
            "--config",
            str(self.config),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--env-file",
            str(self.env_file),
        ]
        argv = [*wrapper, *command] if wrapper else [str(VENV_BIN / "mcp-bastion"), *command]
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,  # only setrlimit, before exec
        )
        self.proc = psutil.Process(self.popen.pid)

    async def wait_ready(self, limit_s: float = 30.0) -> None:
        """Poll GET /health until the demo server runs."""
        deadline = time.monotonic() + limit_s
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.popen.returncode}; see {self.log_path}")
            conn = Connection(HOST, self.port)
            try:
                await conn.open()
                resp = await asyncio.wait_for(conn.request(b"GET", b"/health"), 5)
                health = orjson.loads(resp.body)
                state = health["servers"]["demo"]["state"]
                if resp.status == 200 and state == "running":
                    self.remember_children()
                    return
                last = f"state {state}"
            except (OSError, ConnectionBroken, TimeoutError, KeyError, ValueError) as exc:
                last = repr(exc)
            finally:
                conn.close()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the gateway was not ready within {limit_s:g} s ({last}); see {self.log_path}")

    def remember_children(self) -> None:
        """Record descendant pids so that stop() can make sure none outlives the gateway."""
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            for child in self.proc.children(recursive=True):
                self.children.setdefault(child.pid, child)

    def usage(self) -> Usage:
        assert self.proc is not None
        return usage_of(self.proc)

    def health(self) -> dict[str, Any]:
        """GET /health synchronously (for reports only, not on the hot path)."""
        with socket.create_connection((HOST, self.port), timeout=10) as sock:
            host = f"host: {HOST}:{self.port}\r\n".encode()
            sock.sendall(b"GET /health HTTP/1.1\r\n" + host + Connection.common_headers + b"connection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if b"chunked" in head.lower():
            decoded = b""
            while body:
                size_line, _, rest = body.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    break
                decoded += rest[:size]
                body = rest[size + 2 :]
            body = decoded
        return dict(orjson.loads(body))

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, wait up to 10 s, then SIGKILL; then kill any descendant that survived. Returns the exit code."""
        code = None
        if self.popen is not None:
            self.remember_children()
            if self.popen.poll() is None:
                self.popen.terminate()
                try:
                    self.popen.wait(10)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(10)
            code = self.popen.returncode
        for child in self.children.values():  # psutil.Process objects refuse to signal a reused pid
            with contextlib.suppress(psutil.Error):
                if not child.is_running():
                    continue
                child.terminate()
                try:
                    child.wait(3)
                except psutil.TimeoutExpired:
                    child.kill()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code
