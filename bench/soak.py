"""Soak mode of the benchmark: one gateway for N minutes under a paced, checked load; RSS, fd, thread and child drift.

    .venv/bin/python bench/run.py --soak 10 [--soak-rate 1500] [--transports ...] [--concurrency 16]

C sessions per transport issue `tools/call echo` at a paced total rate (default: SOAK_RATE_FRACTION of what the same
mix measures unpaced on a fresh gateway first), every answer's id and text checked. Each session is replaced after
`--soak-churn` calls, so session set-up and teardown are soaked too. Every sample period the gateway's RSS, open fds
(its own and its children's), threads, children, /health sessions, calls, errors and the interval's latency are
recorded. The verdict: RSS drift (last window's median minus the first window's after warm-up), fd drift (after the
clients closed, against the baseline taken before they opened), zero errors, no child left once the gateway stopped.
"""

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import secrets
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from gateway import HOST, MIB, GatewayProcess
from httpc import Connection, ConnectionBroken
from sessions import TRANSPORTS, CallFailed

SERVER = "demo"
SOAK_C = 16  # sessions per transport unless --concurrency says otherwise
SOAK_SAMPLE_S = 10.0  # sample period (shorter soaks sample every tenth of their length)
SOAK_WINDOW_S = 60.0  # the "first minute" and "last minute" compared for RSS drift
SOAK_WARMUP_MAX_S = 30.0  # warm-up excluded from the drift (shorter soaks: a sixth of their length)
SOAK_RATE_FRACTION = 0.7  # of the calibrated capacity, when --soak-rate is not given
SOAK_CALIBRATE_WARMUP_S = 1.0
SOAK_CALIBRATE_S = 4.0
SOAK_CHURN_CALLS = 1000  # calls per session before it is closed and replaced (0: keep sessions for the whole soak)
SOAK_MAX_S = 24 * 3600.0
CALL_TIMEOUT_S = 30.0  # one call or one session set-up; past it the call counts as hung and the session is dropped
CLOSE_TIMEOUT_S = 5.0
GRACE_S = 30.0  # past the end of the soak before a worker still running counts as hung
QUIET_READINGS = 3  # equal fd counts in a row (0.25 s apart) make the baseline
SETTLE_S = 15.0  # after the clients closed: for sessions and fds to return to the baseline
STOP_WAIT_S = 30.0  # SIGTERM to exit
REOPEN_BACKOFF_S = 1.0  # a worker whose session could not be set up waits this long before trying again
REOPEN_MAX = 50  # failed set-ups per worker before it gives up
RSS_DRIFT_MAX_PCT = 5.0
OTHERS_TOP = 5  # busiest other processes listed in the report
OTHERS_LABEL = 90  # characters of their command line
PROBLEMS_MAX = 8


@dataclass
class SoakStats:
    """Counters shared by every worker, plus the latencies of the current sample interval."""

    calls: int = 0  # every call attempted (any outcome)
    ok: int = 0
    errors: int = 0  # HTTP or JSON-RPC error, broken connection, hang, failed set-up
    wrong: int = 0  # an answer with the wrong id or text
    broken: int = 0
    hung: int = 0
    setup_failed: int = 0
    sessions_opened: int = 0
    late: int = 0  # times a worker fell a whole period behind its schedule and dropped the backlog
    window: list[float] = field(default_factory=list)  # seconds, successful calls since the last sample
    problems: list[str] = field(default_factory=list)

    def fail(self, kind: str, detail: str) -> None:
        self.errors += 1
        if len(self.problems) < PROBLEMS_MAX:
            self.problems.append(f"{kind}: {detail[:300]}")

    def take_window(self) -> list[float]:
        taken, self.window = self.window, []
        return taken


@dataclass
class Plan:
    """What the workers share: where to call, how fast, until when."""

    port: int
    transports: list[str]
    workers: int
    interval: float  # seconds between one worker's calls (0: back to back)
    deadline: float  # loop time
    cap: int  # calls in all
    churn: int
    salt: str = field(default_factory=lambda: secrets.token_hex(4))
    stats: SoakStats = field(default_factory=SoakStats)


