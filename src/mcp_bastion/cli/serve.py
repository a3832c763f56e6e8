"""`serve`, `check-config`, `demo`, `version`: running the gateway and checking its configuration."""

import asyncio
import errno
import gc
import json
import logging
import math
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.text import Text

from mcp_bastion import __version__
from mcp_bastion.app import create_app
from mcp_bastion.cli.base import (
    EXIT_CONFIG,
    ConfigFile,
    EnvFile,
    cli,
    err,
    fail,
    load,
    out,
    store_for,
)
from mcp_bastion.cli.http_server import GatewayServer, HttpLimits, connection_cap, http_protocol
from mcp_bastion.cli.preflight import findings, print_findings, stored_token_count, verdict
from mcp_bastion.config import ServerSpec, Settings
from mcp_bastion.errors import ConfigError
from mcp_bastion.files import write_private
from mcp_bastion.security import new_token
from mcp_bastion.store import Store

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# What every LogRecord carries; anything else on a record came from `extra=` and becomes a JSON field.
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "color_message"}
console_log = logging.getLogger("mcp_bastion.cli")
# uvicorn cancels what is left this long after SHUTDOWN_GRACE_S: time for the gateway's own "shutting down" answers,
# given when the grace ends, to be written before anything is cut.
SHUTDOWN_ANSWER_S = 1.0
EXIT_STARTUP = 3  # the server could not start (uvicorn's own exit code for it)
# What to do when the listening socket cannot be bound, by errno (the message names host and port already).
BIND_HINTS = {
    errno.EADDRINUSE: "another process listens on port {port} (`ss -ltnp 'sport = :{port}'` shows which); "
    "stop it, or pick another port with --port (env PORT)",
    errno.EACCES: "ports below 1024 need root; use a higher one with --port (env PORT), e.g. 3001",
    errno.EADDRNOTAVAIL: "{host} is not an address of this machine; use --host 127.0.0.1 or one of its addresses",
    socket.EAI_NONAME: "{host} does not resolve; use an IP address for --host (env HOST)",
}
# The MCP Inspector the banner and the README suggest: pinned (the newest takes --header; the Node 20 default
# npx would pick, 0.15, rejects it), run under Node 22 from npm's `node` package, as it requires Node >= 22.19.
# tests/docs/test_readme.py runs the README's line and keeps this pin equal to tools/package.json's.
INSPECTOR_PACKAGE = "@modelcontextprotocol/inspector@2.12.0"
INSPECTOR_NODE = "node@22"


@cli.command()
def serve(
    env_file: EnvFile = Path(".env"),
    config: ConfigFile = None,
    host: Annotated[str | None, typer.Option(help="Bind address (env HOST, default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env PORT, default 3001).")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error (env LOG_LEVEL).")] = None,
    log_format: Annotated[
        str | None, typer.Option(help="text, or json: one JSON object per line, for journald (env LOG_FORMAT).")
    ] = None,
) -> None:
    """Serve every server in the config over every MCP HTTP transport.

    Example: mcp-bastion serve --config mcp.json --port 3001 --log-format json
    """
    settings, servers = load(
        env_file, mcp_config=config, host=host, port=port, log_level=log_level, log_format=log_format
    )
    configure_logging(settings)
    feedback = StartFeedback(settings)
    store = store_for(settings, env_file)
    try:
        for warning in preflight(settings, env_file, store):
            feedback.warn(warning)
        app = create_app(settings, servers, store=store, events=feedback)
    except ConfigError as exc:
        if feedback.json:
            console_log.error(exc.message)
            raise typer.Exit(EXIT_CONFIG) from None
        fail(exc.message, "see `mcp-bastion serve --help` and the security section of the README")
        return
    listeners = listen(settings, feedback)  # before the banner: a busy port is one error line, not "serving"
    feedback.banner(servers)
    if app.cluster is not None:  # Issue 12 item 1: which instance this is (INSTANCE_ID, generated when unset)
        feedback.cluster(app.cluster.id, app.cluster.config.advertise_url)
    # Everything imported so far lives as long as the process: take it out of the cyclic collector's sight, so
    # the collections that load triggers walk only per-request garbage.
    gc.collect()
    gc.freeze()
    tls = (
        {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)} if settings.tls else {}
    )
    limits = HttpLimits(
        head_timeout_s=settings.head_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        max_connections=connection_cap(settings.max_connections),
    )
    server_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http_protocol(limits, audit=app.audit, tls=settings.tls),  # head deadline, size and connection caps
        ws="none",  # no WebSocket route: an upgrade is refused (403) by the protocol, never handed to the app
        timeout_keep_alive=settings.keepalive_timeout_s,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to our root handler, so they share its format
        access_log=False,  # an access log would be one more place for query strings to leak; the audit log covers it
        proxy_headers=False,  # forwarded headers are trusted only from TRUSTED_PROXIES, by our own stage
        server_header=False,
        date_header=False,
        lifespan="on",
        # Calls in flight get SHUTDOWN_GRACE_S, then the gateway answers them "shutting down" itself; uvicorn's own
        # cancellation (a plain 500 without us) comes later, only for what that did not finish (Issue 9 item 6).
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s + SHUTDOWN_ANSWER_S),
        **tls,  # type: ignore[arg-type]
    )
    server = BoundServer(server_config, on_shutdown=app.begin_shutdown)
    server.run(sockets=listeners)
    if not server.started:
        raise typer.Exit(EXIT_STARTUP)


