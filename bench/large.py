"""Large results through the gateway (Issue 11 item 1): calls/s against direct stdio, and the gateway's peak RSS.

    .venv/bin/python bench/large.py [--mib 1,8] [--calls 20] [--transports streamable,sse,modern]

The child is the test fixture tests/fixtures/toolbox.py, tool `blob`: an N MiB text sent twice (`content` and
`structuredContent`), the id last, as an MCP server on the TypeScript SDK answers a file read; the line is ~2N MiB.
`mcp-bastion serve` (whole security pipeline, bearer token), calls one at a time: `streamable` (2025-11-25 session,
JSON answers), `sse` (HTTP+SSE 2024-11-05), `modern` (stateless 2026-07-28, JSON answers).
"gw CPU ms/call" is the gateway process's user+system CPU over the calls (robust to a busy machine, unlike calls/s).
Peak RSS is the kernel's high-water mark of the gateway process (VmHWM, so no sample can miss a transient peak), of
a fresh gateway per cell; "peak growth / line" divides its growth over the freshly started gateway by the line.
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
TOOLBOX = ROOT / "tests" / "fixtures" / "toolbox.py"
CLI = ROOT / ".venv" / "bin" / "mcp-bastion"
MIB = 1024 * 1024
READY_S = 30.0
CALL_TIMEOUT_S = 120.0
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def vm_kib(pid: int, field: str) -> int:
    """A VmRSS / VmHWM figure of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def call_body(request_id: int, mib: float, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "blob", "arguments": {"mib": mib}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def check(answer: dict[str, Any], request_id: int, mib: float) -> None:
    if answer.get("id") != request_id or "result" not in answer:
        raise RuntimeError(f"bad answer: {str(answer)[:300]}")
    if len(answer["result"]["content"][0]["text"]) != int(mib * MIB):
        raise RuntimeError("wrong answer size")


def direct(mib: float, calls: int) -> float:
    """Calls/s of the fixture driven over its own stdin/stdout, no gateway."""
    proc = subprocess.Popen([sys.executable, str(TOOLBOX)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": LEGACY}}
        proc.stdin.write(json.dumps(init).encode() + b"\n")
        proc.stdin.flush()
        proc.stdout.readline()
        began = time.perf_counter()
        for request_id in range(1, calls + 1):
            proc.stdin.write(json.dumps(call_body(request_id, mib)).encode() + b"\n")
            proc.stdin.flush()
            check(json.loads(proc.stdout.readline()), request_id, mib)
        return calls / (time.perf_counter() - began)
    finally:
        proc.kill()
        proc.wait()


class Gateway:
    """`mcp-bastion serve` with the toolbox as server `big`."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.token = "bench-" + secrets.token_urlsafe(24)
        (workdir / "mcp.json").write_text(
            json.dumps({"mcpServers": {"big": {"command": sys.executable, "args": [str(TOOLBOX)]}}})
        )
        env_file = workdir / ".env"
        env_file.write_text(
            f"HOST=127.0.0.1\nPORT={self.port}\nAUTH_TOKEN={self.token}\nSTORE_URL=memory://\n"
            f"LOG_DIR={workdir / 'logs'}\nAUDIT_LOG={workdir / 'logs' / 'audit.jsonl'}\nLOG_LEVEL=warning\n"
            "RATE_LIMIT_MAX_REQUESTS=1000000\nRATE_LIMIT_TOKEN_MAX_REQUESTS=1000000\n"
        )
        env_file.chmod(0o600)
        argv = [str(CLI), "serve", "--env-file", str(env_file), "--config", str(workdir / "mcp.json")]
        clean = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "AUTH_TOKEN", "MCP_CONFIG")}
        self.log = (workdir / "serve.log").open("wb")
        self.proc = subprocess.Popen(argv, cwd=workdir, env={**clean, **env}, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        self.auth = {"Authorization": f"Bearer {self.token}"}
        deadline = time.monotonic() + READY_S
        while not self._ready():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the gateway did not start; see {workdir / 'serve.log'}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            health = httpx.get(self.base + "/health", headers=self.auth, timeout=5)
        except httpx.TransportError:
            return False
        return health.status_code == 200 and health.json()["servers"]["big"]["state"] == "running"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def streamable_calls(gw: Gateway, mib: float, calls: int) -> float:
    headers = {**gw.auth, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with httpx.Client(timeout=CALL_TIMEOUT_S, headers=headers) as client:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": LEGACY}}
        opened = client.post(gw.base + "/mcp/big", json=init)
        client.headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        began = time.perf_counter()
        for request_id in range(1, calls + 1):
            answer = client.post(gw.base + "/mcp/big", json=call_body(request_id, mib))
            check(answer.json(), request_id, mib)
        return calls / (time.perf_counter() - began)


def sse_calls(gw: Gateway, mib: float, calls: int) -> float:
    with (
        httpx.Client(timeout=CALL_TIMEOUT_S, headers=gw.auth) as client,
        client.stream("GET", gw.base + "/mcp/big/sse", headers={"Accept": "text/event-stream"}) as stream,
    ):
        lines = stream.iter_lines()
        endpoint = next(line for line in lines if line.startswith("data: "))[6:]
        url = gw.base + endpoint
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2024-11-05"}}
        client.post(url, json=init)
        next(line for line in lines if line.startswith("data: "))
        began = time.perf_counter()
        for request_id in range(1, calls + 1):
            client.post(url, json=call_body(request_id, mib))
            check(json.loads(next(line for line in lines if line.startswith("data: "))[6:]), request_id, mib)
        return calls / (time.perf_counter() - began)


def modern_calls(gw: Gateway, mib: float, calls: int) -> float:
    headers = {
        **gw.auth,
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "blob",
    }
    with httpx.Client(timeout=CALL_TIMEOUT_S, headers=headers) as client:
        began = time.perf_counter()
        for request_id in range(1, calls + 1):
            answer = client.post(gw.base + "/mcp/big", json=call_body(request_id, mib, MODERN_META)).json()
            check(answer, request_id, mib)
            if answer["result"].get("resultType") != "complete":
                raise RuntimeError("no resultType on a 2026-07-28 answer")
        return calls / (time.perf_counter() - began)


CELLS = {"streamable": streamable_calls, "sse": sse_calls, "modern": modern_calls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", default="1,8")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--transports", default="streamable,sse,modern")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway (e.g. a line cap)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    print(
        "| transport | result MiB | line MiB | calls | gateway calls/s | direct calls/s | ratio | gw CPU ms/call |"
        " fresh RSS MiB | peak RSS MiB | peak growth / line |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for mib in [float(m) for m in args.mib.split(",")]:
        line_mib = 2 * mib  # content + structuredContent, plus a few bytes
        baseline = direct(mib, args.calls)
        for transport in args.transports.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                gw = Gateway(Path(tmp), env)  # a fresh gateway per cell: memory kept by an earlier cell can't hide
                try:
                    fresh = vm_kib(gw.proc.pid, "VmRSS") / 1024
                    reset_peak(gw.proc.pid)
                    cpu = psutil.Process(gw.proc.pid).cpu_times()
                    rate = CELLS[transport](gw, mib, args.calls)
                    peak = vm_kib(gw.proc.pid, "VmHWM") / 1024
                    used = psutil.Process(gw.proc.pid).cpu_times()
                    cpu_ms = (used.user + used.system - cpu.user - cpu.system) * 1000 / args.calls
                finally:
                    gw.stop()
            print(
                f"| {transport} | {mib:g} | {line_mib:g} | {args.calls} | {rate:.1f} | {baseline:.1f} | "
                f"{rate / baseline:.2f}x | {cpu_ms:.1f} | {fresh:.1f} | {peak:.1f} | "
                f"{(peak - fresh) / line_mib:.2f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
