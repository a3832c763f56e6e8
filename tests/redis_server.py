"""A throwaway real `redis-server` on a free loopback port, for tests that need Redis (store, rate limits).

No persistence (`--save ''`, `--appendonly no`), bound to 127.0.0.1 only, killed when the context ends. When
`redis-server` is not on PATH the caller fails loudly (scripts/install-redis installs it) unless
BASTION_SKIP_REDIS=1, which turns the Redis tests into skips.
"""

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.harness import free_port, wait_until

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
SKIP_ENV = "BASTION_SKIP_REDIS"


def redis_server_binary() -> str:
    """The redis-server path; fails the test (or skips with BASTION_SKIP_REDIS=1) when there is none."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"redis-server is not installed and {SKIP_ENV}=1")
    pytest.fail(
        "redis-server is not on PATH, so the Redis store and rate-limit tests cannot run: install it with "
        f"`scripts/install-redis` (Debian, as root) or your package manager, or set {SKIP_ENV}=1 to skip them",
        pytrace=False,
    )
    raise AssertionError("unreachable")  # pytest.fail raises


def client(url: str) -> redis.Redis:
    """A synchronous client for assertions (TTL, raw keys and values)."""
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)


def _answers_ping(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"redis-server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
    try:
        with client(url) as probe:
            return bool(probe.ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Start `redis-server` on a free loopback port, wait until it answers PING, yield redis://127.0.0.1:PORT/0."""
    binary = redis_server_binary()
    port = free_port()
    log = workdir / "redis-server.log"
    args = [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    args += ["--dir", str(workdir), "--protected-mode", "yes"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: _answers_ping(url, proc, log), START_TIMEOUT_S, interval=0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