def listen(settings: Settings, feedback: "StartFeedback") -> list[socket.socket]:
    """The bound listening sockets for HOST:PORT; a port in use or an address we cannot bind is one error line."""
    try:
        return bind_sockets(settings.host, settings.port)
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        hint = BIND_HINTS.get(exc.errno or 0, "check --host and --port (env HOST, PORT)").format(
            port=settings.port, host=settings.host
        )
        reason = exc.strerror or str(exc)
        if feedback.json:
            console_log.error("cannot listen on %s: %s (hint: %s)", where, reason, hint)
            raise typer.Exit(EXIT_CONFIG) from None
        fail(f"cannot listen on {where}: {reason}", hint)


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Bind (not yet listen) one socket per address HOST resolves to, as asyncio's create_server would.

    Raises:
        OSError: the port is in use, the address is not ours, the port is privileged, or HOST does not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # each family its own socket, as asyncio does
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


class BoundServer(GatewayServer):
    """The gateway's server on sockets bound beforehand, saying "Uvicorn running on ..." as uvicorn does on its own."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:  # uvicorn logs it only when it binds the sockets itself
            self._log_started_message(sockets)


class JsonLines(logging.Formatter):
    """One JSON object per record (ts, level, logger, message, extra fields, exception) for journald and shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in RECORD_ATTRIBUTES})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Every logger (ours, uvicorn's, warnings) writes to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)


class StartFeedback:
    """What a person starting the gateway sees: warnings, the URLs, each child started or failed and why.

    Rich lines on the console for `--log-format text`; log records with the event's fields for `json`, so that
    stderr stays one JSON object per line. It is also the `events` sink of create_app (the audit log gets them too).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.json = settings.log_format == "json"

    def warn(self, message: str) -> None:
        """A loud warning (preflight)."""
        if self.json:
            console_log.warning(message)
        else:
            err.print(Text.assemble(("warning:", "bold yellow"), " ", message), soft_wrap=True)

    def __call__(self, event: str, **fields: Any) -> None:
        text = self.describe(event, fields)
        if text is None:
            return
        if self.json:
            extra = {key: value for key, value in fields.items() if key not in RECORD_ATTRIBUTES}
            console_log.log(
                logging.ERROR if event == "server.crash" else logging.INFO, text, extra={"event": event, **extra}
            )
        else:
            mark = {"server.start": ("✓", "green"), "server.crash": ("✗", "red")}.get(event, ("•", "yellow"))
            err.print(Text.assemble("  ", mark, " ", text), soft_wrap=True, highlight=False)

    def describe(self, event: str, fields: dict[str, Any]) -> str | None:
        """One sentence for a supervisor event (None for events a person need not see)."""
        name = f"{fields.get('server')}{' (session child)' if fields.get('isolation') == 'per-session' else ''}"
        if event == "server.start":
            return f"{name} started (pid {fields.get('pid')})"
        if event == "server.stop":
            return f"{name} stopped"
        if event == "server.restart":
            return f"{name} restarting ({fields.get('reason')})"
        if event == "server.crash":
            attempt, limit = int(fields.get("attempt", 1)), self.settings.restart_max_attempts
            then = f"retrying ({attempt} of {limit})" if attempt <= limit else f"giving up after {attempt} attempts"
            where = Path(self.settings.log_dir) / "servers" / f"{fields.get('server')}.log"
            return f"{name} failed: {fields.get('reason')}; {then} (its stderr: {where})"
        return None

    def cluster(self, instance_id: str, advertise_url: str) -> None:
        """Cluster mode: this instance's id and the URL the other instances reach it at."""
        if self.json:
            console_log.info("cluster instance %s, advertised at %s", instance_id, advertise_url)
        else:
            err.print(
                f"  cluster instance {instance_id}, advertised at {advertise_url}", soft_wrap=True, highlight=False
            )

    def banner(self, servers: dict[str, ServerSpec]) -> None:
        """The URLs of every server (and, on a console, how to try one)."""
        base = f"{'https' if self.settings.tls else 'http'}://{self.settings.host}:{self.settings.port}"
        if self.json:
            console_log.info("mcp-bastion %s serving %d server(s) on %s", __version__, len(servers), base)
            for name, spec in servers.items():
                console_log.info(
                    "server %s: Streamable HTTP %s/mcp/%s, SSE %s/mcp/%s/sse",
                    name,
                    base,
                    name,
                    base,
                    name,
                    extra={"server": name, "isolation": spec.isolation},
                )
            return
        _banner(self.settings, servers)


def preflight(settings: Settings, env_file: Path, store: Store) -> list[str]:
    """The one start-up verdict (cli/preflight.py): the warnings to print; ConfigError on a refusal."""
    return verdict(settings, env_file, lambda: asyncio.run(_count_tokens(store)))


async def _count_tokens(store: Store) -> int:
    return len(await store.list_tokens())


def _banner(settings: Settings, servers: dict[str, ServerSpec]) -> None:
    base = f"{'https' if settings.tls else 'http'}://{settings.host}:{settings.port}"
    err.print(Text.assemble((f"mcp-bastion {__version__}", "bold"), f" serving {len(servers)} server(s) on {base}"))
    for name, spec in servers.items():
        err.print(
            Text.assemble(
                "  ",
                (name, "cyan"),
                f" ({spec.isolation})  Streamable HTTP: {base}/mcp/{name}   SSE: {base}/mcp/{name}/sse",
            ),
            soft_wrap=True,
        )
    if servers:
        name = next(iter(servers))
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/list",
                "params": {
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {},
                    }
                },
            }
        )
        err.print("Try it (the token is AUTH_TOKEN in your .env):", soft_wrap=True)
        err.print(
            f"  export AUTH_TOKEN=$(grep ^AUTH_TOKEN= .env | cut -d= -f2-)\n"
            f"  curl -s {base}/mcp/{name} -H \"Authorization: Bearer $AUTH_TOKEN\" -H 'Content-Type: application/json' "
            "-H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' "
            f"-H 'Mcp-Method: tools/list' -d '{body}'",
            soft_wrap=True,
            markup=False,
        )
        err.print(f"  {inspector_line(f'{base}/mcp/{name}')}", soft_wrap=True, markup=False)


