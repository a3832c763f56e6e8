"""Who is in the cluster: each instance writes its record to Redis every heartbeat, with a TTL, and reads the others'.

An instance that stops writing (killed, frozen, cut off) is forgotten TTL_HEARTBEATS heartbeats after its last
write, so a request for one of its sessions is answered 404 within that bound instead of waiting on a dead peer.
Records are sealed with the cluster key and their advertise URL checked when read: whoever can write to Redis but
holds no CLUSTER_SECRET cannot add an instance, nor point forwarded requests (and their hops) somewhere else.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from mcp_bastion.cluster.bus import ClusterBus
from mcp_bastion.cluster.settings import advertise_problem
from mcp_bastion.errors import DependencyUnavailable
from mcp_bastion.sealing import Sealer, SealError

log = logging.getLogger("mcp_bastion.cluster")

HEARTBEAT_S = 1.0  # default heartbeat: a dead owner's sessions answer 404 within 2 s
TTL_HEARTBEATS = 2  # a record outlives one missed heartbeat (a busy loop), not two
# After a Redis outage a peer's first good beat can trail ours by more than a TTL (its breaker's probe, a busy
# loop): a missing record proves a death only once Redis has answered this many TTLs since (measured under load).
TRUST_AFTER_TTLS = 2
RECORD_PURPOSE = "mcp-instance"
# A sealed record's own validity: Redis's TTL decides freshness; this only has to outlast clock skew between instances
# while keeping a record replayed into Redis useless soon.
RECORD_SEAL_TTL_S = 300.0


class InstanceInfo(NamedTuple):
    """One instance as the cluster sees it (times are seconds since the epoch)."""

    id: str
    advertise_url: str
    started_at: float
    sessions: int
    children: int
    last_heartbeat: float
    draining: bool


Load = Callable[[], tuple[int, int]]  # (sessions, children) of this instance, for its record


class Registry:
    """This instance's record in Redis, kept alive by a heartbeat, and a view of every live instance."""

    def __init__(
        self,
        bus: ClusterBus,
        *,
        sealer: Sealer,
        instance_id: str,
        advertise_url: str,
        heartbeat_s: float = HEARTBEAT_S,
        load: Load = lambda: (0, 0),
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.sealer = sealer
        self.id = instance_id
        self.advertise_url = advertise_url.rstrip("/")
        self.heartbeat_s = heartbeat_s
        self.load = load
        self.wall = wall
        self.started_at = wall()
        self.draining = False
        self.view: dict[str, InstanceInfo] = {}  # the last fresh read (one per heartbeat)
        self._up_since: float | None = None  # the first good heartbeat since start or the last Redis failure
        self._task: asyncio.Task[None] | None = None

    @property
    def ttl_ms(self) -> int:
        """How long Redis keeps a record after its last write."""
        return int(self.heartbeat_s * TTL_HEARTBEATS * 1000)

    def me(self) -> InstanceInfo:
        """This instance's record as of now."""
        sessions, children = self.load()
        now = self.wall()
        return InstanceInfo(self.id, self.advertise_url, self.started_at, sessions, children, now, self.draining)

    def record(self, info: InstanceInfo) -> str:
        """An instance's record as stored in Redis: sealed with the cluster key."""
        return self.sealer.seal(RECORD_PURPOSE, info._asdict(), now=self.wall(), ttl_s=RECORD_SEAL_TTL_S)

    def _parse(self, raw: str) -> InstanceInfo | None:
        """A record this cluster sealed, with a usable advertise URL; None for anything else (logged, never used)."""
        try:
            data = self.sealer.open(RECORD_PURPOSE, raw, now=self.wall())
            info = InstanceInfo(
                str(data["id"]),
                str(data["advertise_url"]),
                float(data["started_at"]),
                int(data["sessions"]),
                int(data["children"]),
                float(data["last_heartbeat"]),
                bool(data["draining"]),
            )
        except SealError as exc:
            log.warning("cluster registry: ignored a record that does not verify (%s)", exc.message)
            return None
        except (ValueError, KeyError, TypeError):
            return None  # a record this version cannot read is no peer of ours
        if advertise_problem(info.advertise_url) is not None:
            log.warning("cluster registry: ignored instance %r, its advertise URL is unusable", info.id)
            return None
        return info

    async def beat(self) -> None:
        """Write this instance's record and refresh the view of the others.

        Raises:
            DependencyUnavailable: Redis failed or is down.
        """
        try:
            await self.bus.put_instance(self.id, self.record(self.me()), self.ttl_ms)
            await self.instances()
        except DependencyUnavailable:
            self._up_since = None
            raise
        if self._up_since is None:
            self._up_since = self.wall()

    @property
    def trusted(self) -> bool:
        """Whether a missing record means a dead instance: Redis has answered for TRUST_AFTER_TTLS TTLs since it was
        last seen down (a restarted Redis is empty until every live instance has beaten once)."""
        return self._up_since is not None and self.wall() - self._up_since >= self.trust_after_s

    @property
    def trust_after_s(self) -> float:
        """How long Redis must have answered since an outage before a missing record means a dead instance."""
        return TRUST_AFTER_TTLS * self.ttl_ms / 1000

    async def instances(self) -> list[InstanceInfo]:
        """Every live instance (this one included), by id.

        Raises:
            DependencyUnavailable: Redis failed or is down.
        """
        found = [info for info in map(self._parse, await self.bus.all_instances()) if info is not None]
        fresh = {info.id: info for info in found}
        # Right after an outage Redis may have lost records of live peers: the view keeps them until it is trusted.
        self.view = fresh if self.trusted else {**self.view, **fresh}
        return sorted(found, key=lambda info: info.id)

    async def url_of(self, instance_id: str) -> str | None:
        """Where to reach a live instance, or None when it is gone (its record expired or it left).

        The view answers for a known peer; an unknown one is read fresh, so a new instance takes traffic at once.

        Raises:
            DependencyUnavailable: Redis failed or is down (and the view does not know the instance).
        """
        known = self.view.get(instance_id)
        if known is not None and self.wall() - known.last_heartbeat < self.heartbeat_s * TTL_HEARTBEATS:
            return known.advertise_url
        return await self.still_there(instance_id)

    async def still_there(self, instance_id: str) -> str | None:
        """A fresh read of one instance's record: its URL, or None when it is gone.

        Raises:
            DependencyUnavailable: Redis failed or is down, or came back too recently to tell about an unknown peer.
        """
        raw = await self.bus.get_instance(instance_id)
        info = self._parse(raw) if raw is not None else None
        if info is not None and info.id != instance_id:
            info = None  # another instance's record copied under this id
        if info is None and not self.trusted:  # Redis just came back: the view still knows better
            known = self.view.get(instance_id)
            if known is None:
                raise DependencyUnavailable("the cluster registry is rebuilding", dependency="cluster", retry_after_s=1)
            return known.advertise_url
        if info is None:
            self.view.pop(instance_id, None)
            return None
        self.view[instance_id] = info
        return info.advertise_url

    async def wait_gone(self, instance_id: str) -> None:
        """Return once `instance_id`'s record is gone (checked every heartbeat; a Redis outage decides nothing)."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            with contextlib.suppress(DependencyUnavailable):
                if await self.still_there(instance_id) is None:
                    return

    def start(self) -> None:
        """Heartbeat until closed (the first beat runs at once)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except DependencyUnavailable:
                pass  # the breaker logged and audited the outage; the next beat retries
            except Exception:  # the top of a task: log it and keep beating
                log.exception("cluster heartbeat failed")
            await asyncio.sleep(self.heartbeat_s)

    async def drain(self) -> None:
        """Mark this instance draining (it takes no new sessions) and say so at once."""
        self.draining = True
        with contextlib.suppress(DependencyUnavailable):
            await self.beat()

    async def close(self) -> None:
        """Stop the heartbeat and leave the cluster (best effort: a record left behind expires by itself)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(DependencyUnavailable):
            await self.bus.delete_instance(self.id)