@dataclass
class Snapshot:
    """The gateway tree and the machine at one instant (psutil; cheap for us, free for the gateway)."""

    when: float
    gw_rss: int
    gw_fds: int
    gw_threads: int
    child_fds: int
    child_rss: int
    child_pids: list[int]
    tree_cpu: float
    busy: float
    own_cpu: float


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def snapshot(gw: GatewayProcess) -> Snapshot:
    """The gateway's RSS, fds, threads and CPU, and the same summed over its children."""
    assert gw.proc is not None
    with gw.proc.oneshot():
        rss = gw.proc.memory_info().rss
        fds = gw.proc.num_fds()
        threads = gw.proc.num_threads()
        times = gw.proc.cpu_times()
    tree_cpu = times.user + times.system
    child_fds = child_rss = 0
    pids: list[int] = []
    for child in gw.proc.children(recursive=True):
        with contextlib.suppress(psutil.Error), child.oneshot():
            child_fds += child.num_fds()
            child_rss += child.memory_info().rss
            ctimes = child.cpu_times()
            tree_cpu += ctimes.user + ctimes.system
            pids.append(child.pid)
    return Snapshot(
        time.perf_counter(), rss, fds, threads, child_fds, child_rss, pids, tree_cpu, machine_busy(), own_cpu()
    )


async def health_sessions(port: int) -> int | None:
    """Sessions the gateway counts for the demo server (GET /health), None when it does not answer."""
    conn = Connection(HOST, port)
    try:
        await conn.open()
        resp = await asyncio.wait_for(conn.request(b"GET", b"/health"), 5)
        return int(orjson.loads(resp.body)["servers"][SERVER]["sessions"])
    except (OSError, ConnectionBroken, KeyError, ValueError, TypeError):  # TimeoutError is an OSError
        return None
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in ms."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000.0


# --- the load ----------------------------------------------------------------------------------------


async def checked_call(session: Any, stats: SoakStats, tag: str) -> bool:
    """One checked tools/call; False when the session should be dropped (broken connection or hang)."""
    request_id = session.next_id()
    text = f"{tag}-{request_id}"
    stats.calls += 1
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            answer = await session.call(request_id, text)
    except CallFailed as exc:
        stats.fail("error", str(exc))
        return True
    except TimeoutError:
        stats.hung += 1
        stats.fail("hung", f"no answer to id {request_id} within {CALL_TIMEOUT_S:g} s")
        return False
    except (ConnectionBroken, OSError) as exc:
        stats.broken += 1
        stats.fail("broken", repr(exc))
        return False
    elapsed = time.perf_counter() - started
    try:
        good = answer["id"] == request_id and answer["result"]["content"][0]["text"] == text
    except (KeyError, IndexError, TypeError):
        good = False
    if good:
        stats.ok += 1
        stats.window.append(elapsed)
    elif isinstance(answer, dict) and "error" in answer and answer.get("id") == request_id:
        stats.fail("jsonrpc-error", str(answer["error"]))
    else:
        stats.wrong += 1
        if len(stats.problems) < PROBLEMS_MAX:
            stats.problems.append(f"wrong: expected id={request_id} text={text!r}, got {str(answer)[:200]}")
    return True


async def close_quietly(session: Any) -> None:
    with contextlib.suppress(ConnectionBroken, OSError):  # TimeoutError is an OSError
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await session.close()


async def open_session(plan: Plan, transport: str) -> Any:
    """A set-up session, or None (counted as an error) when set-up failed."""
    session: Any = TRANSPORTS[transport](HOST, plan.port, SERVER)
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            await session.setup()
    except (CallFailed, ConnectionBroken, OSError) as exc:
        plan.stats.setup_failed += 1
        plan.stats.fail("setup", f"{transport}: {exc!r}")
        await close_quietly(session)
        return None
    plan.stats.sessions_opened += 1
    return session


