"""A real redis-server for the session (tests/redis_server.py); each test that asks for it gets an empty one."""

from collections.abc import Iterator

import pytest

from tests.redis_server import client, redis_server


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis://127.0.0.1:PORT/0 of a redis-server started for this test session and killed after it."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The session's Redis, emptied first so tests never see each other's keys or counters."""
    with client(redis_server_url) as probe:
        probe.flushall()
    return redis_server_url
