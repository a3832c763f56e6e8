"""An .env admin token that happens to look like a JWT (two dots) is still the admin token once the built-in
authorization server judges JWT-shaped bearer tokens (Issue 14)."""

import secrets
from pathlib import Path

import httpx

from tests.authserver.support import builtin_gateway
from tests.security.support import bearer


def test_a_jwt_shaped_admin_token_still_authenticates(tmp_path: Path) -> None:
    admin = f"adm{secrets.token_hex(12)}.{secrets.token_hex(12)}.{secrets.token_hex(12)}"
    with builtin_gateway(tmp_path, admin=admin) as env:
        assert httpx.get(f"{env.url}/health", headers=bearer(admin), timeout=10).status_code == 200
        forged = admin.replace(".", ".x", 1)
        assert httpx.get(f"{env.url}/health", headers=bearer(forged), timeout=10).status_code == 401
