"""mcp-bastion benchmark: the gateway over each HTTP transport against the demo server driven directly over stdio.

    .venv/bin/python bench/run.py [--quick] [--transports streamable,sse,modern] [--concurrency 1,8,64,256]
                                  [--calls N] [--seconds S] [--idle-sse N] [--idle-only]
    .venv/bin/python bench/run.py --soak MINUTES [--soak-rate CALLS_PER_S] [--transports ...] [--concurrency 16]

Per transport and concurrency C: a fresh gateway, C sessions (each initialized per its transport) issuing
`tools/call echo` back to back with unique texts, every answer's id and text checked. CPU and RSS are the
gateway's process tree (gateway + demo child), CPU as the delta over the measured window only (after warm-up).
"""

import argparse
import asyncio
import math
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import soak
from gateway import HOST, MIB, GatewayProcess, Usage, raise_nofile, usage_of, write_demo_config
from httpc import Connection, ConnectionBroken
from sessions import TRANSPORTS, CallFailed, DirectPipe, DirectSession, SseSession

import cluster

SERVER = "demo"
OUT = Path(__file__).resolve().parent / "out"
SETUP_CAP_S = 60.0  # opening and initializing every session of a cell
GRACE_S = 30.0  # past the measured window before in-flight calls count as hung
WARM_CALLS_MAX = 10_000  # per session, during warm-up

# Targets (see bench/README.md).
CPU_TARGET_MS = 0.35
P99_TARGET_MS = 40.0
RSS_TARGET_MIB = 80.0
IDLE_RSS_TARGET_MIB = 400.0


class CellStats:
    """What one (transport, C) cell observed."""

    def __init__(self) -> None:
        self.latencies: list[float] = []  # seconds, successful calls of the measured window
        self.calls = 0  # measured calls (any outcome)
        self.warm_calls = 0
        self.errors = 0  # any phase: HTTP error, JSON-RPC error, broken connection, hang, failed setup
        self.wrong = 0  # an answer with the wrong id or the wrong text
        self.broken = 0
        self.hung = 0
        self.setup_failed = 0
        self.samples: list[str] = []

    def note(self, kind: str, detail: str) -> None:
        if len(self.samples) < 8:
            self.samples.append(f"{kind}: {detail[:300]}")


class Control:
    """Warm-up barrier, start signal and the measured window's bounds."""

    def __init__(self, sessions: int, warm_s: float, per_session: int) -> None:
        self.sessions = sessions
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.go = asyncio.Event()
        self.warm_s = warm_s
        self.warm_until = math.inf
        self.deadline = math.inf
        self.per_session = per_session

    def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.sessions:
            self.all_arrived.set()


async def one_call(session: Any, stats: CellStats, tag: str, measured: bool) -> bool:
    """One checked tools/call; False when the session's connection is gone."""
    request_id = session.next_id()
    text = f"{tag}-{request_id}"
    started = time.perf_counter()
    try:
        answer = await session.call(request_id, text)
    except CallFailed as exc:
        stats.errors += 1
        stats.calls += measured
        stats.note("error", str(exc))
        return True
    except (ConnectionBroken, OSError) as exc:
        stats.errors += 1
        stats.broken += 1
        stats.calls += measured
        stats.note("broken", repr(exc))
        return False
    elapsed = time.perf_counter() - started
    if measured:
        stats.calls += 1
    else:
        stats.warm_calls += 1
    try:
        good = answer["id"] == request_id and answer["result"]["content"][0]["text"] == text
    except (KeyError, IndexError, TypeError):
        good = False
    if good:
        if measured:
            stats.latencies.append(elapsed)
        return True
    if isinstance(answer, dict) and "error" in answer and answer.get("id") == request_id:
        stats.errors += 1
        stats.note("jsonrpc-error", str(answer["error"]))
    else:
        stats.wrong += 1
        stats.note("wrong", f"expected id={request_id} text={text!r}, got {str(answer)[:200]}")
    return True


