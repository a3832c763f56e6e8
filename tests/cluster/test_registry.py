"""The instance registry on a real redis-server: records with a heartbeat, a TTL, a fresh read for unknown peers."""

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_bastion.cluster.bus import ClusterBus
from mcp_bastion.cluster.peers import PEER_REFRESH_MIN_S, Peers
from mcp_bastion.cluster.registry import InstanceInfo, Registry
from mcp_bastion.cluster.settings import cluster_settings
from mcp_bastion.config import Settings
from mcp_bastion.errors import ConfigError, DependencyUnavailable
from mcp_bastion.sealing import Sealer
from mcp_bastion.testing import FakeClock
from tests.faults.redis_process import RedisProcess
from tests.redis_server import redis_server

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

HEARTBEAT_S = 0.2  # short, so expiry is quick to observe
SECRET = "s" * 32
PORTS = {"one": 1, "two": 2, "three": 3}  # each instance's advertised (never dialled) port


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


def _registry(url: str, instance_id: str, load: tuple[int, int] = (0, 0)) -> Registry:
    bus = ClusterBus(url)
    return Registry(
        bus,
        sealer=Sealer.from_secret(SECRET),
        instance_id=instance_id,
        advertise_url=f"http://127.0.0.1:{PORTS[instance_id]}/",
        heartbeat_s=HEARTBEAT_S,
        load=lambda: load,
    )


async def test_instances_see_each_other_and_a_dead_one_is_forgotten_within_two_heartbeats(redis_url: str) -> None:
    one, two = _registry(redis_url, "one", (3, 1)), _registry(redis_url, "two")
    try:
        one.start()
        two.start()
        for _ in range(100):
            if len(await one.instances()) == 2:
                break
            await asyncio.sleep(0.02)
        found = {info.id: info for info in await one.instances()}
        assert set(found) == {"one", "two"}
        mine = found["one"]
        assert isinstance(mine, InstanceInfo)
        assert (mine.advertise_url, mine.sessions, mine.children, mine.draining) == (
            "http://127.0.0.1:1",
            3,
            1,
            False,
        )
        assert await one.url_of("two") == "http://127.0.0.1:2"
        assert two._task is not None
        for _ in range(200):  # a missing record proves a death only once Redis has answered for trust_after_s
            if two.trusted:
                break
            await asyncio.sleep(0.02)
        assert two.trusted
        two._task.cancel()  # dies without leaving: only the TTL removes it
        loop = asyncio.get_running_loop()
        died = loop.time()
        while await two.still_there("two") is not None:
            assert loop.time() - died < 2 * HEARTBEAT_S + 0.2
            await asyncio.sleep(0.02)
        assert await one.url_of("two") is None
        await one.drain()
        assert [info.draining for info in await two.instances()] == [True]
    finally:
        await one.close()
        await one.bus.close()
        await two.close()
        await two.bus.close()
    probe = ClusterBus(redis_url)
    assert await probe.all_instances() == []  # both records gone: one left, two expired
    await probe.close()


