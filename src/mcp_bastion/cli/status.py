"""`mcp-bastion status`: the running gateway's health and every instance of its cluster (Issue 12 item 6).

One GET /health with the admin token, through the same admin API client as `sessions list` (the URL from --url or
HOST:PORT of the settings, the token from AUTH_TOKEN in the .env, never from argv). With an admin token /health
lists every instance (the cluster's registry, or this one alone without REDIS_URL); the table shows them, then a
line with the overall health. Exit code 0 when the gateway says "ok", 1 when it says anything else, 2 when it
cannot be asked (unreachable, token refused, settings broken).
"""

from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from mcp_bastion.cli.base import EnvFile, JsonFlag, cli, fail, out, settings_from
from mcp_bastion.cli.incident import ServerUnavailable, UrlOption, admin_api
from mcp_bastion.cli.output import MISSING, Col, Row, emit_json, new_table, print_table

EXIT_DEGRADED = 1  # the gateway answered, and says it is not healthy
UNAVAILABLE = 503  # a dependency is down: the answer still names it (fail closed, Issue 9 item 1)
UNREACHABLE_HINT = "is the gateway running (`mcp-bastion serve`)? pass --url if it listens elsewhere"
SOURCES = {
    "local": "one instance (no REDIS_URL)",
    "cluster": "from the cluster registry",
    "cluster unavailable": "the cluster registry cannot be read: this instance only",
}


def duration(seconds: object) -> str:
    """12s, 5m 3s, 2h 10m, 3d 4h (as the dashboard shows it)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return MISSING
    left = max(int(seconds), 0)
    days, left = divmod(left, 86400)
    hours, left = divmod(left, 3600)
    minutes, secs = divmod(left, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


INSTANCE_COLUMNS = [
    Col("instance", lambda r: f"{r.get('id')}{' (this one)' if r.get('this') else ''}", "bold", no_wrap=True),
    Col("advertise URL", "advertise_url", no_wrap=True),
    Col("uptime", lambda r: duration(r.get("uptime_s"))),
    Col("sessions", "sessions"),
    Col("children", "children"),
    Col("last heartbeat", lambda r: f"{duration(r.get('heartbeat_age_s'))} ago"),
    Col("state", lambda r: Text("draining", style="yellow") if r.get("draining") else Text("serving", style="green")),
]


def health_line(health: dict[str, Any]) -> Text:
    """`status ok · version 1.2.0 · store ok, ratelimit ok · servers 2 running, 1 failed · forwarded 3, served for
    peers 5` (the last part in cluster mode)."""
    status = str(health.get("status", "unknown"))
    line = Text.assemble(("status ", "bold"), (status, "bold green" if status == "ok" else "bold red"))
    line.append(f" · version {health.get('version', '?')}")
    dependencies = health.get("dependencies")
    if isinstance(dependencies, dict) and dependencies:
        line.append(" · " + ", ".join(f"{name} {state}" for name, state in dependencies.items()))
    servers = health.get("servers")
    if isinstance(servers, dict) and servers:
        states: dict[str, int] = {}
        for view in servers.values():
            state = str(view.get("state", "?")) if isinstance(view, dict) else "?"
            states[state] = states.get(state, 0) + 1
        line.append(" · servers " + ", ".join(f"{count} {state}" for state, count in states.items()))
    cluster = health.get("cluster")
    if isinstance(cluster, dict) and "forwarded" in cluster:  # this instance's share of the forwarding
        line.append(f" · forwarded {cluster['forwarded']}, served for peers {cluster.get('served_for_peers', 0)}")
    return line


def read_health(env_file: Path, url: str | None) -> dict[str, Any]:
    """GET /health of the gateway with the admin token; exits 2 with one line when that is not possible."""
    api = admin_api(settings_from(env_file), url)
    try:
        code, body = api.call("GET", "/health")
    except ServerUnavailable as exc:
        fail(str(exc), exc.hint if exc.reached else UNREACHABLE_HINT)
    if code == UNAVAILABLE and isinstance(body, dict) and "dependencies" in body:
        return body  # the gateway is up and says which dependency is down (Redis): a degraded status, not an error
    if code != 200 or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else None
        detail = f": {message}" if isinstance(message, str) else ""
        fail(f"{api.url}/health answered HTTP {code}{detail}", "see the gateway's log; `mcp-bastion doctor` checks it")
    return body


@cli.command()
def status(url: UrlOption = None, as_json: JsonFlag = False, env_file: EnvFile = Path(".env")) -> None:
    """Show the running gateway's health and every instance of its cluster: id, advertise URL, uptime, sessions,
    children and last heartbeat.

    Asks GET /health with AUTH_TOKEN from --env-file (never a flag: argv is visible in `ps`). Exit code 0 when the
    gateway is healthy, 1 when it is degraded, 2 when it cannot be reached or refuses the token.

    Example: mcp-bastion status --url http://127.0.0.1:3001
    """
    health = read_health(env_file, url)
    if as_json:
        emit_json(health)
    else:
        show(health)
    if health.get("status") != "ok":
        raise typer.Exit(EXIT_DEGRADED)


def show(health: dict[str, Any]) -> None:
    """The instances table (when the token may see it), then the health line."""
    rows: list[Row] = [row for row in health.get("instances") or [] if isinstance(row, dict)]
    if rows:
        source = SOURCES.get(str(health.get("source")), str(health.get("source")))
        table = new_table(*INSTANCE_COLUMNS, title=f"Instances: {len(rows)}, {source}")
        for row in rows:
            table.add_row(*(column.cell(row) for column in INSTANCE_COLUMNS))
        print_table(table)
    elif isinstance(health.get("message"), str):
        out.print(Text(f"the gateway answered 503: {health['message']}", style="yellow"), soft_wrap=True)
    else:
        out.print(Text("no instance list: the token lacks the admin scope", style="yellow"), soft_wrap=True)
    out.print(health_line(health), soft_wrap=True)
