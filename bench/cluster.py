"""Cluster mode of the benchmark (Issue 12): Redis, 3 `mcp-bastion serve` instances and nginx round robin in front
(docs/deploy/nginx.conf, rendered as the tests render it), against one instance alone.

    .venv/bin/python bench/run.py --cluster [--concurrency 16] [--seconds 5]

Cells, each C Streamable HTTP sessions calling `tools/call echo` back to back (every answer's id and text checked):
- `single`: one instance, no Redis (the ordinary deployment);
- `cluster`: through nginx, requests land round robin, about 2 in 3 on an instance that does not own the session
  and forward it (the share is measured from the instances' counters);
- `local` / `forwarded`: the cluster without nginx, every call sent to the session's owner, or every call sent to
  another instance that forwards it: the per-call gateway CPU of a forwarded call (both instances) against a local
  one. Gateway CPU is the gateway processes' own (user+sys), not their children's; nginx and Redis are reported apart.
"""

import asyncio
import contextlib
import math
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from gateway import HOST, GatewayProcess, free_port, usage_of
from httpc import Connection, ConnectionBroken
from sessions import CallFailed, StreamableSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster.rig import render_nginx

INSTANCES = 3
START_S = 30.0  # Redis, nginx or an instance not answering by then fails the run
SECRET_BYTES = 32


class Redis:
    """A throwaway redis-server on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        self.popen = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = psutil.Process(self.popen.pid)

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


class Nginx:
    """nginx in the foreground in front of `ports`."""

    def __init__(self, ports: list[int], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(render_nginx(ports, self.port, workdir))
        argv = ["/usr/sbin/nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
        argv += ["-g", f"daemon off; pid {workdir / 'nginx.pid'}; worker_processes 1;"]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = psutil.Process(self.popen.pid)

    def cpu(self) -> float:
        return usage_of(self.proc).gw_cpu + usage_of(self.proc).child_cpu

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


async def wait_port(port: int) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(HOST, port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {START_S:g} s")


def owner_port(session: StreamableSession, ports: dict[str, int]) -> int:
    """The port of the instance a sealed session id names (the payload is readable)."""
    import base64
    import json

    body = session.session_id.split(b".")[0]
    return ports[json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))["i"]]


async def drive(sessions: list[StreamableSession], seconds: float, warm_s: float) -> dict[str, Any]:
    """Every session calls back to back; latencies of the window after `warm_s`."""
    latencies: list[float] = []
    errors = wrong = 0
    start = time.perf_counter()
    measure_from, deadline = start + warm_s, start + warm_s + seconds

    async def one(session: StreamableSession, n: int) -> None:
        nonlocal errors, wrong
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            text = f"s{n}-{i}"
            began = time.perf_counter()
            try:
                answer = await session.call(i, text)
            except (CallFailed, ConnectionBroken, OSError):
                errors += 1
                continue
            if answer.get("id") != i or answer["result"]["content"][0]["text"] != text:
                wrong += 1
            if began >= measure_from:
                latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(one(s, n) for n, s in enumerate(sessions)))
    return {"latencies": latencies, "errors": errors, "wrong": wrong, "window": seconds}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1] * 1000 if ordered else math.nan


class Cell:
    """Measures one cell: the gateway processes' CPU and the calls of the window."""

    def __init__(self, name: str, gateways: list[GatewayProcess], extra: list[psutil.Process]) -> None:
        self.name, self.gateways, self.extra = name, gateways, extra

    async def run(self, sessions: list[StreamableSession], args: Any) -> dict[str, Any]:
        task = asyncio.ensure_future(drive(sessions, args.seconds, args.warmup))
        await asyncio.sleep(args.warmup)
        before = [g.usage().gw_cpu for g in self.gateways], [usage_of(p).gw_cpu for p in self.extra]
        forwarded_before = forwarded(self.gateways)
        result = await task
        after = [g.usage().gw_cpu for g in self.gateways], [usage_of(p).gw_cpu for p in self.extra]
        calls = len(result["latencies"])
        gw_cpu = sum(after[0]) - sum(before[0])
        extra_cpu = sum(after[1]) - sum(before[1])
        share = (forwarded(self.gateways) - forwarded_before) / calls if calls else math.nan
        return {
            "cell": self.name,
            "sessions": len(sessions),
            "cps": calls / result["window"],
            "p99_ms": p99(result["latencies"]),
            "gw_cpu_ms_per_call": gw_cpu / calls * 1000 if calls else math.nan,
            "lb_redis_cpu_ms_per_call": extra_cpu / calls * 1000 if calls else math.nan,
            "forwarded_share": share,
            "errors": result["errors"],
            "wrong": result["wrong"],
        }


