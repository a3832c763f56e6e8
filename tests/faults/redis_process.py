"""A real `redis-server` a fault test can kill, freeze (SIGSTOP), thaw (SIGCONT) and restart on the same port."""

import signal
import subprocess
from pathlib import Path

from tests.harness import free_port, wait_until
from tests.redis_server import START_TIMEOUT_S, STOP_TIMEOUT_S, _answers_ping, redis_server_binary


class RedisProcess:
    """One redis-server on a fixed loopback port (no persistence); `url` stays valid across restarts."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / "redis-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait (bounded) until it answers PING."""
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        proc, log = self.proc, self.log
        wait_until(lambda: _answers_ping(self.url, proc, log), START_TIMEOUT_S, interval=0.05)

    def kill(self) -> None:
        """SIGKILL: the port closes at once, as when the host or the container dies."""
        proc = self._running()
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but never answered."""
        self._running().send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT."""
        self._running().send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Thaw (a stopped process ignores TERM until then), then TERM, then KILL; always reaped."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)

    def _running(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "redis-server was not started"
        assert self.proc.poll() is None, "redis-server exited"
        return self.proc
