"""The README, followed as a new user would (issue 10 items 2 and 3, and the issue's Proof).

The code blocks whose info string is `bash tested` are run as written, one bash per block (`-e -o pipefail`), in a
fresh directory with a clean HOME, against a real `mcp-bastion serve` started as command 1 (`scripts/serve`) starts
it, without re-installing: the venv exists, and `scripts/install-link` (what scripts/install ends with) puts
`mcp-bastion` on PATH in that HOME. PATH keeps no directory that holds another `mcp-bastion`, so the plain name
resolves only through the link. The one change to the README's text: port 3001 becomes a free port (other tests
run alongside). npm's download cache is kept in .tools/npm-cache between runs; HOME is new each time.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcp_bastion.cli.serve import INSPECTOR_PACKAGE
from mcp_bastion.demo_server import TOOLS
from tests.harness import free_port, serve_process

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CLI = Path(sys.executable).parent / "mcp-bastion"
DEFAULT_URL = "127.0.0.1:3001"
# The first run downloads the Inspector and Node 22 from npm (~400 MB unpacked into the cache); later runs reuse it.
BLOCK_TIMEOUT_S = 600.0
TESTED_FENCE = re.compile(r"^```bash tested\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# What scripts/serve runs after scripts/install (the test runs the same, from its own directory).
START = (["demo", "--config", "mcp.json"], ["serve", "--config", "mcp.json"])

pytestmark = pytest.mark.interop


def readme_blocks() -> list[str]:
    """The README's `bash tested` blocks, in order."""
    return TESTED_FENCE.findall(README.read_text(encoding="utf-8"))


def logical_lines(block: str) -> list[str]:
    """The commands of a block, continuation lines joined as bash joins them."""
    return [line for line in re.sub(r"\\\n\s*", "", block).splitlines() if line.strip()]


def clean_path(home: Path) -> str:
    """~/.local/bin first, then this PATH without any directory that holds an `mcp-bastion` (the venv's)."""
    kept = [
        d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d and not (Path(d) / "mcp-bastion").exists()
    ]
    return os.pathsep.join([str(home / ".local" / "bin"), *kept])


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A new user's environment: a fresh HOME, the PATH after `scripts/install`, nothing of ours."""
    if os.environ.get("BASTION_SKIP_INTEROP") == "1":
        pytest.skip("BASTION_SKIP_INTEROP=1")
    if shutil.which("npx") is None:
        pytest.fail("npx is missing: the README's Inspector line needs npm (install Node and npm)", pytrace=False)
    home = tmp_path_factory.mktemp("home")
    cache = ROOT / ".tools" / "npm-cache"
    cache.mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": str(home),
        "PATH": clean_path(home),
        "LANG": "C.UTF-8",
        "npm_config_cache": str(cache),
        "npm_config_update_notifier": "false",
    }
    linked = subprocess.run(
        [str(ROOT / "scripts" / "install-link")], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert linked.returncode == 0, linked.stderr
    assert (home / ".local" / "bin" / "mcp-bastion").resolve() == CLI.resolve()
    return env


@pytest.fixture(scope="module")
def served(newcomer: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, Path]]:
    """Command 1 in a fresh directory, without installing: the demo config and .env, then `serve` on a free port."""
    checkout = tmp_path_factory.mktemp("checkout")
    wrote = subprocess.run(
        ["mcp-bastion", *START[0]], cwd=checkout, env=newcomer, capture_output=True, text=True, timeout=30, check=False
    )
    assert wrote.returncode == 0, wrote.stderr
    port = free_port()
    log = checkout / "serve.log"

    def ready() -> bool:
        return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1.0).status_code == 200

    argv = [str(Path(newcomer["PATH"].split(os.pathsep)[0]) / "mcp-bastion"), *START[1], "--port", str(port)]
    with serve_process(argv, cwd=checkout, env=newcomer, log=log, ready=ready):
        yield checkout, port, log


def run_block(block: str, cwd: Path, env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
    """One README block as written (3001 -> the test's port), stopping at the first failing command, which it names."""
    script = "trap 'echo \"README command failed ($?): $BASH_COMMAND\" >&2' ERR\n" + block.replace(
        DEFAULT_URL, f"127.0.0.1:{port}"
    )
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )


def test_scripts_serve_starts_the_gateway_as_this_test_does() -> None:
    script = (ROOT / "scripts" / "serve").read_text(encoding="utf-8")
    assert "scripts/install\n" in script
    for args in START:
        assert f".venv/bin/mcp-bastion {' '.join(args)}" in script


def test_the_readme_marks_its_runnable_blocks() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 3
    assert any("mcp-inspector" in block for block in blocks)
    assert any("mcp-bastion --version" in block for block in blocks)


def test_every_tested_readme_block_exits_0_for_a_new_user(
    newcomer: dict[str, str], served: tuple[Path, int, Path]
) -> None:
    checkout, port, _ = served
    for block in readme_blocks():
        done = run_block(block, checkout, newcomer, port)
        assert done.returncode == 0, f"README block failed:\n{block}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def test_the_readme_inspector_line_lists_the_demo_tools(
    newcomer: dict[str, str], served: tuple[Path, int, Path]
) -> None:
    checkout, port, _ = served
    block = next(block for block in readme_blocks() if "mcp-inspector" in block)
    done = run_block(block, checkout, newcomer, port)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout[done.stdout.index("{") :])
    assert sorted(tool["name"] for tool in listed["tools"]) == sorted(tool["name"] for tool in TOOLS)


def test_the_banner_prints_the_readme_lines_exactly(newcomer: dict[str, str], served: tuple[Path, int, Path]) -> None:
    _, port, log = served
    block = next(block for block in readme_blocks() if "mcp-inspector" in block)
    banner = [line.strip() for line in log.read_text(encoding="utf-8").splitlines()]
    for command in logical_lines(block):
        assert command.replace(DEFAULT_URL, f"127.0.0.1:{port}") in banner


def test_the_readme_inspector_is_the_version_the_interop_tests_pin() -> None:
    pinned = json.loads((ROOT / "tools" / "package.json").read_text(encoding="utf-8"))["dependencies"]
    name, _, version = INSPECTOR_PACKAGE.rpartition("@")
    assert pinned[name] == version
    assert f"-p {INSPECTOR_PACKAGE} " in README.read_text(encoding="utf-8")
