"""Issue 12 item 1 at the CLI: cluster mode with incomplete settings is refused at start with one line."""

import secrets
import subprocess
from pathlib import Path

import pytest

from tests.cluster.rig import CLI, clean_env

pytestmark = pytest.mark.cluster

EXIT_CONFIG = 2
START_BOUND_S = 30.0


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], "needs CLUSTER_SECRET of at least 32 characters"),
        (["CLUSTER_SECRET=too-short"], "needs CLUSTER_SECRET of at least 32 characters"),
        (["CLUSTER_SECRET=" + "s" * 31], "needs CLUSTER_SECRET of at least 32 characters"),  # one short of the bound
        (["CLUSTER_SECRET=" + "s" * 32, "HOST=0.0.0.0", "ALLOW_PLAINTEXT=1"], "needs CLUSTER_ADVERTISE_URL"),
    ],
)
def test_serve_refuses_cluster_mode_without_its_settings_in_one_line(
    tmp_path: Path, lines: list[str], expected: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "\n".join(["REDIS_URL=redis://127.0.0.1:1/0", "AUTH_TOKEN=" + secrets.token_urlsafe(32), *lines]) + "\n"
    )
    env_file.chmod(0o600)
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {}}')
    argv = [str(CLI), "serve", "--env-file", str(env_file), "--config", str(config), "--port", "1"]
    done = subprocess.run(argv, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=START_BOUND_S)
    assert done.returncode == EXIT_CONFIG, done.stderr
    errors = [line for line in done.stderr.splitlines() if expected in line]
    assert len(errors) == 1, done.stderr
    secrets_given = [line.split("=", 1)[1] for line in lines if line.startswith("CLUSTER_SECRET=")]
    assert not [s for s in secrets_given if s in done.stderr + done.stdout]  # the secret never reaches the output
