"""With REDIS_URL set, separate gateway instances share one per-IP counter (the limits library on Redis)."""

from pathlib import Path

import httpx

from mcp_bastion.security import new_token
from tests.harness import run_gateway
from tests.redis_server import client

LIMIT = 5


def test_two_instances_share_the_per_ip_limit(redis_url: str, tmp_path: Path) -> None:
    """3 requests to one instance and 3 to another: the 6th is refused with 429 and the RateLimit-* headers."""
    admin = new_token()[:40]
    assert len(admin) == 40
    settings = {
        "redis_url": redis_url,
        "rate_limit_max_requests": LIMIT,
        "insecure_no_auth": False,
        "auth_token": admin,
        "store_url": "memory://",
    }
    headers = {"Authorization": f"Bearer {admin}"}
    with (
        run_gateway([], tmp_path / "a", **settings) as first,
        run_gateway([], tmp_path / "b", **settings) as second,
    ):
        assert first.url != second.url
        statuses = []
        for url in [first.url] * 3 + [second.url] * 2:
            statuses.append(httpx.get(f"{url}/health", headers=headers, timeout=5).status_code)
        assert statuses == [200] * 5

        refused = httpx.get(f"{second.url}/health", headers=headers, timeout=5)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "Too many requests"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-limit"] == str(LIMIT)
        assert refused.headers["ratelimit-remaining"] == "0"
        assert int(refused.headers["ratelimit-reset"]) >= 1

        # The first instance sees the same exhausted counter.
        also = httpx.get(f"{first.url}/health", headers=headers, timeout=5)
        assert also.status_code == 429
        # /livez is exempt from the limit.
        assert httpx.get(f"{first.url}/livez", timeout=5).status_code == 200

    with client(redis_url) as raw:
        keys = raw.keys("*")
    assert any("bastion-ip" in key for key in keys), keys  # the counter really lives in Redis
