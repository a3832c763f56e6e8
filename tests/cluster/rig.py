"""A real cluster for tests and the bench: redis-server, N `mcp-bastion serve` processes, and nginx round-robin in
front rendered from docs/deploy/nginx.conf (ports and paths rewritten, nothing else)."""

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_bastion.config import Settings
from tests.faults.redis_process import RedisProcess
from tests.harness import FIXTURES, TOOLBOX, free_port, serve_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "docs" / "deploy" / "nginx.conf"
CLI = Path(sys.executable).parent / "mcp-bastion"
NGINX = "/usr/sbin/nginx"
SKIP_NGINX = "BASTION_SKIP_NGINX"
NGINX_START_S = 10.0
HEARTBEAT_S = 0.5  # CLUSTER_HEARTBEAT_S under test: a dead owner is forgotten within a second
SECRET = "cluster-" + "k" * 32


def nginx_binary() -> str:
    """nginx's path; fails the test (or skips with BASTION_SKIP_NGINX=1) when it is not installed."""
    if Path(NGINX).exists():
        return NGINX
    if os.environ.get(SKIP_NGINX) == "1":
        pytest.skip(f"nginx is not installed and {SKIP_NGINX}=1")
    pytest.fail(f"{NGINX} is missing: run scripts/install-nginx, or set {SKIP_NGINX}=1 to skip", pytrace=False)
    raise AssertionError("unreachable")


def render_nginx(ports: list[int], listen: int, workdir: Path) -> str:
    """docs/deploy/nginx.conf with the test's upstream ports, a loopback listener and temp paths under `workdir`."""
    text = NGINX_CONF.read_text()
    servers = "".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;\n" for port in ports)
    text, count = re.subn(r"(        server 10\.0\.0\.\d+:3001[^\n]*\n)+", servers, text)
    assert count == 1, "the upstream block of docs/deploy/nginx.conf changed shape"
    text = text.replace("listen 80;", f"listen 127.0.0.1:{listen};").replace("server_name mcp.example.com;", "")
    temp = "".join(
        f"    {kind}_temp_path {workdir / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    logs = f"    access_log off;\n    error_log {workdir / 'error.log'} warn;\n"
    return text.replace("http {\n", "http {\n" + temp + logs, 1)


@contextlib.contextmanager
def nginx(ports: list[int], workdir: Path) -> Iterator[str]:
    """nginx in the foreground on a free loopback port in front of `ports`; yields its base URL."""
    binary = nginx_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    listen = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(render_nginx(ports, listen, workdir))
    argv = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    argv += ["-g", f"daemon off; pid {workdir / 'nginx.pid'}; worker_processes 1;"]
    with (workdir / "nginx.out").open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{listen}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"nginx exited: {(workdir / 'error.log').read_text(errors='replace')[-2000:]}")
            try:
                return httpx.get(url + "/livez", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, NGINX_START_S, interval=0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def clean_env() -> dict[str, str]:
    """This environment without gateway settings (the .env file decides them)."""
    settings = {name.upper() for name in Settings.model_fields}
    return {key: value for key, value in os.environ.items() if key.upper() not in settings}


@dataclass
class Instance:
    """One `serve` process of the rig."""

    id: str
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Rig:
    """The running cluster."""

    token: str
    redis: RedisProcess
    instances: list[Instance]
    lb: str = ""
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def health(self, instance: Instance) -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(instance.url + "/health", headers=self.auth, timeout=5).json()
        return found

    def forwarded(self) -> int:
        """Requests forwarded to an owner, summed over the live instances."""
        live = [i for i in self.instances if i.proc is not None and i.proc.poll() is None]
        return sum(int(self.health(i)["cluster"]["forwarded"]) for i in live)

    def audit(self, instance: Instance) -> list[dict[str, Any]]:
        """The instance's audit lines: calls, and security events (in their own file)."""
        found: list[dict[str, Any]] = []
        for name in ("audit.jsonl", "security.jsonl"):
            path = instance.dir / "logs" / name
            found += (
                [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
            )
        return found


def write_instance(instance: Instance, token: str, redis_url: str, extra: dict[str, str]) -> list[str]:
    """The instance's .env and mcp.json; returns its serve argv."""
    instance.dir.mkdir(parents=True, exist_ok=True)
    config = instance.dir / "mcp.json"
    toolbox = {"command": sys.executable, "args": TOOLBOX[1:]}
    own = {"command": sys.executable, "args": [str(FIXTURES / "conformance_child.py")], "isolation": "per-session"}
    config.write_text(json.dumps({"mcpServers": {"toolbox": toolbox, "own": own}}))
    values = {
        "HOST": "127.0.0.1",
        "PORT": str(instance.port),
        "AUTH_TOKEN": token,
        "STORE_URL": redis_url,
        "REDIS_URL": redis_url,
        "CLUSTER_SECRET": SECRET,
        "INSTANCE_ID": instance.id,
        "CLUSTER_HEARTBEAT_S": str(HEARTBEAT_S),
        "TRUSTED_PROXIES": "127.0.0.1",
        "AUDIT_LOG": str(instance.dir / "logs" / "audit.jsonl"),
        "LOG_DIR": str(instance.dir / "logs"),
        "RATE_LIMIT_MAX_REQUESTS": "1000000",
        "RATE_LIMIT_TOKEN_MAX_REQUESTS": "1000000",
        "REVOCATION_CHECK_S": "60",  # the periodic sweep never helps: revocations must travel by pub/sub
        **extra,
    }
    env_file = instance.dir / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env_file.chmod(0o600)
    return [str(CLI), "serve", "--env-file", str(env_file), "--config", str(config)]


def start_instance(rig: Rig, instance: Instance, extra: dict[str, str] | None = None) -> None:
    """Start one instance and wait until its toolbox child runs (stopped when the rig's stack closes)."""
    argv = write_instance(instance, rig.token, rig.redis.url, extra or {})

    def ready() -> bool:
        health = httpx.get(instance.url + "/health", headers=rig.auth, timeout=5)
        return health.status_code == 200 and health.json()["servers"]["toolbox"]["state"] == "running"

    log = instance.dir / "serve.log"
    process = serve_process(argv, cwd=instance.dir, env=clean_env(), log=log, ready=ready)
    instance.proc = rig.stack.enter_context(process)


@contextlib.contextmanager
def cluster(workdir: Path, size: int = 3, extra: dict[str, str] | None = None) -> Iterator[Rig]:
    """Redis, `size` instances (each seeing all the others), nginx round robin in front."""
    redis = RedisProcess(workdir)
    token = "adm-" + secrets.token_urlsafe(32)
    instances = [Instance(f"i{n + 1}", free_port(), workdir / f"i{n + 1}") for n in range(size)]
    rig = Rig(token, redis, instances)
    with rig.stack:
        redis.start()
        rig.stack.callback(redis.stop)
        for instance in instances:
            start_instance(rig, instance, extra)
        rig.lb = rig.stack.enter_context(nginx([i.port for i in instances], workdir / "nginx"))
        yield rig
