"""Smoke test of the benchmark's soak mode (issue 9, Proof: "bench/: a `--soak` mode reporting RSS and fd drift").

bench/run.py runs as a user runs it: a real `mcp-bastion serve` with the whole security pipeline, driven by the
bench's own clients over every transport for a few seconds.
"""

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
SOAK_S = 6  # long enough for several samples and a session replaced on each worker
SAMPLE_S = 1.0  # several samples in a short run
RATE = 300  # calls/s in all: light, so the test proves the mode and not the machine's capacity
RUN_CAP_S = 120  # start, soak, settle and stop; the run takes about SOAK_S + 5 s on an idle machine


def test_a_short_soak_reports_samples_zero_errors_fd_return_no_orphans_and_a_verdict(tmp_path: Path) -> None:
    """Issue 9 Proof (bench --soak): a 6-second soak at 300 calls/s over streamable, sse and 2026-07-28 writes
    results.json and results.md with a sample per second, every checked call correct, the gateway's fds back to
    the baseline once the clients closed, no child alive after the gateway stopped, and a SOAK VERDICT line."""
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--soak-seconds", str(SOAK_S)]
    command += ["--soak-rate", str(RATE), "--soak-sample", str(SAMPLE_S), "--concurrency", "2", "--soak-churn", "200"]
    command += ["--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_CAP_S, cwd=ROOT, check=False)
    assert (tmp_path / "results.json").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = orjson.loads((tmp_path / "results.json").read_bytes())["soak"]
    samples = report["samples"]
    assert len(samples) >= SOAK_S / SAMPLE_S - 1, samples
    assert samples[-1]["calls"] == report["totals"]["calls"]
    assert report["totals"]["calls"] >= RATE * SOAK_S / 2, report["totals"]
    assert report["totals"]["errors"] == 0, report["problems"]
    assert report["totals"]["wrong"] == 0, report["problems"]
    assert report["totals"]["sessions_opened"] > 3 * 2, "sessions were replaced during the soak"
    assert {s["children"] for s in samples} == {1}, "the shared demo child ran throughout"
    assert report["fds"]["gw_drift"] <= 0, report["fds"]
    assert report["fds"]["sessions_end"] == 0, report["fds"]
    assert report["stop"]["orphans"] == [], report["stop"]
    assert len(report["stop"]["children_seen"]) == 1, report["stop"]
    markdown = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "| t s | calls/s |" in markdown
    verdict = [line for line in markdown.splitlines() if line.startswith("SOAK VERDICT: ")]
    assert len(verdict) == 1, markdown[-2000:]
    assert verdict[0] in ("SOAK VERDICT: PASS", "SOAK VERDICT: FAIL")
    assert verdict[0] in done.stdout
    # Every criterion but RSS drift (a 6 s run is mostly warm-up) is asserted above; the exit code follows the verdict.
    assert done.returncode == (0 if verdict[0].endswith("PASS") else 1), done.stderr[-3000:]
