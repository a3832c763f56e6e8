"""Issue 12 item 3: SIGTERM drains an instance: its record says draining at once, a call in flight on it (forwarded
by another instance) finishes, new sessions are served by the others, and its record is gone when it has left."""

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from mcp_bastion.cluster.registry import RECORD_PURPOSE
from mcp_bastion.sealing import Sealer
from tests.cluster.rig import SECRET, Rig, cluster
from tests.cluster.test_instances_come_and_go import INIT, JSON_SSE, open_session, owner_of, rpc
from tests.harness import wait_until
from tests.redis_server import client

pytestmark = pytest.mark.cluster

EXIT_BOUND_S = 15.0  # the call's time plus the shutdown grace, far above what it takes
CALL = {"name": "slow", "arguments": {"steps": 4, "seconds": 0.25}}  # a second on the child


@pytest.fixture
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def record(rig: Rig, instance_id: str) -> dict[str, object] | None:
    """The instance's registry record as stored in Redis (sealed with the cluster key)."""
    with client(rig.redis.url) as raw:
        value = raw.get(f"bastion:instance:{instance_id}")
    return Sealer.from_secret(SECRET).open(RECORD_PURPOSE, value, now=time.time()) if value else None


def test_sigterm_marks_the_instance_draining_lets_its_forwarded_call_finish_and_leaves_the_cluster(rig: Rig) -> None:
    first, leaving, _ = rig.instances
    with httpx.Client(timeout=20) as http:
        session = open_session(http, leaving.url + "/mcp/toolbox", rig.auth)
    answer: list[httpx.Response] = []
    headers = {**rig.auth, "Accept": JSON_SSE, "Mcp-Session-Id": session}

    def call() -> None:
        with httpx.Client(timeout=20) as http:  # through instance 1, forwarded to the owner
            answer.append(http.post(first.url + "/mcp/toolbox", json=rpc(7, "tools/call", CALL), headers=headers))

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: rig.health(leaving)["servers"]["toolbox"]["pending"] == 1, 10)
    assert leaving.proc is not None
    leaving.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: (record(rig, leaving.id) or {}).get("draining") is True, 5)
    # New sessions go to the others meanwhile; one that reached the leaving instance on a connection nginx kept
    # open is refused 503 + Retry-After (it starts no work) and the client tries again.
    with httpx.Client(timeout=20) as http:
        for _ in range(3):
            opened = http.post(rig.lb + "/mcp/toolbox", json=INIT, headers={**rig.auth, "Accept": JSON_SSE})
            if opened.status_code != 503:
                break
            assert opened.headers["retry-after"]
        assert opened.status_code == 200, opened.text
        assert owner_of(opened.headers["mcp-session-id"]) != leaving.id
    caller.join(EXIT_BOUND_S)
    assert answer, "the call in flight got no answer"
    assert answer[0].status_code == 200, answer[0].text
    assert answer[0].json()["result"]["content"][0]["text"] == "slept 4"
    leaving.proc.wait(EXIT_BOUND_S)
    assert record(rig, leaving.id) is None  # it left, not expired: gone as soon as it exited
