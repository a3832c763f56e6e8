"""The official MCP conformance suite (npm @modelcontextprotocol/conformance, run under Node 22) against the gateway.

Each scenario runs `conformance server --url ... --scenario S --spec-version V -o DIR`; the test reads the
checks.json the suite writes and fails on any FAILURE check, quoting it. Scenarios that need fixed tool, resource
or prompt names run against tests/fixtures/conformance_child.py; the protocol scenarios run against it too (the
gateway's behaviour is the same whichever child it fronts). WARNINGs (SHOULDs) are reported, not failed.
"""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import RunningGateway
from tests.interop.conftest import tool

pytestmark = pytest.mark.interop
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
CONTENT = [
    "tools-list",
    "completion-complete",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-error",
    "tools-call-with-progress",
    "json-schema-2020-12",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
]
INPUT_REQUIRED = [
    "basic-elicitation",
    "basic-sampling",
    "basic-list-roots",
    "request-state",
    "multiple-input-requests",
    "multi-round",
    "missing-input-response",
    "non-tool-request",
    "result-type",
    "unsupported-methods",
    "tampered-state",
    "capability-check",
    "ignore-extra-params",
    "validate-input",
]
SCENARIOS = [
    # 2025-11-25: sessions, the transport, and the legacy-only methods.
    *[
        (LEGACY, s, "conf")
        for s in [
            "server-initialize",
            "server-session-lifecycle",
            "ping",
            "dns-rebinding-protection",
            "server-sse-multiple-streams",
            "logging-set-level",
            "tools-call-with-logging",
            "resources-subscribe",
            "resources-unsubscribe",
            *CONTENT,
        ]
    ],
    # Server-to-client requests are forwarded only to a per-session child.
    (LEGACY, "tools-call-sampling", "conf-session"),
    (LEGACY, "tools-call-elicitation", "conf-session"),
    # 2026-07-28 multi-round-trip requests: a per-session child's asks become InputRequiredResults (Issue 11 item 5).
    *[(MODERN, f"input-required-result-{s}", "conf-session") for s in INPUT_REQUIRED],
    # A per-session server serves every 2026-07-28 request from a child of its own: listen, Mcp-Param-*, progress.
    *[
        (MODERN, s, "conf-session")
        for s in ["server-stateless", "http-custom-header-server-validation", "tools-call-with-progress", "caching"]
    ],
    # 2026-07-28: stateless, routing headers, caching hints.
    *[
        (MODERN, s, "conf")
        for s in [
            "server-stateless",
            "http-header-validation",
            "http-custom-header-server-validation",
            "caching",
            "server-sse-multiple-streams",
            "dns-rebinding-protection",
            "sep-2164-resource-not-found",
            *CONTENT,
        ]
    ],
]


def run_scenario(url: str, scenario: str, version: str, out: Path) -> tuple[list[dict[str, Any]], str]:
    command = [tool("conformance"), "server", "--url", url, "--scenario", scenario, "--spec-version", version]
    command += ["--timeout", "30000", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=55, check=False)
    printed = re.sub(r"\x1b\[[0-9;]*m", "", f"{done.stdout}\n{done.stderr}").strip().splitlines()
    summary = [line for line in printed if re.search(r"\] (SUCCESS|FAILURE|WARNING)|^Passed:", line)] or printed[-30:]
    output = f"$ {' '.join(command)}\nexit {done.returncode}\n" + "\n".join(summary)
    results = sorted(out.glob("*/checks.json"))
    assert len(results) == 1, f"expected one checks.json under {out}\n{output}"
    checks = json.loads(results[0].read_text())
    assert isinstance(checks, list), output
    return checks, output


@pytest.mark.parametrize(("version", "scenario", "server"), SCENARIOS, ids=[f"{v}-{s}" for v, s, _ in SCENARIOS])
def test_conformance_scenario(
    interop_gateway: RunningGateway, tmp_path: Path, version: str, scenario: str, server: str
) -> None:
    checks, output = run_scenario(interop_gateway.mcp(server), scenario, version, tmp_path / "out")
    failed = [c for c in checks if c.get("status") == "FAILURE"]
    report = "\n".join(
        f"- {c.get('id')}: {c.get('errorMessage')}\n  details: {json.dumps(c.get('details'))[:800]}" for c in failed
    )
    assert not failed, f"{len(failed)} conformance check(s) failed in {scenario} ({version}):\n{report}\n\n{output}"
    if scenario.startswith("input-required-result-"):  # Issue 11 item 5: the SHOULDs hold too
        warned = [f"- {c.get('id')}: {c.get('errorMessage')}" for c in checks if c.get("status") == "WARNING"]
        assert not warned, "\n".join(warned) + f"\n\n{output}"
    assert any(c.get("status") == "SUCCESS" for c in checks), f"no check passed:\n{output}"