def inspector_line(url: str) -> str:
    """The MCP Inspector CLI listing the tools at `url`, as the README has it (needs npm; brings its own Node 22)."""
    return (
        f"npx -y -p {INSPECTOR_NODE} -p {INSPECTOR_PACKAGE} mcp-inspector --cli {url} --transport http "
        '--method tools/list --header "Authorization: Bearer $AUTH_TOKEN"'
    )


@cli.command("check-config")
def check_config(env_file: EnvFile = Path(".env"), config: ConfigFile = None) -> None:
    """Validate the settings and the mcpServers file without starting anything: serve's own start-up checks.

    Example: mcp-bastion check-config --config mcp.json
    """
    settings, servers = load(env_file, mcp_config=config)
    found = findings(settings, env_file, lambda: stored_token_count(settings, env_file))
    if code := print_findings(found):  # the refusals `serve` would make, with their fixes (Issue 10 item 5)
        raise typer.Exit(code)
    out.print(f"{settings.mcp_config}: {len(servers)} server(s) OK: {', '.join(servers) or '(none)'}")


@cli.command()
def demo(
    path: Annotated[Path, typer.Option("--config", "-c", help="Where to write the demo mcpServers file.")] = Path(
        "mcp.json"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Write an mcpServers file that runs the bundled demo server, and a .env with a new AUTH_TOKEN if none exists.

    Example: mcp-bastion demo --config mcp.json
    """
    try:
        if path.exists() and not force:
            out.print(f"{path} exists; keeping it (use --force to overwrite)")
        else:
            document = {"mcpServers": {"demo": {"command": sys.executable, "args": ["-m", "mcp_bastion.demo_server"]}}}
            write_private(path, json.dumps(document, indent=2) + "\n")
            out.print(f"wrote {path}")
        if not env_file.exists():
            write_private(
                env_file,
                f"# mcp-bastion settings and secrets (keep this file mode 0600)\n"
                f"AUTH_TOKEN={new_token()}\nSESSION_SECRET={new_token()}\n",
            )
            out.print(f"wrote {env_file} with a new AUTH_TOKEN (mode 0600)")
    except OSError as exc:
        fail(f"cannot write: {exc}", "run it in a directory you can write to, or pass --config PATH --env-file PATH")


@cli.command()
def version() -> None:
    """Print the version.

    Example: mcp-bastion version
    """
    out.print(__version__)
