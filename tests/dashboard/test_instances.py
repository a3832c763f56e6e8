"""Every instance in /health (admins only) and /api/overview (Issue 12 item 6), over real HTTP: one instance from
local state, a cluster of two from the registry in a real redis-server."""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_bastion.cluster.registry import InstanceInfo
from mcp_bastion.dashboard.instances import CLUSTER, CLUSTER_DOWN, LOCAL, Instances
from mcp_bastion.errors import DependencyUnavailable
from tests.harness import RunningGateway, spec, wait_until
from tests.redis_server import redis_server
from tests.security.support import add_token, admin_token, bearer, open_legacy_session, secure_gateway

SECRET = "k" * 32
VIEW_KEYS = {
    "id",
    "advertise_url",
    "started_at",
    "uptime_s",
    "sessions",
    "children",
    "last_heartbeat",
    "heartbeat_age_s",
    "draining",
    "this",
}


def get(gw: RunningGateway, path: str, token: str) -> dict[str, Any]:
    answer = httpx.get(f"{gw.url}{path}", headers=bearer(token), timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    admin = admin_token()
    tmp = tmp_path_factory.mktemp("single")
    with secure_gateway([spec("toolbox")], tmp, auth_token=admin, instance_id="solo-1") as gw:
        yield gw, admin


def test_one_instance_is_shown_from_local_state_to_an_admin(single: tuple[RunningGateway, str]) -> None:
    gw, admin = single
    before = get(gw, "/health", admin)
    assert before["instance"] == "solo-1"
    assert before["source"] == LOCAL
    [me] = before["instances"]
    assert set(me) == VIEW_KEYS
    assert (me["id"], me["advertise_url"], me["this"], me["draining"]) == ("solo-1", gw.url, True, False)
    assert me["children"] == 1  # the shared toolbox child
    assert me["heartbeat_age_s"] < 1.0
    assert 0 <= me["uptime_s"] < 600
    with httpx.Client(timeout=10) as client:
        open_legacy_session(client, gw.mcp("toolbox"), admin)
    after = get(gw, "/health", admin)["instances"][0]
    assert after["sessions"] == me["sessions"] + 1
    assert after["started_at"] == me["started_at"]


def test_instances_are_for_admins_only(single: tuple[RunningGateway, str]) -> None:
    gw, _ = single
    user = add_token(gw, "reader", "server:toolbox")
    for path in ("/health", "/api/overview"):
        body = get(gw, path, user)
        assert "instances" not in body, path
        assert "instance" not in body, path
        assert "solo-1" not in str(body), path


def test_the_dashboard_overview_lists_the_instances(single: tuple[RunningGateway, str]) -> None:
    gw, admin = single
    body = get(gw, "/api/overview", admin)
    assert body["source"] == LOCAL
    assert [i["id"] for i in body["instances"]] == ["solo-1"]


@contextlib.contextmanager
def cluster_of(tmp_path: Path, *names: str) -> Iterator[tuple[list[RunningGateway], str]]:
    """A real redis-server and one in-thread gateway per name (its INSTANCE_ID) in cluster mode, one admin token."""
    admin = admin_token()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server(tmp_path))
        gateways = [
            stack.enter_context(
                secure_gateway(
                    [spec("toolbox")],
                    tmp_path / name,
                    auth_token=admin,
                    instance_id=name,
                    redis_url=url,
                    cluster_secret=SECRET,
                )
            )
            for name in names
        ]
        yield gateways, admin


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[RunningGateway], str]]:
    with cluster_of(tmp_path, "gw-a", "gw-b") as found:
        yield found


@pytest.mark.cluster
def test_every_instance_of_a_cluster_is_shown_on_each_of_them(cluster: tuple[list[RunningGateway], str]) -> None:
    gateways, admin = cluster

    def both_seen() -> bool:  # the first records may predate the children: wait for a heartbeat after them
        views = [get(gw, "/health", admin)["instances"] for gw in gateways]
        return all(len(rows) == 2 and all(row["children"] == 1 for row in rows) for rows in views)

    wait_until(both_seen, timeout=10, interval=0.1)
    for gw in gateways:
        body = get(gw, "/health", admin)
        assert body["source"] == CLUSTER
        rows = {row["id"]: row for row in body["instances"]}
        assert set(rows) == {"gw-a", "gw-b"}
        assert rows[body["instance"]]["this"] is True
        assert [row["advertise_url"] for row in body["instances"]] == [g.url for g in gateways]
        assert all(row["heartbeat_age_s"] < 3 for row in rows.values()), rows
    with httpx.Client(timeout=10) as client:
        open_legacy_session(client, gateways[1].mcp("toolbox"), admin)
    wait_until(lambda: get(gateways[0], "/health", admin)["instances"][1]["sessions"] == 1, timeout=10, interval=0.1)


class Down:
    """A cluster whose Redis is unreachable."""

    async def instances(self) -> list[InstanceInfo]:
        raise DependencyUnavailable("Redis is down", dependency="cluster", retry_after_s=1)


def test_without_the_registry_this_instance_is_shown_alone_and_says_why() -> None:
    clock = iter([100.0, 160.0, 160.0])
    instances = Instances(
        instance_id="me",
        advertise_url="http://10.0.0.5:3001",
        load=lambda: (4, 2),
        draining=lambda: True,
        cluster=Down(),
        wall=lambda: next(clock),
    )
    document = anyio.run(instances.document)
    assert document == {
        "instance": "me",
        "source": CLUSTER_DOWN,
        "instances": [
            {
                "id": "me",
                "advertise_url": "http://10.0.0.5:3001",
                "started_at": 100.0,
                "uptime_s": 60.0,
                "sessions": 4,
                "children": 2,
                "last_heartbeat": 160.0,
                "heartbeat_age_s": 0.0,
                "draining": True,
                "this": True,
            }
        ],
    }