async def worker(session: Any, index: int, salt: str, stats: CellStats, ctl: Control) -> None:
    """Set up, warm up, wait for the start, then call until the deadline or the per-session cap."""
    tag = f"{salt}.{index}"
    alive = False
    try:
        try:
            await session.setup()
            alive = True
        except (CallFailed, ConnectionBroken, OSError) as exc:
            stats.errors += 1
            stats.setup_failed += 1
            stats.note("setup", repr(exc))
        warmed = 0
        while alive and warmed < WARM_CALLS_MAX and time.perf_counter() < ctl.warm_until:
            warmed += 1
            alive = await one_call(session, stats, tag, measured=False)
    finally:
        ctl.arrive()
    if not alive:
        return
    await ctl.go.wait()
    done = 0
    while done < ctl.per_session and time.perf_counter() < ctl.deadline:
        done += 1
        if not await one_call(session, stats, tag, measured=True):
            return


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list, in ms."""
    if not ordered:
        return math.nan
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank] * 1000.0


def own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores), to see what else ran during a window."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


async def run_cell(
    make_session: Callable[[], Any],
    concurrency: int,
    args: argparse.Namespace,
    usage: Callable[[], Usage],
    on_start: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Drive C sessions through setup, warm-up, and the measured window; measure the tree around the window."""
    stats = CellStats()
    per_session = max(1, math.ceil(args.calls / concurrency))
    ctl = Control(concurrency, args.warmup, per_session)
    salt = secrets.token_hex(4)
    sessions = [make_session() for _ in range(concurrency)]
    tasks = [asyncio.create_task(worker(s, i, salt, stats, ctl)) for i, s in enumerate(sessions)]
    # Warm-up runs for `warmup` seconds counted from now; setups that take longer simply warm less.
    ctl.warm_until = time.perf_counter() + args.warmup
    try:
        await asyncio.wait_for(ctl.all_arrived.wait(), SETUP_CAP_S + args.warmup)
    except TimeoutError:
        stats.note("setup", f"only {ctl.arrived}/{concurrency} sessions were ready after {SETUP_CAP_S:g} s")
    peak = [0, 0]
    before = usage()
    client_before = own_cpu()
    busy_before = machine_busy()
    started = time.perf_counter()
    ctl.deadline = started + args.seconds
    ctl.go.set()
    if on_start is not None:
        on_start()
    sampler = asyncio.create_task(sample_rss(usage, peak))
    _, pending = await asyncio.wait(tasks, timeout=args.seconds + GRACE_S)
    after = usage()
    elapsed = time.perf_counter() - started
    client_cpu = own_cpu() - client_before
    busy = machine_busy() - busy_before
    sampler.cancel()
    for task in pending:
        task.cancel()
        stats.errors += 1
        stats.hung += 1
    if pending:
        stats.note("hung", f"{len(pending)} sessions still waiting {GRACE_S:g} s after the window")
        await asyncio.wait(pending, timeout=5)
    await asyncio.wait([asyncio.create_task(s.close()) for s in sessions], timeout=10)
    ordered = sorted(stats.latencies)
    calls = max(stats.calls, 1)
    tree_cpu = after.gw_cpu + after.child_cpu - before.gw_cpu - before.child_cpu
    return {
        "c": concurrency,
        "calls": stats.calls,
        "warm_calls": stats.warm_calls,
        "seconds": round(elapsed, 3),
        "cps": stats.calls / elapsed if elapsed > 0 else 0.0,
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] * 1000.0 if ordered else math.nan,
        "errors": stats.errors,
        "wrong": stats.wrong,
        "broken": stats.broken,
        "hung": stats.hung,
        "setup_failed": stats.setup_failed,
        "cpu_tree_ms": tree_cpu * 1000 / calls,
        "cpu_gw_ms": (after.gw_cpu - before.gw_cpu) * 1000 / calls,
        "cpu_child_ms": (after.child_cpu - before.child_cpu) * 1000 / calls,
        "cpu_tree_cores": tree_cpu / elapsed,
        "client_cores": client_cpu / elapsed,
        "other_cores": max(0.0, busy - tree_cpu - client_cpu) / elapsed,
        "loadavg1": os.getloadavg()[0],
        "client_cpu_ms": client_cpu * 1000 / calls,
        "rss_gw_mib": after.gw_rss / MIB,
        "rss_child_mib": after.child_rss / MIB,
        "rss_gw_peak_mib": max(peak[0], after.gw_rss) / MIB,
        "rss_child_peak_mib": max(peak[1], after.child_rss) / MIB,
        "children": after.children,
        "samples": stats.samples,
    }