async def worker(plan: Plan, index: int) -> None:
    """Call at this worker's share of the rate until the deadline or the cap, replacing the session as planned."""
    loop = asyncio.get_running_loop()
    transport = plan.transports[index % len(plan.transports)]
    stats = plan.stats
    next_at = loop.time() + plan.interval * index / plan.workers  # stagger the workers across one period
    session: Any = None
    serials = itertools.count()
    used = failures = 0
    tag = ""
    try:
        while loop.time() < plan.deadline and stats.calls < plan.cap:
            if session is None:
                session = await open_session(plan, transport)
                if session is None:
                    failures += 1
                    if failures >= REOPEN_MAX:
                        return
                    await asyncio.sleep(REOPEN_BACKOFF_S)
                    continue
                used = 0
                tag = f"{plan.salt}.{index}.{next(serials)}"
            if plan.interval:
                now = loop.time()
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                elif now - next_at > plan.interval:  # a whole period behind: drop the backlog, no burst
                    stats.late += 1
                    next_at = now
                next_at += plan.interval
            alive = await checked_call(session, stats, tag)
            used += 1
            if not alive or (plan.churn and used >= plan.churn):
                await close_quietly(session)
                session = None
    finally:
        if session is not None:
            await close_quietly(session)


async def drive(plan: Plan) -> None:
    """Run the workers to the deadline; a worker still running GRACE_S later counts as hung and is cancelled."""
    tasks = [asyncio.create_task(worker(plan, i)) for i in range(plan.workers)]
    loop = asyncio.get_running_loop()
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, plan.deadline - loop.time()) + GRACE_S)
    for task in pending:
        task.cancel()
        plan.stats.hung += 1
        plan.stats.fail("hung", f"a worker was still running {GRACE_S:g} s after the end")
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)


async def calibrate(args: argparse.Namespace, workdir: Path) -> float:
    """Calls/s the soak's session mix reaches unpaced on a fresh gateway (after a short warm-up)."""
    gw = GatewayProcess(args.config, args.env_file, workdir, "gateway-soak-calibrate.log", args.gw_env)
    try:
        gw.start(args.wrapper)
        await gw.wait_ready()
        loop = asyncio.get_running_loop()
        workers = args.concurrency[0] * len(args.transports)
        deadline = loop.time() + SOAK_CALIBRATE_WARMUP_S + SOAK_CALIBRATE_S
        plan = Plan(gw.port, args.transports, workers, 0.0, deadline, 10**9, 0)
        driving = asyncio.create_task(drive(plan))
        await asyncio.sleep(SOAK_CALIBRATE_WARMUP_S)
        begun, started = plan.stats.calls, time.perf_counter()
        await asyncio.sleep(SOAK_CALIBRATE_S)
        cps = (plan.stats.calls - begun) / (time.perf_counter() - started)
        await driving
        if plan.stats.errors or plan.stats.wrong:
            raise RuntimeError(f"calibration saw errors: {plan.stats.problems}")
        return cps
    finally:
        gw.stop()


# --- the soak ----------------------------------------------------------------------------------------


def sample_row(
    t: float, prev: Snapshot, now: Snapshot, plan: Plan, prev_calls: int, sessions: int | None
) -> dict[str, Any]:
    """One line of the table: the gateway at `now` and what happened since `prev`."""
    stats = plan.stats
    span = max(now.when - prev.when, 1e-9)
    latencies = stats.take_window()
    tree = now.tree_cpu - prev.tree_cpu
    mine = now.own_cpu - prev.own_cpu
    return {
        "t": round(t, 1),
        "cps": (stats.calls - prev_calls) / span,
        "calls": stats.calls,
        "errors": stats.errors,
        "wrong": stats.wrong,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "rss_gw_mib": now.gw_rss / MIB,
        "rss_child_mib": now.child_rss / MIB,
        "fds_gw": now.gw_fds,
        "fds_children": now.child_fds,
        "threads": now.gw_threads,
        "children": len(now.child_pids),
        "sessions": sessions,
        "tree_cores": tree / span,
        "bench_cores": mine / span,
        "other_cores": max(0.0, (now.busy - prev.busy) - tree - mine) / span,
    }


