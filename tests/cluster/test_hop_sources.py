"""Only the cluster's instances may present a hop: from any other address the X-Bastion-Hop header is stripped and
the request meets the whole pipeline (address allowlist first, then authentication), as if it had none."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_bastion.app import BastionApp, create_app
from mcp_bastion.config import Settings
from tests.faults.redis_process import RedisProcess
from tests.middleware.asgi import call, http_scope

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

OUTSIDER = ("203.0.113.9", 5555)
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
FORGED = "e30.AAAA"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    redis = RedisProcess(tmp_path_factory.mktemp("redis"))
    redis.start()
    try:
        yield redis.url
    finally:
        redis.stop()


def _app(tmp_path: Path, redis_url: str, **extra: Any) -> BastionApp:
    settings = Settings(
        host="127.0.0.1",
        port=3001,
        log_dir=tmp_path / "logs",
        audit_log=tmp_path / "logs" / "audit.jsonl",
        auth_token="a" * 40,
        redis_url=redis_url,  # no instance has registered there: the outsider's address is no instance's
        cluster_secret="s" * 40,
        **extra,
    )
    return create_app(settings, {})


def _audited(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in (tmp_path / "logs").glob("*.jsonl") for line in path.read_text().splitlines()]


async def test_an_outsiders_hop_header_is_ignored_and_the_address_allowlist_refuses_it(
    tmp_path: Path, redis_url: str
) -> None:
    app = _app(tmp_path, redis_url, allowed_ips="127.0.0.1")
    plain = await call(app.pipeline, http_scope("POST", "/mcp/toolbox", HEADERS, client=OUTSIDER), BODY)
    hopped = await call(
        app.pipeline, http_scope("POST", "/mcp/toolbox", {**HEADERS, "x-bastion-hop": FORGED}, client=OUTSIDER), BODY
    )
    assert plain.status == hopped.status == 403
    assert plain.body == hopped.body  # nothing tells the outsider that cluster mode is on
    lines = _audited(tmp_path)
    assert [line["event"] for line in lines].count("ip.denied") == 2, lines
    assert all(line["ip"] == OUTSIDER[0] for line in lines if line["event"] == "ip.denied")
    assert not any(line["event"] == "cluster.hop.refused" for line in lines)
    await _close(app)


async def test_an_outsiders_hop_header_is_no_credential_the_request_is_authenticated(
    tmp_path: Path, redis_url: str
) -> None:
    app = _app(tmp_path, redis_url, allowed_ips="127.0.0.1,203.0.113.0/24")
    answer = await call(
        app.pipeline, http_scope("POST", "/mcp/toolbox", {**HEADERS, "x-bastion-hop": FORGED}, client=OUTSIDER), BODY
    )
    assert answer.status == 401, answer.body
    assert not any(line["event"] == "cluster.hop.refused" for line in _audited(tmp_path))
    await _close(app)


async def _close(app: BastionApp) -> None:
    assert app.cluster is not None
    await app.cluster.close()
    await app.store.close()
    await app.limiter.close()
    app.audit.close()
