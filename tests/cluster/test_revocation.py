"""Issue 12 item 4 with real processes: a revocation on instance 1 (dashboard API, CLI, admin API) closes what it
ended on instance 3 within a second, over Redis pub/sub (the rig's periodic sweep is set to a minute)."""

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from mcp_bastion.security import token_hash
from tests.cluster.rig import CLI, Rig, clean_env, cluster
from tests.cluster.test_instances_come_and_go import CALL_TIMEOUT_S, REVOKE_BOUND_S, open_session

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.mark.parametrize("how", ["api", "cli", "mcp-session"])
def test_a_revocation_on_instance_1_closes_the_streams_on_instance_3_within_a_second(rig: Rig, how: str) -> None:
    """A named token holds an HTTP+SSE stream on instance 3 and a Streamable GET stream forwarded by instance 2 to
    instance 3. Revoked on instance 1 (DELETE /api/tokens/NAME, or `mcp-bastion token revoke` with instance 1's .env):
    both streams end within 1 s; the one MCP session revoked on instance 1 (DELETE /admin/sessions/ID): its stream
    ends within 1 s, the other stays. Instance 3 audits what it closed."""
    first, second, third = rig.instances
    with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
        created = client.post(first.url + "/api/tokens", json={"name": f"agent-{how}", "scopes": ["server:toolbox"]},
                              headers=rig.auth)  # fmt: skip
        assert created.status_code == 201, created.text
        auth = {"Authorization": f"Bearer {created.json()['token']}"}
        session = open_session(client, third.url + "/mcp/toolbox", auth)
    ended: dict[str, float] = {}
    opened = threading.Barrier(3, timeout=10)

    def hold(name: str, url: str, headers: dict[str, str]) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(CALL_TIMEOUT_S, read=REVOKE_BOUND_S * 4)) as client,
            client.stream("GET", url, headers=headers) as stream,
        ):
            assert stream.status_code == 200
            opened.wait()
            with contextlib.suppress(httpx.ReadTimeout):  # a stream that is not revoked stays open
                for _ in stream.iter_bytes():
                    pass
                ended[name] = time.monotonic()

    sse = {**auth, "Accept": "text/event-stream"}
    streams = [
        threading.Thread(target=hold, args=("sse", third.url + "/mcp/toolbox/sse", sse)),
        threading.Thread(target=hold, args=("get", second.url + "/mcp/toolbox", {**sse, "Mcp-Session-Id": session})),
    ]
    for thread in streams:
        thread.start()
    opened.wait()
    began = _revoke(rig, how, session)
    for thread in streams:
        thread.join(10)
    expected = {"get"} if how == "mcp-session" else {"sse", "get"}
    assert set(ended) == expected
    assert max(ended.values()) - began < REVOKE_BOUND_S, {k: v - began for k, v in ended.items()}
    lines = [
        x for x in rig.audit(third) if x["event"] == "session.revoked" and x.get("principal") == f"token:agent-{how}"
    ]
    assert [x["kind"] for x in lines] == ["mcp"] * len(expected), lines  # one line per session it closed
    if how == "mcp-session":
        assert [x["session"] for x in lines] == [token_hash(session)[:16]], lines


def _revoke(rig: Rig, how: str, session: str) -> float:
    """Revoke on instance 1; returns when the revocation was done there."""
    first = rig.instances[0]
    if how == "cli":
        argv = [str(CLI), "token", "revoke", f"agent-{how}", "--env-file", str(first.dir / ".env")]
        done = subprocess.run(argv, cwd=first.dir, env=clean_env(), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return time.monotonic()
    if how == "api":
        answer = httpx.delete(first.url + f"/api/tokens/agent-{how}", headers=rig.auth, timeout=CALL_TIMEOUT_S)
        assert answer.status_code == 200, answer.text
        return time.monotonic()
    public_id = token_hash(session)[:16]
    answer = httpx.delete(first.url + f"/admin/sessions/{public_id}", headers=rig.auth, timeout=CALL_TIMEOUT_S)
    assert answer.status_code == 202, answer.text  # held by another instance: every instance was told
    return time.monotonic()