async def prime(port: int, transports: list[str]) -> None:
    """One session and one checked call per transport, so that what the gateway opens lazily is in the baseline."""
    stats = SoakStats()
    plan = Plan(port, transports, len(transports), 0.0, math.inf, 0, 0, stats=stats)
    for transport in transports:
        session = await open_session(plan, transport)
        if session is not None:
            await checked_call(session, stats, f"prime.{transport}")
            await close_quietly(session)
    if stats.errors or stats.wrong:
        raise RuntimeError(f"the gateway does not answer correctly before the soak: {stats.problems}")


async def quiet_baseline(gw: GatewayProcess) -> Snapshot:
    """The gateway once the priming sessions are gone and its fd count has held still for a few readings."""
    began = time.monotonic()
    readings: list[int] = []
    while True:
        now = snapshot(gw)
        if await health_sessions(gw.port) == 0:
            readings.append(now.gw_fds + now.child_fds)
        if readings[-QUIET_READINGS:].count(readings[-1] if readings else -1) >= QUIET_READINGS:
            return now
        if time.monotonic() - began > SETTLE_S:
            raise RuntimeError(f"the gateway did not settle within {SETTLE_S:g} s before the soak (fds {readings})")
        await asyncio.sleep(0.25)


async def settle(gw: GatewayProcess, baseline: Snapshot) -> tuple[Snapshot, int | None, float]:
    """Poll (bounded) until the gateway counts no session and its fds are back to the baseline."""
    began = time.monotonic()
    while True:
        now = snapshot(gw)
        sessions = await health_sessions(gw.port)
        back = sessions == 0 and now.gw_fds <= baseline.gw_fds and now.child_fds <= baseline.child_fds
        if back or time.monotonic() - began > SETTLE_S:
            return now, sessions, time.monotonic() - began
        await asyncio.sleep(0.25)


def stop_and_look_for_orphans(gw: GatewayProcess) -> dict[str, Any]:
    """SIGTERM the gateway, wait for it, then list every child it ever had that is still alive."""
    assert gw.popen is not None
    gw.remember_children()
    began = time.monotonic()
    gw.popen.terminate()
    try:
        code: int | None = gw.popen.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:  # the gateway did not stop; GatewayProcess.stop() kills it afterwards
        code = None
    orphans = []
    for pid, child in gw.children.items():
        with contextlib.suppress(psutil.Error):
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                orphans.append(pid)
    return {
        "exit_code": code,
        "stop_seconds": round(time.monotonic() - began, 2),
        "children_seen": sorted(gw.children),
        "orphans": orphans,
    }


class OtherProcs:
    """CPU used by every process on the machine, scanned at each sample, to name what else ran during the soak.

    A process counts with its reaped children (a test runner with the short-lived servers it started); one first
    seen after the first scan started during the soak and counts from zero; one that exits counts up to the last
    scan that saw it.
    """

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, float, float]] = {}  # pid -> (label, cpu at first scan, cpu at last scan)
        self.scans = 0

    def scan(self) -> None:
        for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            times = proc.info.get("cpu_times")
            if times is None:
                continue
            cpu = times.user + times.system + times.children_user + times.children_system
            known = self.seen.get(proc.pid)
            if known is None:
                label = " ".join(proc.info.get("cmdline") or []) or proc.info.get("name") or "?"
                self.seen[proc.pid] = (label[:OTHERS_LABEL], cpu if self.scans == 0 else 0.0, cpu)
            else:
                self.seen[proc.pid] = (known[0], known[1], cpu)
        self.scans += 1

    def busiest(self, mine: set[int], seconds: float) -> list[dict[str, Any]]:
        """The other processes that used the most CPU, in cores (at least 1 % of one core)."""
        used = sorted(
            ((last - first, pid, label) for pid, (label, first, last) in self.seen.items() if pid not in mine),
            reverse=True,
        )
        return [
            {"pid": pid, "cores": round(cpu / seconds, 3), "cmd": label}
            for cpu, pid, label in used[:OTHERS_TOP]
            if cpu > 0.01 * seconds
        ]