def forwarded(gateways: list[GatewayProcess]) -> int:
    total = 0
    for gateway in gateways:
        with contextlib.suppress(KeyError, OSError, ValueError):
            total += int(gateway.health()["cluster"]["forwarded"])
    return total


async def open_sessions(c: int, port_for: Any) -> list[StreamableSession]:
    sessions = [StreamableSession(HOST, port_for(n), "demo") for n in range(c)]
    await asyncio.gather(*(s.setup() for s in sessions))
    return sessions


async def close_sessions(sessions: list[StreamableSession]) -> None:
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def main(args: Any, workdir: Path) -> list[dict[str, Any]]:
    """Run the cluster cells; returns their rows (also printed)."""
    c = args.concurrency[0]
    rows = []
    single = GatewayProcess(args.config, args.env_file, workdir, "single.log", args.gw_env)
    single.start()
    try:
        await single.wait_ready()
        sessions = await open_sessions(c, lambda n: single.port)
        rows.append(await Cell("single", [single], []).run(sessions, args))
        await close_sessions(sessions)
    finally:
        single.stop()
    redis = Redis(workdir)
    gateways: list[GatewayProcess] = []
    nginx: Nginx | None = None
    try:
        await wait_port(redis.port)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        for n in range(INSTANCES):
            env = {**args.gw_env, "REDIS_URL": redis.url, "STORE_URL": redis.url, "CLUSTER_SECRET": secret}
            env.update(INSTANCE_ID=f"i{n + 1}", TRUSTED_PROXIES=HOST)
            gateways.append(GatewayProcess(args.config, args.env_file, workdir, f"i{n + 1}.log", env))
            gateways[-1].start()
        for gateway in gateways:
            await gateway.wait_ready()
        ports = {f"i{n + 1}": g.port for n, g in enumerate(gateways)}
        nginx = Nginx([g.port for g in gateways], workdir / "nginx")
        await wait_port(nginx.port)
        extra = [nginx.proc, redis.proc]
        sessions = await open_sessions(c, lambda n: nginx.port if nginx else 0)
        rows.append(await Cell("cluster", gateways, extra).run(sessions, args))
        await close_sessions(sessions)
        owners = await open_sessions(c, lambda n: gateways[n % INSTANCES].port)
        rows.append(await Cell("local", gateways, [redis.proc]).run(owners, args))
        for session in owners:  # the same sessions, each now sent to the next instance: every call forwarded
            session.conn.close()
            home = owner_port(session, ports)
            session.conn = Connection(HOST, next(p for p in ports.values() if p != home))
            await session.conn.open()
        rows.append(await Cell("forwarded", gateways, [redis.proc]).run(owners, args))
        await close_sessions(owners)
    finally:
        if nginx is not None:
            nginx.stop()
        for gateway in gateways:
            gateway.stop()
        redis.stop()
    for row in rows:
        print(
            f"  {row['cell']:<10} C={row['sessions']:<4} {row['cps']:8.0f} calls/s p99 {row['p99_ms']:7.2f} ms "
            f"gateway cpu {row['gw_cpu_ms_per_call']:.3f} ms/call (nginx+redis {row['lb_redis_cpu_ms_per_call']:.3f}) "
            f"forwarded {row['forwarded_share']:.0%} err {row['errors']} wrong {row['wrong']}",
            flush=True,
        )
    local = next(r for r in rows if r["cell"] == "local")["gw_cpu_ms_per_call"]
    hop = next(r for r in rows if r["cell"] == "forwarded")["gw_cpu_ms_per_call"]
    print(f"  a forwarded call costs {hop / local:.2f}x a local one in gateway CPU (target <= 2x)", flush=True)
    return rows