async def sample_rss(usage: Callable[[], Usage], peak: list[int]) -> None:
    """Track peak RSS during the window (0.5 s period: a psutil read is cheap for us and free for the gateway)."""
    while True:
        await asyncio.sleep(0.5)
        now = usage()
        peak[0] = max(peak[0], now.gw_rss)
        peak[1] = max(peak[1], now.child_rss)


async def gateway_cell(transport: str, concurrency: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One cell against a fresh gateway."""
    gw = GatewayProcess(args.config, args.env_file, workdir, f"gateway-{transport}-c{concurrency}.log", args.gw_env)
    try:
        gw.start(args.wrapper)
        await gw.wait_ready()
        idle = gw.usage()
        cls = TRANSPORTS[transport]
        spy: list[subprocess.Popen[bytes]] = []

        def start_pyspy() -> None:
            """Sample the gateway during the window (py-spy runs beside it; --nonblocking: no pauses)."""
            assert gw.popen is not None
            out = workdir / f"pyspy-{transport}-c{concurrency}.txt"
            command = [str(Path(sys.prefix) / "bin" / "py-spy"), "record", "--pid", str(gw.popen.pid)]
            command += ["--duration", str(max(1, int(args.seconds))), "--rate", "250", "--nonblocking"]
            command += ["--format", "raw", "--output", str(out)]
            spy.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        try:
            result = await run_cell(
                lambda: cls(HOST, gw.port, SERVER), concurrency, args, gw.usage, start_pyspy if args.pyspy else None
            )
        finally:
            for proc in spy:
                try:
                    proc.wait(args.seconds + 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        result["rss_gw_start_mib"] = idle.gw_rss / MIB
        result["gateway_alive"] = gw.alive()
        if not gw.alive():
            result["samples"].append(f"gateway exited with {gw.popen.returncode if gw.popen else '?'}")
        return {"transport": transport, **result}
    finally:
        code = gw.stop()
        if code not in (0, None, -15):
            print(f"  note: gateway exit code {code} (log {gw.log_path})", file=sys.stderr)


async def direct_cell(concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    """The demo server driven directly: C callers multiplexed on one stdin/stdout pair."""
    pipe = DirectPipe()
    try:
        pid = await pipe.start()
        child = psutil.Process(pid)

        def usage() -> Usage:
            mine = usage_of(child)
            return Usage(0.0, mine.gw_cpu, 0, mine.gw_rss, 1)  # the child is all there is

        result = await run_cell(lambda: DirectSession(pipe), concurrency, args, usage)
        return {"transport": "direct", **result}
    finally:
        await pipe.stop()


async def idle_sse(count: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Open `count` SSE sessions, keep them idle, report the gateway's RSS; then check a few still work."""
    gw = GatewayProcess(args.config, args.env_file, workdir, f"gateway-idle-sse-{count}.log", args.gw_env)
    opened: list[SseSession] = []
    report: dict[str, Any] = {"requested": count}
    try:
        gw.start(args.wrapper)
        await gw.wait_ready()
        start = gw.usage()
        report["rss_gw_start_mib"] = start.gw_rss / MIB
        limiter = asyncio.Semaphore(128)
        failures: list[str] = []

        async def open_one() -> None:
            session = SseSession(HOST, gw.port, SERVER)
            async with limiter:
                try:
                    await session.open_stream()
                    opened.append(session)
                except (CallFailed, ConnectionBroken, OSError) as exc:
                    failures.append(repr(exc))
                    session.stream.close()

        began = time.perf_counter()
        tasks = [asyncio.create_task(open_one()) for _ in range(count)]
        _, pending = await asyncio.wait(tasks, timeout=args.idle_timeout)
        for task in pending:
            task.cancel()
        report["open_seconds"] = round(time.perf_counter() - began, 2)
        report["opened"] = len(opened)
        report["failed"] = len(failures) + len(pending)
        report["failure_samples"] = failures[:5]
        await asyncio.sleep(1.0)
        held = gw.usage()
        await asyncio.sleep(args.idle_hold)
        after = gw.usage()
        report["rss_gw_mib"] = max(held.gw_rss, after.gw_rss) / MIB
        report["rss_child_mib"] = after.child_rss / MIB
        idle_cpu = after.gw_cpu + after.child_cpu - held.gw_cpu - held.child_cpu
        report["idle_cpu_pct"] = max(0.0, 100 * idle_cpu / (after.when - held.when))
        report["rss_gw_per_session_kib"] = (after.gw_rss - start.gw_rss) / 1024 / max(len(opened), 1)
        report["health_sessions"] = gw.health()["servers"][SERVER]["sessions"]
        # The idle sessions must still work: handshake and one checked call on a few of them.
        checked = 0
        for session in opened[:4]:
            try:
                await asyncio.wait_for(session.handshake(), 10)
                answer = await asyncio.wait_for(session.call(1, "still-alive"), 10)
                checked += answer.get("result", {}).get("content", [{}])[0].get("text") == "still-alive"
            except (CallFailed, ConnectionBroken, OSError, TimeoutError) as exc:
                report.setdefault("check_failures", []).append(repr(exc))
        report["checked_ok"] = checked
        for session in opened:
            session.drop()
        opened.clear()
        deadline = time.monotonic() + 15.0
        while True:  # the gateway should notice every disconnect and end every session
            await asyncio.sleep(0.5)
            left = gw.health()["servers"][SERVER]["sessions"]
            if left == 0 or time.monotonic() > deadline:
                break
        report["health_sessions_after_close"] = left
        report["rss_gw_after_close_mib"] = gw.usage().gw_rss / MIB
        report["gateway_alive"] = gw.alive()
        return report
    finally:
        for session in opened:
            session.drop()
        gw.stop()


# --- reporting -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def cell_targets(row: dict[str, Any]) -> list[tuple[str, bool]]:
    """The targets that apply to one gateway cell."""
    found: list[tuple[str, bool]] = []
    c, transport = row["c"], row["transport"]
    if c in (1, 8, 64, 256):
        found.append(("0 err/wrong", row["errors"] == 0 and row["wrong"] == 0 and row["calls"] > 0))
    if c in (8, 64) and transport in ("streamable", "sse"):
        found.append((f"cpu<={CPU_TARGET_MS}ms", row["cpu_tree_ms"] <= CPU_TARGET_MS))
    if c == 64:
        found.append((f"p99<={P99_TARGET_MS:g}ms", row["p99"] <= P99_TARGET_MS))
        found.append((f"rss<={RSS_TARGET_MIB:g}MiB", row["rss_gw_peak_mib"] <= RSS_TARGET_MIB))
    return found


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def report(rows: list[dict[str, Any]], direct: dict[int, dict[str, Any]], idle: dict[str, Any] | None) -> list[str]:
    """Markdown tables and the target verdicts."""
    lines = [
        "### Gateway (fresh gateway per cell; CPU = user+sys over the measured window / measured calls)",
        "",
        "| transport | C | calls | calls/s | p50 ms | p90 ms | p99 ms | errors | wrong "
        "| tree CPU ms/call | gw CPU | child CPU | gw RSS MiB (peak) | children RSS MiB "
        "| bench CPU ms/call | other procs (cores) | vs direct calls/s | targets |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        base = direct.get(row["c"])
        ratio = f"{row['cps'] / base['cps']:.2f}x" if base and base["cps"] else "n/a"
        targets = ", ".join(f"{name} {verdict(ok)}" for name, ok in cell_targets(row)) or "-"
        lines.append(
            f"| {row['transport']} | {row['c']} | {row['calls']} | {row['cps']:.0f} | {fmt(row['p50'])} "
            f"| {fmt(row['p90'])} | {fmt(row['p99'])} | {row['errors']} | {row['wrong']} "
            f"| {fmt(row['cpu_tree_ms'], 3)} | {fmt(row['cpu_gw_ms'], 3)} | {fmt(row['cpu_child_ms'], 3)} "
            f"| {fmt(row['rss_gw_peak_mib'], 1)} | {fmt(row['rss_child_peak_mib'], 1)} "
            f"| {fmt(row['client_cpu_ms'], 3)} | {fmt(row['other_cores'])} | {ratio} | {targets} |"
        )
    lines += [
        "",
        "### Direct stdio baseline (demo server alone, C callers multiplexed on one pipe)",
        "",
        "| C | calls | calls/s | p50 ms | p99 ms | errors | wrong | child CPU ms/call | other procs (cores) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c, row in sorted(direct.items()):
        lines.append(
            f"| {c} | {row['calls']} | {row['cps']:.0f} | {fmt(row['p50'])} | {fmt(row['p99'])} "
            f"| {row['errors']} | {row['wrong']} | {fmt(row['cpu_child_ms'], 3)} | {fmt(row['other_cores'])} |"
        )
    if direct:
        lines += [
            "",
            "### Gateway / direct",
            "",
            "| transport | C | calls/s ratio | p50 ratio | CPU/call ratio (tree / child alone) |",
            "|---|--:|--:|--:|--:|",
        ]
        for row in rows:
            base = direct.get(row["c"])
            if not base:
                continue
            lines.append(
                f"| {row['transport']} | {row['c']} | {row['cps'] / base['cps']:.2f} "
                f"| {row['p50'] / base['p50']:.1f} | {row['cpu_tree_ms'] / base['cpu_child_ms']:.1f} |"
            )
    if idle is not None:
        ok = idle.get("opened") == idle["requested"] and idle.get("rss_gw_mib", math.inf) <= IDLE_RSS_TARGET_MIB
        lines += [
            "",
            f"### Idle SSE sessions: {idle['requested']}",
            "",
            f"- opened {idle.get('opened')} (failed {idle.get('failed')}) in {idle.get('open_seconds')} s; "
            f"gateway counts {idle.get('health_sessions')} sessions",
            f"- gateway RSS {fmt(idle.get('rss_gw_mib', math.nan), 1)} MiB "
            f"(at start {fmt(idle.get('rss_gw_start_mib', math.nan), 1)} MiB, "
            f"{fmt(idle.get('rss_gw_per_session_kib', math.nan), 1)} KiB per session); "
            f"children {fmt(idle.get('rss_child_mib', math.nan), 1)} MiB "
            f"-> rss<={IDLE_RSS_TARGET_MIB:g}MiB {verdict(ok)}",
            f"- gateway tree CPU while idle: {fmt(idle.get('idle_cpu_pct', math.nan), 1)} % of one core",
            f"- still working after the hold: {idle.get('checked_ok')}/4 handshakes+calls OK; "
            f"after closing all: {idle.get('health_sessions_after_close')} sessions, "
            f"RSS {fmt(idle.get('rss_gw_after_close_mib', math.nan), 1)} MiB",
        ]
    lines += ["", "### Targets", ""]
    for row in rows:
        for name, ok in cell_targets(row):
            figure = {
                "0 err/wrong": f"errors={row['errors']} wrong={row['wrong']}",
                "p99": f"p99={fmt(row['p99'])} ms",
                "cpu": f"{fmt(row['cpu_tree_ms'], 3)} ms/call",
                "rss": f"peak {fmt(row['rss_gw_peak_mib'], 1)} MiB",
            }[name.split("<")[0]]
            lines.append(f"- {verdict(ok)} {row['transport']} C={row['c']}: {name} ({figure})")
    if idle is not None:
        lines.append(
            f"- {verdict(ok)} idle SSE x{idle['requested']}: rss<={IDLE_RSS_TARGET_MIB:g}MiB "
            f"({fmt(idle.get('rss_gw_mib', math.nan), 1)} MiB, opened {idle.get('opened')})"
        )
    problems = [(r["transport"], r["c"], s) for r in [*rows, *direct.values()] for s in r["samples"]]
    if problems:
        lines += ["", "### First problems seen", ""]
        lines += [f"- {t} C={c}: {s}" for t, c, s in problems[:20]]
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="C=1,8,64, 2 s per cell, no idle test")
    parser.add_argument("--transports", default="streamable,sse,modern")
    parser.add_argument("--concurrency", default=None, help="default 1,8,64,256 (quick: 1,8,64)")
    parser.add_argument("--calls", type=int, default=1_000_000, help="cap on measured calls per cell")
    parser.add_argument("--seconds", type=float, default=None, help="measured window per cell (default 5, quick 2)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell (default 1, quick 0.5)")
    parser.add_argument("--idle-sse", type=int, default=None, help="idle SSE sessions to open (default 5000, quick 0)")
    parser.add_argument("--idle-only", action="store_true", help="run only the idle SSE test")
    parser.add_argument("--idle-hold", type=float, default=5.0, help="seconds to hold the idle sessions")
    parser.add_argument("--idle-timeout", type=float, default=120.0, help="cap on opening the idle sessions")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct stdio baseline")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="run the gateway with INSECURE_NO_AUTH=true (to see what authentication costs)",
    )
    parser.add_argument(
        "--no-pipeline",
        action="store_true",
        help="run the gateway without its security pipeline (bench/plain_gateway.py), for before/after figures",
    )
    parser.add_argument(
        "--pyspy", action="store_true", help="sample the gateway with py-spy during each window (pyspy-*.txt)"
    )
    parser.add_argument(
        "--cprofile", action="store_true", help="run the gateway under cProfile (dumps gateway-*.prof in the out dir)"
    )
    parser.add_argument("--out", default=None, help="write the results here instead of bench/out/STAMP")
    parser.add_argument(
        "--cluster", action="store_true", help="3 instances + Redis + nginx against one instance (bench/cluster.py)"
    )
    soaking = parser.add_argument_group("soak (one gateway for a long paced run; see bench/README.md)")
    soaking.add_argument("--soak", type=float, default=None, metavar="MINUTES", help="soak for MINUTES")
    soaking.add_argument("--soak-seconds", type=float, default=None, help="soak length in seconds (short runs)")
    soaking.add_argument(
        "--soak-rate",
        type=float,
        default=None,
        help=f"target calls/s in all (default {soak.SOAK_RATE_FRACTION:.0%} of an unpaced run of the same mix)",
    )
    soaking.add_argument(
        "--soak-sample", type=float, default=None, help=f"sample period (default {soak.SOAK_SAMPLE_S:g} s)"
    )
    soaking.add_argument("--soak-warmup", type=float, default=None, help="seconds left out of the RSS drift")
    soaking.add_argument(
        "--soak-churn",
        type=int,
        default=soak.SOAK_CHURN_CALLS,
        help="calls per session before it is closed and replaced (0: keep every session)",
    )
    args = parser.parse_args()
    args.soak_seconds = soak.duration_of(args)
    if args.soak_seconds is not None:
        args.concurrency = args.concurrency or str(soak.SOAK_C)
        if "," in args.concurrency:
            parser.error("--soak takes one --concurrency (sessions per transport)")
    args.concurrency = [int(c) for c in (args.concurrency or ("1,8,64" if args.quick else "1,8,64,256")).split(",")]
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = set(args.transports) - set(TRANSPORTS)
    if unknown:
        parser.error(f"unknown transport(s) {sorted(unknown)}; use {','.join(TRANSPORTS)}")
    args.seconds = args.seconds if args.seconds is not None else (2.0 if args.quick else 5.0)
    args.seconds = min(args.seconds, 600.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.idle_sse = args.idle_sse if args.idle_sse is not None else (0 if args.quick else 5000)
    if args.idle_only and not args.idle_sse:
        args.idle_sse = 5000
    return args


async def main_async(args: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(args.out) if args.out else OUT / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    args.config = workdir / "mcp.json"
    args.env_file = workdir / ".env"
    token = write_demo_config(args.config, args.env_file)
    Connection.common_headers = b"authorization: Bearer " + token.encode() + b"\r\n"
    # Rate limits and the per-principal quotas raised out of the way (the limiter and the counters still run on every
    # request; C=256 and the idle test open more sessions and streams than one token may by default).
    args.gw_env = {"RATE_LIMIT_MAX_REQUESTS": "1000000000", "RATE_LIMIT_TOKEN_MAX_REQUESTS": "1000000000"}
    args.gw_env.update(MAX_SESSIONS_PER_PRINCIPAL="1000000", MAX_STREAMS_PER_PRINCIPAL="1000000")
    if args.insecure_no_auth:
        args.gw_env["INSECURE_NO_AUTH"] = "true"
    args.wrapper = [sys.executable, str(Path(__file__).with_name("plain_gateway.py"))] if args.no_pipeline else None
    rows: list[dict[str, Any]] = []
    direct: dict[int, dict[str, Any]] = {}
    idle = None
    print(
        f"mcp-bastion bench: nproc={os.cpu_count()} python={platform.python_version()} "
        f"loop={type(asyncio.get_running_loop()).__module__} nofile={raise_nofile()} out={workdir}",
        flush=True,
    )
    if args.soak_seconds is not None:
        return await soak.main(args, workdir)
    if args.cluster:  # Issue 12: its own cells, one concurrency (the first of --concurrency)
        cells = await cluster.main(args, workdir)
        (workdir / "cluster.json").write_bytes(orjson.dumps(cells, option=orjson.OPT_INDENT_2))
        return 1 if any(row["errors"] or row["wrong"] for row in cells) else 0
    if not args.idle_only:
        for c in [] if args.no_direct else args.concurrency:
            row = await direct_cell(c, args)
            direct[c] = row
            print(
                f"  direct     C={c:<4} {row['cps']:8.0f} calls/s p50 {fmt(row['p50'])} ms "
                f"p99 {fmt(row['p99'])} ms err {row['errors']} wrong {row['wrong']} "
                f"child cpu {fmt(row['cpu_child_ms'], 3)} ms/call",
                flush=True,
            )
        for transport in args.transports:
            for c in args.concurrency:
                if args.cprofile:
                    prof = workdir / f"gateway-{transport}-c{c}.prof"
                    args.wrapper = [
                        sys.executable,
                        "-m",
                        "cProfile",
                        "-o",
                        str(prof),
                        str(Path(sys.prefix) / "bin" / "mcp-bastion"),
                    ]
                row = await gateway_cell(transport, c, args, workdir)
                rows.append(row)
                print(
                    f"  {transport:<10} C={c:<4} {row['cps']:8.0f} calls/s p50 {fmt(row['p50'])} ms "
                    f"p99 {fmt(row['p99'])} ms err {row['errors']} wrong {row['wrong']} "
                    f"tree cpu {fmt(row['cpu_tree_ms'], 3)} ms/call rss {fmt(row['rss_gw_peak_mib'], 1)} MiB "
                    f"other procs {fmt(row['other_cores'])} cores",
                    flush=True,
                )
    if args.idle_sse:
        args.wrapper = None
        idle = await idle_sse(args.idle_sse, args, workdir)
        print(f"  idle sse x{args.idle_sse}: {fmt(idle.get('rss_gw_mib', math.nan), 1)} MiB", flush=True)
    lines = report(rows, direct, idle)
    print()
    print("\n".join(lines))
    (workdir / "results.json").write_bytes(
        orjson.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "direct": direct, "idle": idle},
            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
        )
    )
    (workdir / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    failed = any(not ok for row in rows for _, ok in cell_targets(row))
    return 1 if failed else 0


def main() -> int:
    args = parse_args()
    raise_nofile()
    try:
        import uvloop  # optional: a cheaper event loop for the load generator

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