def rss_drift(samples: list[dict[str, Any]], warmup: float, duration: float) -> dict[str, Any]:
    """Median gateway RSS of the first window after warm-up and of the last window, and the slope over both."""
    window = min(SOAK_WINDOW_S, max((duration - warmup) / 2, 0.0))
    measured = [s for s in samples if s["t"] >= warmup] or samples
    first = [s["rss_gw_mib"] for s in measured if s["t"] <= warmup + window] or [measured[0]["rss_gw_mib"]]
    last = [s["rss_gw_mib"] for s in measured if s["t"] >= duration - window] or [measured[-1]["rss_gw_mib"]]
    first_median, last_median = statistics.median(first), statistics.median(last)
    slope = math.nan
    if len(measured) >= 3:
        xs = [s["t"] for s in measured]
        slope = statistics.linear_regression(xs, [s["rss_gw_mib"] for s in measured]).slope * 3600
    return {
        "window_s": round(window, 1),
        "first_mib": first_median,
        "last_mib": last_median,
        "drift_mib": last_median - first_median,
        "drift_pct": 100 * (last_median - first_median) / first_median if first_median else math.nan,
        "slope_mib_per_hour": slope,
        "first_samples": len(first),
        "last_samples": len(last),
    }


def judge(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The criteria: (name, passed, figures)."""
    drift, fds, stop, totals = result["rss"], result["fds"], result["stop"], result["totals"]
    return [
        (
            "errors == 0 and wrong == 0",
            totals["errors"] == 0 and totals["wrong"] == 0 and totals["ok"] > 0,
            f"{totals['calls']} checked calls, {totals['errors']} errors, {totals['wrong']} wrong, "
            f"{totals['sessions_opened']} sessions opened",
        ),
        (
            f"RSS drift <= {RSS_DRIFT_MAX_PCT:g} %",
            drift["drift_pct"] <= RSS_DRIFT_MAX_PCT,
            f"median {drift['first_mib']:.1f} MiB (first {drift['window_s']:g} s after warm-up) -> "
            f"{drift['last_mib']:.1f} MiB (last {drift['window_s']:g} s): {drift['drift_mib']:+.1f} MiB "
            f"({drift['drift_pct']:+.1f} %), slope {drift['slope_mib_per_hour']:+.1f} MiB/h",
        ),
        (
            "fds back to the baseline",
            fds["gw_drift"] <= 0 and fds["children_drift"] <= 0,
            f"gateway {fds['gw_start']} -> {fds['gw_end']} ({fds['gw_drift']:+d}), children {fds['children_start']} "
            f"-> {fds['children_end']} ({fds['children_drift']:+d}), peak under load {fds['gw_peak']}; "
            f"{fds['sessions_end']} sessions {fds['settle_s']:.1f} s after the clients closed",
        ),
        (
            "no orphan process",
            not stop["orphans"] and stop["exit_code"] is not None,
            f"{len(stop['children_seen'])} children seen, {len(stop['orphans'])} alive after the gateway exited "
            f"(exit code {stop['exit_code']}, {stop['stop_seconds']} s after SIGTERM)",
        ),
    ]


async def run_soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Calibrate (unless a rate is given), soak one gateway, settle, stop it; every figure of the report."""
    duration = args.soak_seconds
    sample_s = args.soak_sample or min(SOAK_SAMPLE_S, duration / 10)
    warmup = args.soak_warmup if args.soak_warmup is not None else min(SOAK_WARMUP_MAX_S, duration / 6)
    workers = args.concurrency[0] * len(args.transports)
    calibrated = None
    rate = args.soak_rate
    if not rate:
        calibrated = await calibrate(args, workdir)
        rate = SOAK_RATE_FRACTION * calibrated
        print(f"  calibration: {calibrated:.0f} calls/s unpaced -> soak at {rate:.0f} calls/s", flush=True)
    gw = GatewayProcess(args.config, args.env_file, workdir, "gateway-soak.log", args.gw_env)
    result: dict[str, Any] = {
        "seconds": duration,
        "sample_s": sample_s,
        "warmup_s": warmup,
        "transports": args.transports,
        "sessions_per_transport": args.concurrency[0],
        "churn_calls": args.soak_churn,
        "rate_target": rate,
        "rate_calibrated": calibrated,
    }
    samples: list[dict[str, Any]] = []
    try:
        gw.start(args.wrapper)
        await gw.wait_ready()
        await prime(gw.port, args.transports)
        baseline = await quiet_baseline(gw)
        result["baseline"] = {k: v for k, v in asdict(baseline).items() if k in ("gw_rss", "gw_fds", "gw_threads")}
        loop = asyncio.get_running_loop()
        cap = math.ceil(rate * duration * 1.5) + workers
        plan = Plan(gw.port, args.transports, workers, workers / rate, loop.time() + duration, cap, args.soak_churn)
        others = OtherProcs()
        others.scan()
        first = prev = snapshot(gw)
        prev_calls = 0
        driving = asyncio.create_task(drive(plan))
        began = time.perf_counter()
        next_at = sample_s
        while True:  # a sample every sample_s, and one when the load ends
            await asyncio.wait([driving], timeout=max(0.0, began + next_at - time.perf_counter()))
            finished = driving.done()
            if not finished or time.perf_counter() - prev.when > 0.25 * sample_s:
                gw.remember_children()
                others.scan()
                now = snapshot(gw)
                row = sample_row(now.when - began, prev, now, plan, prev_calls, await health_sessions(gw.port))
                samples.append(row)
                print_sample(row)
                prev, prev_calls = now, plan.stats.calls
            if finished:
                break
            next_at += sample_s
        elapsed = time.perf_counter() - began
        last = snapshot(gw)
        assert gw.proc is not None
        busiest = others.busiest({os.getpid(), gw.proc.pid, *gw.children}, elapsed)
        end, sessions_end, settle_s = await settle(gw, baseline)
        stats = plan.stats
        result["samples"] = samples
        result["elapsed_s"] = round(elapsed, 2)
        result["totals"] = {k: v for k, v in asdict(stats).items() if k not in ("window", "problems")} | {
            "cps": stats.calls / elapsed,
            "tree_cores": (last.tree_cpu - first.tree_cpu) / elapsed,
            "bench_cores": (last.own_cpu - first.own_cpu) / elapsed,
            "other_cores": max(
                0.0, (last.busy - first.busy) - (last.tree_cpu - first.tree_cpu) - (last.own_cpu - first.own_cpu)
            )
            / elapsed,
            "tree_cpu_ms_per_call": (last.tree_cpu - first.tree_cpu) * 1000 / max(stats.calls, 1),
        }
        result["problems"] = stats.problems
        result["busiest_others"] = busiest
        result["fds"] = {
            "gw_start": baseline.gw_fds,
            "gw_end": end.gw_fds,
            "gw_drift": end.gw_fds - baseline.gw_fds,
            "gw_peak": max((s["fds_gw"] for s in samples), default=end.gw_fds),
            "children_start": baseline.child_fds,
            "children_end": end.child_fds,
            "children_drift": end.child_fds - baseline.child_fds,
            "sessions_end": sessions_end,
            "settle_s": settle_s,
        }
        result["threads"] = {"start": baseline.gw_threads, "end": end.gw_threads}
        result["children"] = {"start": len(baseline.child_pids), "end": len(end.child_pids)}
        result["rss"] = rss_drift(samples, warmup, elapsed)
        result["rss_after_close_mib"] = end.gw_rss / MIB
        result["stop"] = stop_and_look_for_orphans(gw)
    finally:
        gw.stop()
    return result


# --- reporting ---------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def print_sample(row: dict[str, Any]) -> None:
    print(
        f"  t={row['t']:>7.1f}s {row['cps']:7.0f} calls/s p99 {fmt(row['p99'])} ms err {row['errors']} "
        f"wrong {row['wrong']} rss {row['rss_gw_mib']:.1f} MiB fds {row['fds_gw']}+{row['fds_children']} "
        f"threads {row['threads']} sessions {row['sessions']} other procs {row['other_cores']:.2f} cores",
        flush=True,
    )


def report_lines(result: dict[str, Any]) -> list[str]:
    """The samples table, the totals, the busiest other processes and the verdict (Markdown)."""
    totals = result["totals"]
    calibrated = result["rate_calibrated"]
    how = (
        f"{SOAK_RATE_FRACTION:.0%} of {calibrated:.0f} calls/s measured unpaced first"
        if calibrated
        else "given with --soak-rate"
    )
    lines = [
        f"### Soak: {result['seconds']:g} s, one gateway, {result['sessions_per_transport']} sessions x "
        f"{','.join(result['transports'])}, target {result['rate_target']:.0f} calls/s ({how})",
        "",
        f"Each session replaced after {result['churn_calls']} calls (0: never); warm-up {result['warmup_s']:g} s; "
        f"baseline (after one primed session per transport closed): RSS "
        f"{result['baseline']['gw_rss'] / MIB:.1f} MiB, {result['fds']['gw_start']} fds, "
        f"{result['baseline']['gw_threads']} threads.",
        "",
        "| t s | calls/s | calls | errors | wrong | p50 ms | p99 ms | gw RSS MiB | child RSS MiB | gw fds "
        "| child fds | threads | children | sessions | tree CPU (cores) | bench (cores) | other procs (cores) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in result["samples"]:
        lines.append(
            f"| {row['t']:.1f} | {row['cps']:.0f} | {row['calls']} | {row['errors']} | {row['wrong']} "
            f"| {fmt(row['p50'])} | {fmt(row['p99'])} | {row['rss_gw_mib']:.1f} | {row['rss_child_mib']:.1f} "
            f"| {row['fds_gw']} | {row['fds_children']} | {row['threads']} | {row['children']} | {row['sessions']} "
            f"| {row['tree_cores']:.2f} | {row['bench_cores']:.2f} | {row['other_cores']:.2f} |"
        )
    lines += [
        "",
        f"- {totals['calls']} calls in {result['elapsed_s']} s ({totals['cps']:.0f} calls/s), "
        f"{totals['sessions_opened']} sessions opened, {totals['late']} pacing resets; gateway tree CPU "
        f"{totals['tree_cpu_ms_per_call']:.3f} ms/call ({totals['tree_cores']:.2f} cores), bench "
        f"{totals['bench_cores']:.2f} cores, other procs {totals['other_cores']:.2f} cores",
        f"- threads {result['threads']['start']} -> {result['threads']['end']}, children "
        f"{result['children']['start']} -> {result['children']['end']}, gateway RSS after the clients closed "
        f"{result['rss_after_close_mib']:.1f} MiB",
    ]
    if result["busiest_others"]:
        busiest = "; ".join(f"{o['cores']:.2f} cores `{o['cmd']}`" for o in result["busiest_others"])
        lines.append(f"- busiest other processes during the soak (with their reaped children): {busiest}")
    if result["problems"]:
        lines += ["", "First problems seen:", ""] + [f"- {p}" for p in result["problems"]]
    criteria = judge(result)
    lines += ["", "### Soak verdict", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'} {name}: {figures}" for name, ok, figures in criteria]
    lines += ["", f"SOAK VERDICT: {'PASS' if all(ok for _, ok, _ in criteria) else 'FAIL'}"]
    return lines


async def main(args: argparse.Namespace, workdir: Path) -> int:
    """Run the soak, print and write the report (results.json, results.md); 1 when the verdict fails."""
    result = await run_soak(args, workdir)
    lines = report_lines(result)
    print()
    print("\n".join(lines))
    (workdir / "results.json").write_bytes(
        orjson.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "soak": result, "verdict": lines[-1]},
            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
        )
    )
    (workdir / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0 if lines[-1].endswith("PASS") else 1


def duration_of(args: argparse.Namespace) -> float | None:
    """Soak length in seconds from --soak MINUTES or --soak-seconds S (None: not a soak run), capped."""
    if args.soak is None and args.soak_seconds is None:
        return None
    seconds = args.soak_seconds if args.soak_seconds is not None else args.soak * 60
    return float(min(max(seconds, 1.0), SOAK_MAX_S))
