"""Every instance of the gateway as an operator sees it (Issue 12 item 6): /health for admins, the dashboard, and
`mcp-bastion status` (which reads /health).

In cluster mode the list is the registry's (one record per live instance, refreshed by its heartbeat); with one
instance, or while Redis cannot be read, it is this instance alone, from local state, and says so.
"""

import time
from collections.abc import Callable
from typing import Any, Protocol

from mcp_bastion.cluster.registry import InstanceInfo
from mcp_bastion.config import Settings
from mcp_bastion.errors import DependencyUnavailable

Load = Callable[[], tuple[int, int]]  # (sessions, children) of this instance
LOCAL, CLUSTER, CLUSTER_DOWN = "local", "cluster", "cluster unavailable"  # where a list of instances came from


class Members(Protocol):
    """What a cluster offers here: every live instance (app.cluster)."""

    async def instances(self) -> list[InstanceInfo]: ...


def own_url(settings: Settings) -> str:
    """This instance's base URL outside cluster mode: CLUSTER_ADVERTISE_URL if set, else its bind address."""
    scheme = "https" if settings.tls else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return settings.cluster_advertise_url or f"{scheme}://{host}:{settings.port}"


class Instances:
    """The instances to show: the cluster's when there is one, else this instance from local state."""

    def __init__(
        self,
        *,
        instance_id: str,
        advertise_url: str,
        load: Load,
        draining: Callable[[], bool],
        cluster: Members | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.instance_id = instance_id
        self.advertise_url = advertise_url
        self.load = load
        self.draining = draining
        self.cluster = cluster
        self.wall = wall
        self.started_at = wall()

    def local(self) -> InstanceInfo:
        """This instance as of now (its heartbeat is now: it is the one answering)."""
        sessions, children = self.load()
        now = self.wall()
        return InstanceInfo(
            self.instance_id, self.advertise_url, self.started_at, sessions, children, now, self.draining()
        )

    async def read(self) -> tuple[list[InstanceInfo], str]:
        """Every instance, and where the list came from (LOCAL, CLUSTER, or CLUSTER_DOWN with this one alone)."""
        if self.cluster is None:
            return [self.local()], LOCAL
        try:
            return await self.cluster.instances(), CLUSTER
        except DependencyUnavailable:
            return [self.local()], CLUSTER_DOWN  # /health still answers; its dependencies say what is down

    async def document(self) -> dict[str, Any]:
        """`{"instance", "source", "instances": [view, ...]}` for /health and the dashboard (admins only)."""
        found, source = await self.read()
        now = self.wall()
        return {
            "instance": self.instance_id,
            "source": source,
            "instances": [view(info, now, self.instance_id) for info in found],
        }


def view(info: InstanceInfo, now: float, me: str) -> dict[str, Any]:
    """One instance as JSON: id, advertise URL, uptime, sessions, children, last heartbeat (and its age)."""
    return {
        "id": info.id,
        "advertise_url": info.advertise_url,
        "started_at": info.started_at,
        "uptime_s": round(max(now - info.started_at, 0.0), 1),
        "sessions": info.sessions,
        "children": info.children,
        "last_heartbeat": info.last_heartbeat,
        "heartbeat_age_s": round(max(now - info.last_heartbeat, 0.0), 1),
        "draining": info.draining,
        "this": info.id == me,
    }
