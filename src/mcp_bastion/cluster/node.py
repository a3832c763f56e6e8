"""One instance's membership in a cluster: its registry record, its sealer, and what it counts (one per app)."""

from mcp_bastion.breaker import Breaker
from mcp_bastion.cluster.bus import ClusterBus
from mcp_bastion.cluster.registry import HEARTBEAT_S, InstanceInfo, Load, Registry
from mcp_bastion.cluster.settings import ClusterSettings
from mcp_bastion.sealing import Sealer


class Cluster:
    """This instance in the cluster; `app.cluster` (None without REDIS_URL)."""

    def __init__(
        self,
        config: ClusterSettings,
        *,
        timeout_s: float,
        open_s: float,
        heartbeat_s: float = HEARTBEAT_S,
        load: Load = lambda: (0, 0),
    ) -> None:
        self.config = config
        self.id = config.instance_id
        self.sealer = Sealer.from_secret(config.secret)
        self.bus = ClusterBus(config.redis_url, timeout_s=timeout_s, open_s=open_s)
        self.registry = Registry(
            self.bus,
            instance_id=config.instance_id,
            advertise_url=config.advertise_url,
            heartbeat_s=heartbeat_s,
            load=load,
        )
        self.forwarded = 0  # requests this instance sent on to an owner
        self.served_for_peers = 0  # requests an owner served that another instance forwarded

    @property
    def breaker(self) -> Breaker:
        """The cluster connection's breaker (its state goes in /health)."""
        return self.bus.breaker

    async def instances(self) -> list[InstanceInfo]:
        """Every live instance (this one included), by id.

        Raises:
            DependencyUnavailable: Redis failed or is down.
        """
        return await self.registry.instances()

    def start(self) -> None:
        """Join: heartbeat from now on."""
        self.registry.start()

    async def close(self) -> None:
        """Leave the cluster and close the connection."""
        await self.registry.close()
        await self.bus.close()
