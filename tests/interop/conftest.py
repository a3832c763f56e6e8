"""Finding the Node tools that scripts/install-tools puts in .tools/bin, and a gateway per test module."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEMO, FIXTURES, RunningGateway, run_gateway, spec

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
CONFORMANCE_CHILD = [sys.executable, str(FIXTURES / "conformance_child.py")]


def tool(name: str) -> str:
    """The path of a tool installed by scripts/install-tools; a missing tool fails the test (it never skips),
    unless BASTION_SKIP_INTEROP=1 says to skip the interop tests on purpose."""
    if os.environ.get("BASTION_SKIP_INTEROP") == "1":
        pytest.skip("BASTION_SKIP_INTEROP=1")
    path = TOOLS_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: run scripts/install-tools (scripts/test does)", pytrace=False)
    return str(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """BASTION_SKIP_INTEROP=1 skips these tests up front, before any gateway starts."""
    if os.environ.get("BASTION_SKIP_INTEROP") == "1":
        here = Path(__file__).parent
        for item in items:
            if here in Path(str(item.path)).parents:
                item.add_marker(pytest.mark.skip(reason="BASTION_SKIP_INTEROP=1"))


@pytest.fixture(scope="module")
def interop_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway per module: the demo server, the conformance fixture child shared and per-session."""
    servers = [
        spec("demo", DEMO),
        spec("conf", CONFORMANCE_CHILD),
        spec("conf-session", CONFORMANCE_CHILD, isolation="per-session"),
    ]
    with run_gateway(servers, tmp_path_factory.mktemp("gateway")) as running:
        yield running
