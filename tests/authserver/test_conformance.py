"""The official MCP conformance suite's authorization-server scenarios against the built-in authorization server
(Issue 14): its RFC 8414 metadata, and a whole authorization-code grant with PKCE, `resource` and `iss` (the
suite prints the authorization URL and waits on its loopback callback; the operator's login and consent are
driven over HTTP as a browser would, then the redirect is delivered to the suite's callback)."""

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.authserver.support import Browser, Builtin, register
from tests.harness import free_port, stop_process, wait_until
from tests.interop.conftest import tool

pytestmark = pytest.mark.interop

RUN_TIMEOUT_S = 60.0
AUTHORIZE = re.compile(r"^(http://\S+/oauth/authorize\?\S+)$", re.MULTILINE)


def test_the_conformance_suite_passes_the_authorization_server_scenarios(
    env: Builtin, browser: Browser, tmp_path: Path
) -> None:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/callback"
    client_id = register(env, [callback], name="conformance")
    out = tmp_path / "conformance.out"
    argv = [tool("conformance"), "authorization", "--url", env.url, "--client-id", client_id]
    argv += ["--resource", env.resource(), "-p", str(port), "-o", str(tmp_path / "results")]
    with out.open("wb") as sink:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: AUTHORIZE.search(out.read_text(errors="replace")) is not None, RUN_TIMEOUT_S, 0.1)
        found = AUTHORIZE.search(out.read_text(errors="replace"))
        assert found is not None
        page = browser.consent_page(found.group(1).removeprefix(env.url))
        answer = browser.decide(page, "approve")
        assert answer.status_code == 303
        assert httpx.get(answer.headers["location"], timeout=10).status_code == 200  # the suite's callback
        proc.wait(RUN_TIMEOUT_S)
    finally:
        stop_process(proc)
    text = out.read_text(errors="replace")
    assert proc.returncode == 0, text
    assert "Total: 3 passed, 0 failed" in text, text
    checks = [c for p in sorted((tmp_path / "results").rglob("checks.json")) for c in json.loads(p.read_text())]
    assert {c["id"] for c in checks} >= {"authorization-code-grant"}
    assert [c["status"] for c in checks] == ["SUCCESS"] * len(checks), checks
