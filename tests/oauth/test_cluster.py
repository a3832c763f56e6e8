"""Cluster mode (Issue 13 item 6): two real instances behind nginx, an OAuth token from the loopback issuer. Each
instance validates tokens with its own key-set cache; a session's requests that land on the other instance are
forwarded to its owner with the OAuth principal, and every call is answered."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.cluster.rig import Rig, cluster
from tests.oauth.support import PREFIX, PUBLIC_URL, Issuer, claims_for, loopback_issuer, new_key, sign
from tests.security.support import bearer

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

CALLS = 6  # per session: round robin over two instances, so about half land on the one that does not own it
BOUND_S = 60.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, Issuer]]:
    workdir: Path = tmp_path_factory.mktemp("oauth-cluster")
    with loopback_issuer(new_key("ES256")) as issuer:
        extra = {"PUBLIC_URL": PUBLIC_URL, "OAUTH_ISSUER": issuer.url, "OAUTH_SCOPE_PREFIX": PREFIX}
        with cluster(workdir, size=2, extra=extra) as rig:
            yield rig, issuer


async def test_an_oauth_session_through_a_balancer_is_served_by_forwarding(world: tuple[Rig, Issuer]) -> None:
    rig, issuer = world
    value = sign(claims_for(issuer.url, f"{PUBLIC_URL}/mcp/toolbox", "mcp:server:toolbox"), issuer.keys[0])
    url = rig.lb + "/mcp/toolbox"
    before = rig.forwarded()
    texts: list[Any] = []
    with anyio.fail_after(BOUND_S):
        async with (
            httpx2.AsyncClient(timeout=20, headers=bearer(value)) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            for n in range(CALLS):
                texts.append((await client.call_tool("echo", {"text": f"c{n}"})).content[0].text)
        async with Client(sse_client(url + "/sse", headers=bearer(value), timeout=20), mode="legacy") as client:
            for n in range(CALLS):
                texts.append((await client.call_tool("echo", {"text": f"s{n}"})).content[0].text)
    assert texts == [f"c{n}" for n in range(CALLS)] + [f"s{n}" for n in range(CALLS)]
    assert rig.forwarded() > before  # some requests landed on the instance that does not own the session
    assert issuer.jwks_fetches == 2  # one key-set fetch per instance, then each its own cache
    principals = {
        line.get("principal_id") for instance in rig.instances for line in rig.audit(instance) if line.get("oauth_jti")
    }
    assert principals == {f"oauth:127.0.0.1:{issuer.url.rsplit(':', 1)[1]}:svc-robot"}


async def test_a_token_for_another_resource_is_refused_on_every_instance(world: tuple[Rig, Issuer]) -> None:
    rig, issuer = world
    value = sign(claims_for(issuer.url, f"{PUBLIC_URL}/mcp/other", "mcp:server:toolbox"), issuer.keys[0])
    async with httpx2.AsyncClient(timeout=10) as http:
        for instance in rig.instances:
            answer = await http.post(
                instance.url + "/mcp/toolbox",
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={**bearer(value), "Accept": "application/json, text/event-stream"},
            )
            assert answer.status_code == 401
            assert 'error="invalid_token"' in answer.headers["www-authenticate"]
