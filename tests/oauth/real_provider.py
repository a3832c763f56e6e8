"""Run the real OpenID provider (tests/oauth/provider.mjs on oidc-provider) on a free loopback port."""

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.harness import free_port, stop_process, wait_until
from tests.interop.conftest import TOOLS_BIN, tool

SCRIPT = Path(__file__).parent / "provider.mjs"
START_TIMEOUT_S = 20.0


@dataclass
class Provider:
    issuer: str
    log: Path

    def token(self, client: tuple[str, str], resource: str, scope: str | None = None) -> dict[str, Any]:
        """A client-credentials grant for `resource` (RFC 8707)."""
        form = {"grant_type": "client_credentials", "resource": resource}
        if scope is not None:
            form["scope"] = scope
        answer = httpx.post(f"{self.issuer}/token", data=form, auth=client, timeout=10)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


@contextlib.contextmanager
def oidc_provider(
    tmp_path: Path, *, clients: list[dict[str, Any]], resources: dict[str, dict[str, Any]], interactive: bool = False
) -> Iterator[Provider]:
    """The provider, ready (its discovery document answers) when entered; stopped (TERM, then KILL) on exit."""
    port = free_port()
    config = {"port": port, "clients": clients, "resources": resources, "interactive": interactive}
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        "NODE_PATH": str(TOOLS_BIN.parent / "node_modules"),
        "OIDC_TEST_CONFIG": json.dumps(config),
    }
    log = tmp_path / "provider.log"
    issuer = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [tool("node22"), str(SCRIPT)], env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the provider exited:\n{log.read_text(errors='replace')}")
        try:
            return httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, START_TIMEOUT_S, interval=0.1)
        yield Provider(issuer, log)
    finally:
        stop_process(proc)
