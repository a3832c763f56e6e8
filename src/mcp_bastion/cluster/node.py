"""One instance's membership in a cluster: its registry record, its sealed ids and hops, its forwarder (one per app)."""

import asyncio
import contextlib
from collections.abc import Callable

from mcp_bastion.breaker import Breaker
from mcp_bastion.cluster.bus import ClusterBus
from mcp_bastion.cluster.forward import Forwarder
from mcp_bastion.cluster.hop import HopSigner
from mcp_bastion.cluster.peers import Peers
from mcp_bastion.cluster.registry import HEARTBEAT_S, InstanceInfo, Load, Registry
from mcp_bastion.cluster.revocations import Handler, RevocationChannel
from mcp_bastion.cluster.router import ClusterRouter
from mcp_bastion.cluster.session_ids import SessionIds
from mcp_bastion.cluster.settings import ClusterSettings
from mcp_bastion.middleware.hop import HopGate
from mcp_bastion.sealing import Sealer
from mcp_bastion.types import ASGIApp


class Cluster:
    """This instance in the cluster; `app.cluster` (None without REDIS_URL)."""

    def __init__(
        self,
        config: ClusterSettings,
        *,
        timeout_s: float,
        open_s: float,
        read_s: float,
        max_body: int,
        heartbeat_s: float = HEARTBEAT_S,
        load: Load = lambda: (0, 0),
    ) -> None:
        self.config = config
        self.id = config.instance_id
        self.sealer = Sealer.from_secret(config.secret.get_secret_value())
        self.session_ids = SessionIds(self.sealer, config.instance_id)
        self.hops = HopSigner(self.sealer, config.instance_id)
        self.bus = ClusterBus(config.redis_url.get_secret_value(), timeout_s=timeout_s, open_s=open_s)
        self.registry = Registry(
            self.bus,
            sealer=self.sealer,
            instance_id=config.instance_id,
            advertise_url=config.advertise_url,
            heartbeat_s=heartbeat_s,
            load=load,
        )
        self.forwarder = Forwarder(self.hops, read_s=read_s, max_body=max_body)
        self.gate = HopGate(Peers(self.registry).admits, self.hops.verify)  # the pipeline's check of hops
        self.revocations = RevocationChannel(self.bus, config.instance_id)
        self.router: ClusterRouter | None = None
        self._drain: asyncio.Task[None] | None = None

    def route(self, app: ASGIApp, closing: Callable[[], bool]) -> ClusterRouter:
        """Wrap the router: requests for sessions held elsewhere are forwarded there."""
        self.router = ClusterRouter(
            app, ids=self.session_ids, registry=self.registry, forwarder=self.forwarder, closing=closing
        )
        return self.router

    def drain(self) -> None:
        """SIGTERM: the record says draining at once (the port closes, calls finish); the lifespan's end removes it."""
        self.registry.draining = True
        with contextlib.suppress(RuntimeError):  # no loop running: the next heartbeat says it
            self._drain = asyncio.get_running_loop().create_task(self.registry.drain(), name="cluster-drain")

    @property
    def breaker(self) -> Breaker:
        """The cluster connection's breaker (its state goes in /health)."""
        return self.bus.breaker

    def counters(self) -> dict[str, int]:
        """Requests forwarded to owners and requests served for peers (/health: proof that forwarding happens)."""
        served = self.router.served_for_peers if self.router is not None else 0
        return {"forwarded": self.forwarder.forwarded, "served_for_peers": served}

    async def instances(self) -> list[InstanceInfo]:
        """Every live instance (this one included), by id.

        Raises:
            DependencyUnavailable: Redis failed or is down.
        """
        return await self.registry.instances()

    def start(self, on_revocation: Handler | None = None) -> None:
        """Join: heartbeat from now on, and hand every instance's revocations to `on_revocation`."""
        self.registry.start()
        if on_revocation is not None:
            self.revocations.start(on_revocation)

    async def close(self) -> None:
        """Leave the cluster and close the connections."""
        await self.revocations.close()
        await self.registry.close()
        await self.forwarder.close()
        await self.bus.close()
