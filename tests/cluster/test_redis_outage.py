"""Issue 12 item 5 with real processes: Redis stopped for 10 s under load through nginx in front of 3 instances.

Every authenticated request gets its answer or a 503 with Retry-After (never a 500, never a hang), an
unauthenticated one never succeeds, /livez stays up, /health names the dependency; Redis back, every session (still
held by its owner) answers again within 5 s, without a restart.
"""

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cluster.rig import Rig, cluster
from tests.cluster.test_instances_come_and_go import echo, open_session

pytestmark = pytest.mark.cluster

SESSIONS = 4
OUTAGE_S = 10.0  # the outage
RECOVERY_BOUND_S = 5.0  # the bound, from Redis answering again to every session answering
PAUSE_S = 0.05  # between one client's calls: load, not a CPU benchmark on two shared cores
CALL_TIMEOUT_S = 5.0  # far above the breaker's bound on a dead Redis (REDIS_TIMEOUT_S per call)
SETTLE_S = 1.0  # after the recovery, the answers that must all be 200 (none flapping back to 503)
BREAKER_OPEN_S = "1"  # REDIS_BREAKER_OPEN_S: the probe interval after an outage (recovery within it plus a call)


@pytest.fixture
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with cluster(tmp_path_factory.mktemp("cluster"), extra={"REDIS_BREAKER_OPEN_S": BREAKER_OPEN_S}) as running:
        yield running


def test_redis_down_for_ten_seconds_gives_only_503s_and_service_resumes_within_five_seconds(rig: Rig) -> None:
    url = rig.lb + "/mcp/toolbox"
    with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
        sessions = [open_session(client, url, rig.auth) for _ in range(SESSIONS)]
    answers: list[tuple[float, str, int, Any]] = []
    stop = threading.Event()

    def load(session: str) -> None:
        with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
            n = 0
            while not stop.is_set():
                n += 1
                answer = echo(client, url, rig.auth, session, n)
                answers.append((time.monotonic(), session, answer.status_code, answer))
                time.sleep(PAUSE_S)

    def anonymous() -> None:
        with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
            while not stop.is_set():
                answer = client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                     headers={"Accept": "application/json, text/event-stream"})  # fmt: skip
                answers.append((time.monotonic(), "anonymous", answer.status_code, answer))
                time.sleep(PAUSE_S)

    threads = [threading.Thread(target=load, args=(s,)) for s in sessions] + [threading.Thread(target=anonymous)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        rig.redis.kill()
        down_at = time.monotonic()
        livez = [httpx.get(i.url + "/livez", timeout=CALL_TIMEOUT_S).status_code for i in rig.instances]
        assert livez == [200, 200, 200]
        time.sleep(OUTAGE_S / 2)
        health = httpx.get(rig.instances[0].url + "/health", headers=rig.auth, timeout=CALL_TIMEOUT_S)
        assert health.status_code == 503
        assert health.json()["dependencies"] == {"store": "down"}
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        rig.redis.start()
        up_at = time.monotonic()
        deadline = up_at + RECOVERY_BOUND_S + 5
        while time.monotonic() < deadline and not _recovered(answers, sessions, up_at):
            time.sleep(0.1)
        if (recovered_at := _recovered(answers, sessions, up_at)) is not None:  # keep the load on past the recovery
            settled = recovered_at + SETTLE_S
            deadline = time.monotonic() + SETTLE_S + CALL_TIMEOUT_S
            while time.monotonic() < deadline and not _all_answered_after(answers, sessions, settled):
                time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    outage = [a for a in answers if down_at + 0.5 < a[0] < up_at]
    assert outage, "no request during the outage"
    statuses = {a[2] for a in answers}
    assert statuses <= {200, 401, 503}, sorted(statuses)
    assert {a[2] for a in answers if a[1] == "anonymous"} <= {401, 503}  # never an unauthenticated success
    assert {a[2] for a in outage if a[1] != "anonymous"} == {503}
    assert all(a[3].headers.get("retry-after") for a in answers if a[2] == 503)
    recovered = _recovered(answers, sessions, up_at)
    assert recovered is not None, "a session did not answer again"
    assert recovered - up_at <= RECOVERY_BOUND_S, recovered - up_at
    late = [a for a in answers if a[1] != "anonymous" and a[0] > recovered + SETTLE_S]
    assert {a[1] for a in late} == set(sessions), "the load stopped before every session answered after recovery"
    assert {a[2] for a in late} == {200}


def _all_answered_after(answers: list[tuple[float, str, int, Any]], sessions: list[str], since: float) -> bool:
    """Whether every session has an answer (of any status) later than `since`."""
    return {a[1] for a in answers if a[0] > since} >= set(sessions)


def _recovered(answers: list[tuple[float, str, int, Any]], sessions: list[str], since: float) -> float | None:
    """When the last session got its first 200 after `since` (None while one has not)."""
    firsts = []
    for session in sessions:
        ok = [a[0] for a in answers if a[1] == session and a[2] == 200 and a[0] > since]
        if not ok:
            return None
        firsts.append(min(ok))
    return max(firsts)
