"""`mcp-bastion status` (Issue 12 item 6) as a subprocess against real gateways over HTTP: the instances table and
the health line, plain off a terminal; --json; the token from the .env only; one-line errors with a hint."""

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.test_instances import cluster_of
from tests.harness import RunningGateway, free_port, spec, wait_until
from tests.redis_server import redis_server
from tests.security.support import add_token, admin_token, run_cli, secure_gateway, write_env

ANSI = "\x1b["


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    admin = admin_token()
    with secure_gateway(
        [spec("toolbox")], tmp_path_factory.mktemp("status"), auth_token=admin, instance_id="solo"
    ) as gw:
        yield gw, admin


def test_status_prints_this_instance_and_the_health_line_plain(
    single: tuple[RunningGateway, str], tmp_path: Path
) -> None:
    gw, admin = single
    env = write_env(tmp_path, AUTH_TOKEN=admin)
    done = run_cli(tmp_path, env, "status", "--url", gw.url, COLUMNS="200")
    assert done.returncode == 0, done.stderr
    assert ANSI not in done.stdout
    lines = done.stdout.splitlines()
    assert "Instances: 1, one instance (no REDIS_URL)" in lines[0]
    [row] = [line for line in lines if "solo (this one)" in line]
    assert gw.url in row
    assert "serving" in row
    assert lines[-1].startswith("status ok · version ")
    assert "store ok, ratelimit ok" in lines[-1]
    assert "servers 1 running" in lines[-1]
    assert admin not in done.stdout + done.stderr


def test_status_json_is_the_health_document_and_port_comes_from_the_env_file(
    single: tuple[RunningGateway, str], tmp_path: Path
) -> None:
    gw, admin = single
    port = gw.url.rsplit(":", 1)[1]
    env = write_env(tmp_path, AUTH_TOKEN=admin, PORT=port)  # no --url: HOST:PORT of the settings
    done = run_cli(tmp_path, env, "status", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["status"], body["instance"], body["source"]) == ("ok", "solo", "local")
    assert [row["id"] for row in body["instances"]] == ["solo"]
    assert body["instances"][0]["children"] == 1


def test_a_token_without_admin_sees_no_instances_and_a_note(single: tuple[RunningGateway, str], tmp_path: Path) -> None:
    gw, _ = single
    env = write_env(tmp_path, AUTH_TOKEN=add_token(gw, "status-reader", "server:toolbox"))
    done = run_cli(tmp_path, env, "status", "--url", gw.url)
    assert done.returncode == 0, done.stderr
    assert "no instance list: the token lacks the admin scope" in done.stdout
    assert "solo" not in done.stdout


def test_unreachable_wrong_token_and_missing_token_are_one_line_with_a_hint(
    single: tuple[RunningGateway, str], tmp_path: Path
) -> None:
    gw, admin = single
    nowhere = f"http://127.0.0.1:{free_port()}"
    wrong = "wrong-" + "x" * 40
    cases = [
        ({"AUTH_TOKEN": admin}, nowhere, f"error: no answer from {nowhere}", "is the gateway running"),
        ({"AUTH_TOKEN": wrong}, gw.url, "refused the admin token (HTTP 401)", "the .env's AUTH_TOKEN"),
        ({}, gw.url, "no AUTH_TOKEN in the settings", "set AUTH_TOKEN"),
        ({"AUTH_TOKEN": admin}, "http://192.0.2.1:3001", "unencrypted off this machine", "use https://"),
    ]
    for values, url, message, hint in cases:
        done = run_cli(tmp_path, write_env(tmp_path, **values), "status", "--url", url)
        assert done.returncode == 2, (url, done.stdout, done.stderr)
        [line] = done.stderr.splitlines()
        assert message in line, line
        assert f"(hint: {hint}" in line, line
        assert admin not in done.stdout + done.stderr
        assert wrong not in done.stdout + done.stderr
        assert done.stdout == ""


def test_the_token_is_never_a_flag() -> None:
    from typer.testing import CliRunner

    from mcp_bastion.cli import cli

    help_text = CliRunner().invoke(cli, ["status", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--token" not in help_text
    assert "--url" in help_text
    assert "Example: mcp-bastion status" in help_text


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[RunningGateway], str]]:
    with cluster_of(tmp_path, "node-a", "node-b", "node-c") as found:
        yield found


@pytest.mark.cluster
def test_status_lists_every_instance_of_a_cluster(cluster: tuple[list[RunningGateway], str], tmp_path: Path) -> None:
    gateways, admin = cluster
    env = write_env(tmp_path, AUTH_TOKEN=admin)

    def status_json() -> dict[str, object]:
        done = run_cli(tmp_path, env, "status", "--url", gateways[1].url, "--json")
        assert done.returncode in (0, 1), done.stderr
        return dict(json.loads(done.stdout))

    wait_until(lambda: len(status_json()["instances"]) == 3, timeout=15, interval=0.2)  # type: ignore[arg-type]
    done = run_cli(tmp_path, env, "status", "--url", gateways[1].url, COLUMNS="200")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Instances: 3, from the cluster registry" in done.stdout
    for name, gw in zip(("node-a", "node-b", "node-c"), gateways, strict=True):
        [row] = [line for line in done.stdout.splitlines() if f"{name}" in line and gw.url in line]
        assert ("(this one)" in row) == (name == "node-b"), row
    assert "cluster ok" in done.stdout.splitlines()[-1]
    assert " · forwarded 0, served for peers 0" in done.stdout.splitlines()[-1]


@pytest.mark.cluster
def test_with_redis_down_status_names_the_dependency_and_exits_1(tmp_path: Path) -> None:
    """The gateway answers /health 503 naming what is down (Issue 12 item 5): status prints it, exit code 1."""
    admin = admin_token()
    env = write_env(tmp_path, AUTH_TOKEN=admin)
    with contextlib.ExitStack() as gateway_stack, contextlib.ExitStack() as redis_stack:
        url = redis_stack.enter_context(redis_server(tmp_path))
        settings = {"instance_id": "lonely", "redis_url": url, "cluster_secret": "c" * 32}
        gw = gateway_stack.enter_context(
            secure_gateway([spec("toolbox")], tmp_path / "gw", auth_token=admin, **settings)
        )
        assert run_cli(tmp_path, env, "status", "--url", gw.url).returncode == 0
        redis_stack.close()
        done = run_cli(tmp_path, env, "status", "--url", gw.url)
        assert done.returncode == 1, done.stdout + done.stderr
        message, line = done.stdout.splitlines()
        assert message.startswith("the gateway answered 503: ")
        assert line.startswith("status degraded")
        assert "down" in line