def test_cluster_mode_needs_a_long_secret_and_off_loopback_an_advertised_url() -> None:
    assert cluster_settings(Settings(_env_file=None)) is None  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="CLUSTER_SECRET of at least 32"):
        cluster_settings(Settings(_env_file=None, redis_url="redis://x", cluster_secret="short"))  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="needs CLUSTER_ADVERTISE_URL"):
        cluster_settings(
            Settings(_env_file=None, redis_url="redis://x", cluster_secret=SECRET, host="0.0.0.0", auth_token="t" * 40)  # type: ignore[call-arg]
        )
    for url, problem in [
        ("ftp://10.0.0.5:3001", "must start with http"),
        ("http://user:pw@10.0.0.5:3001", "may not carry a user"),
        ("http://10.0.0.5:3001/mcp", "may not have a path"),
        ("http://10.0.0.5:3001?x=1", "may not have a path"),
        ("http://:3001", "needs a host"),
        ("http://10.0.0.5:port", "is not a URL"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            cluster_settings(Settings(_env_file=None, redis_url="redis://x", cluster_secret=SECRET,  # type: ignore[call-arg]
                                      cluster_advertise_url=url))  # fmt: skip
    found = cluster_settings(Settings(_env_file=None, redis_url="redis://x", cluster_secret=SECRET, port=4000))  # type: ignore[call-arg]
    assert found is not None
    assert found.advertise_url == "http://127.0.0.1:4000"


async def test_a_restarted_empty_redis_does_not_make_live_peers_look_dead_until_it_is_trusted(tmp_path: Path) -> None:
    """Redis restarted without persistence forgets every record: until this instance has beaten for TRUST_AFTER_TTLS
    TTLs since, a missing peer is taken from the view (the peer re-registers within a heartbeat), not declared gone."""
    redis = RedisProcess(tmp_path)
    redis.start()
    one = _registry(redis.url, "one")
    try:
        await one.bus.put_instance("two", one.record(one.me()._replace(id="two")), 60_000)
        await one.beat()
        assert "two" in one.view
        redis.kill()
        with pytest.raises(DependencyUnavailable):
            await one.beat()
        redis.start()
        one.bus.breaker.open_s = 0.0  # probe at once (the breaker's own timing has its tests)
        for _ in range(50):  # the breaker lets a probe through once its open time is over
            with contextlib.suppress(DependencyUnavailable):
                await one.beat()
                break
            await asyncio.sleep(0.02)
        assert not one.trusted
        assert await one.still_there("two") == "http://127.0.0.1:1"  # the view's URL: not declared dead
        with pytest.raises(DependencyUnavailable, match="rebuilding"):
            await one.still_there("three")  # unknown and unprovable: 503, never a 404
        await asyncio.sleep(one.trust_after_s)
        await one.beat()
        assert one.trusted
        assert await one.still_there("two") is None
    finally:
        await one.close()
        await one.bus.close()
        redis.stop()


async def test_a_record_not_sealed_with_the_cluster_key_or_with_an_unusable_url_is_no_instance(redis_url: str) -> None:
    """Whoever can write to Redis without CLUSTER_SECRET can neither add an instance nor re-aim one; nor can a
    record sealed with the key name an advertise URL with a user, a path or a query, or pose as another instance."""
    one = _registry(redis_url, "one")
    stranger = Registry(one.bus, sealer=Sealer.from_secret("o" * 32), instance_id="two", advertise_url="http://x:1")
    try:
        await one.beat()
        good = one.me()
        forged = {
            "two": json.dumps(good._replace(id="two", advertise_url="http://203.0.113.9:80")._asdict()),  # unsealed
            "three": stranger.record(good._replace(id="three")),  # another key
            "four": one.record(good._replace(id="four", advertise_url="http://user:pw@127.0.0.1:9")),
            "five": one.record(good._replace(id="five", advertise_url="http://127.0.0.1:9/elsewhere?x=1")),
            "six": one.record(good._replace(id="six", advertise_url="ftp://127.0.0.1:9")),
        }
        for key, raw in forged.items():
            await one.bus.put_instance(key, raw, 60_000)
        assert [(info.id, info.advertise_url) for info in await one.instances()] == [("one", "http://127.0.0.1:1")]
        await asyncio.sleep(one.trust_after_s)  # until then a missing record proves nothing
        await one.beat()
        for key in forged:
            assert await one.still_there(key) is None, key
        await one.bus.put_instance("seven", one.record(good), 60_000)  # one's own record, copied under another id
        assert await one.still_there("seven") is None
    finally:
        await one.close()
        await one.bus.close()


async def test_hops_are_admitted_from_the_live_instances_addresses_only(redis_url: str) -> None:
    """The registry's advertise hosts (an IP literal, or a name, resolved) are the addresses hops may come from; an
    unknown address re-reads the registry (a peer that just joined counts at once), at most once a second."""
    clock = FakeClock()
    here = _registry(redis_url, "three")  # this instance: its view is what Peers reads; it never beats here
    one = _registry(redis_url, "one")  # advertises 127.0.0.1
    named = Registry(one.bus, sealer=one.sealer, instance_id="two", advertise_url="http://localhost:2")
    peers = Peers(here, wall=clock.now)
    try:
        assert not await peers.admits("127.0.0.1")  # nothing registered yet
        await one.beat()
        assert not await peers.admits("127.0.0.1")  # read a moment ago: no second read within the second
        await clock.advance(PEER_REFRESH_MIN_S)
        assert await peers.admits("127.0.0.1")  # re-read: instance one registered since
        assert await peers.admits("::ffff:127.0.0.1")  # the same address, as a dual-stack socket reports it
        assert not await peers.admits("203.0.113.9")
        assert not await peers.admits("not an address")
        await one.close()  # leaves: only "two" is left, advertised by name
        await named.beat()
        await here.instances()  # this instance's next heartbeat
        await clock.advance(PEER_REFRESH_MIN_S)
        assert await peers.admits("127.0.0.1")  # localhost resolved
        assert not await peers.admits("127.0.0.2")
    finally:
        await named.close()
        await one.close()
        await one.bus.close()
        await here.bus.close()
