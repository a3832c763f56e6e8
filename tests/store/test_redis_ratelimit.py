"""With REDIS_URL set, separate gateway instances share one per-IP counter (the limits library on Redis)."""

from pathlib import Path

import httpx

from mcp_bastion.security import new_token
from tests.harness import run_gateway
from tests.redis_server import client

LIMIT = 5


def test_two_instances_share_the_per_ip_limit(redis_url: str, tmp_path: Path) -> None:
    """3 unauthenticated requests to one instance and 2 to another: the 6th is refused with 429 and the RateLimit
    headers, on either instance."""
    admin = new_token()[:40]
    assert len(admin) == 40
    settings = {
        "redis_url": redis_url,
        "cluster_secret": "c" * 32,  # REDIS_URL turns cluster mode on (Issue 12)
        "rate_limit_max_requests": LIMIT,
        "insecure_no_auth": False,
        "auth_token": admin,
        "store_url": "memory://",
    }
    with (
        run_gateway([], tmp_path / "a", **settings) as first,
        run_gateway([], tmp_path / "b", **settings) as second,
    ):
        assert first.url != second.url
        admin_header = {"Authorization": f"Bearer {admin}"}
        assert httpx.get(f"{second.url}/health", headers=admin_header, timeout=5).status_code == 200
        # Requests without a credential: what the per-IP limit counts (Issue 10 item 1).
        statuses = []
        for url in [first.url] * 3 + [second.url] * 2:
            statuses.append(httpx.get(f"{url}/health", timeout=5).status_code)
        assert statuses == [401] * 5

        refused = httpx.get(f"{second.url}/health", timeout=5)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "Too many requests"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-policy"] == f'"ip";q={LIMIT};w=900'
        assert refused.headers["ratelimit"].startswith('"ip";r=0;t=')

        # The first instance sees the same exhausted counter.
        also = httpx.get(f"{first.url}/health", timeout=5)
        assert also.status_code == 429
        # The admin token, known good from this address before the flood (written to Redis by the other instance),
        # still passes: authenticated requests never count per address (Issue 10 item 1).
        assert httpx.get(f"{first.url}/health", headers=admin_header, timeout=5).status_code == 200
        # /livez is exempt from the limit.
        assert httpx.get(f"{first.url}/livez", timeout=5).status_code == 200

    with client(redis_url) as raw:
        keys = raw.keys("*")
    assert any("bastion-ip" in key for key in keys), keys  # the counter really lives in Redis
