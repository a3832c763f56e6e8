"""Settings (pydantic-settings) and the `mcpServers` file. The only module that reads the environment.

Precedence, pinned by a test: CLI flag > environment > `.env` > default.
"""

import ipaddress
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from mcp_bastion.access.routes import RESERVED_SERVER_NAMES
from mcp_bastion.breaker import BREAKER_OPEN_S, DEPENDENCY_TIMEOUT_S
from mcp_bastion.errors import ConfigError

SECURITY_LOG_NAME = "security.jsonl"  # the default security audit file, next to AUDIT_LOG
SERVER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Settings(BaseSettings):
    """Every gateway setting, read once at the edge (the CLI) and frozen."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False, env_file=None)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 3001
    mcp_config: Path = Path("mcp.json")
    log_dir: Path = Path("logs")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # 4 MiB is the SDK's default body cap; MCP requests are small, results travel the other way.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    # One NDJSON line from a child. Servers send a result twice (content + structuredContent): a 30 MiB file read is
    # a ~62 MiB line. A large result passes through as the child's bytes: each one in flight costs ~1x its line in
    # RSS, 2x on HTTP+SSE (bench/RESULTS.md, Issue 11 item 1).
    child_line_max_bytes: Annotated[int, Field(ge=16 * 1024 * 1024)] = 64 * 1024 * 1024
    # A call with no answer and no progress notification for this long times out (progress resets it: Issue 11).
    request_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # However much progress it reports, a call ends this long after it was sent: a tool stuck in a progress loop
    # must not pin a request forever (Issue 11 item 2); maxTotalSeconds per server overrides it.
    request_max_total_s: Annotated[float, Field(gt=0)] = 3600.0
    session_idle_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    max_sessions: Annotated[int, Field(ge=1)] = 10_000
    # Legacy sessions one principal may hold open: one token must not fill MAX_SESSIONS for everyone.
    max_sessions_per_principal: Annotated[int, Field(ge=1)] = 100
    # Open HTTP+SSE and Streamable GET streams per principal: each pins a socket and a task for as long as it lives.
    max_streams_per_principal: Annotated[int, Field(ge=1)] = 50
    # A Streamable session with no open stream and no call in flight is forgotten after this much idleness (below
    # SESSION_IDLE_TIMEOUT_S): its client vanished without DELETE. Also read as SESSION_ORPHAN_TIMEOUT_S (Issue 9).
    session_idle_no_stream_s: Annotated[
        float, Field(gt=0, validation_alias=AliasChoices("session_idle_no_stream_s", "session_orphan_timeout_s"))
    ] = 300.0
    # Requests one session may have waiting on a child; past it the next is refused without reaching the child.
    max_inflight_per_session: Annotated[int, Field(ge=1)] = 64
    # Bytes queued for one session's stream; a client that stops reading past it loses the stream and the session.
    outbox_max_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * 1024 * 1024
    sse_keepalive_s: Annotated[float, Field(gt=0)] = 15.0
    # SSE resumability (Issue 11 item 7): events kept per Streamable session for Last-Event-ID replay (0: no ids).
    sse_replay_max_events: Annotated[int, Field(ge=0)] = 256
    # Bytes of those kept events per session: an answer larger than this is written but cannot be replayed.
    sse_replay_max_bytes: Annotated[int, Field(ge=0)] = 4 * 1024 * 1024
    restart_backoff_initial_s: Annotated[float, Field(gt=0)] = 0.5
    restart_backoff_max_s: Annotated[float, Field(gt=0)] = 30.0
    restart_max_attempts: Annotated[int, Field(ge=0)] = 5
    stable_uptime_s: Annotated[float, Field(gt=0)] = 30.0
    shutdown_grace_s: Annotated[float, Field(gt=0)] = 2.0
    # A call on an existing session that arrives while its shared child restarts waits this long for it (then a
    # JSON-RPC error with retryAfterSeconds); new sessions wait as long. 0: fail at once, as before Issue 9.
    restart_hold_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    # A running child silent this long is sent an MCP ping: a hung child is found even when nobody calls it.
    ping_interval_s: Annotated[float, Field(gt=0)] = 15.0
    # A ping unanswered this long counts as one missed answer (as does a call that times out).
    ping_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # Missed answers in a row (pings, call timeouts) after which a child is `unresponsive` and restarted.
    unresponsive_after: Annotated[int, Field(ge=1)] = 3
    # Children spawned and initializing at once: 20 sessions opening together must not starve the event loop.
    spawn_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    # After a crash loop ends in `failed`, one more try this often (a dependency may come back); 0: never.
    failed_retry_s: Annotated[float, Field(ge=0)] = 300.0
    initialize_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # A client must send a whole request head within this, or be closed (408): slow heads pin sockets before auth.
    head_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Request line + headers (431 past it): Node's default, so what reached the Express server still fits.
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    # Open connections before new ones get a 503; unset: derived from RLIMIT_NOFILE, leaving descriptors for children.
    max_connections: Annotated[int | None, Field(ge=1)] = None
    # An idle kept-alive connection is closed after this many seconds.
    keepalive_timeout_s: Annotated[int, Field(ge=1, le=300)] = 5

    # --- security (names kept from the Express server where it had them) ---
    auth_token: SecretStr | None = None
    session_secret: SecretStr | None = None
    allowed_ips: str = "127.0.0.1,::1"
    trusted_proxies: str = ""
    # The one forwarded header believed from TRUSTED_PROXIES: X-Forwarded-For or Forwarded (never both).
    forwarded_header: str = "X-Forwarded-For"
    allowed_origins: str = ""
    allowed_hosts: str = ""
    # The Express server's limit, for what it protected: unauthenticated requests and login attempts per address.
    rate_limit_window_ms: Annotated[int, Field(ge=1000)] = 900_000
    rate_limit_max_requests: Annotated[int, Field(ge=1)] = 100
    # Per principal per window, enforced per minute (18,000 / 15 min = 1,200 a minute): an agent's burst of 1,000
    # calls plus its handshake fits in one minute; one runaway token cannot take the window in a burst (Issue 10).
    rate_limit_token_max_requests: Annotated[int, Field(ge=1)] = 18_000
    auth_failure_limit: Annotated[int, Field(ge=1)] = 10
    redis_url: SecretStr | None = None
    store_url: SecretStr | None = None
    # One Redis call (store or shared rate limit) taking longer counts as a failure: a frozen Redis costs this, not 5 s.
    redis_timeout_s: Annotated[float, Field(gt=0, le=30)] = DEPENDENCY_TIMEOUT_S
    # After an outage is seen, requests needing Redis get 503 at once for this long, then one probe is let through.
    redis_breaker_open_s: Annotated[float, Field(gt=0, le=600)] = BREAKER_OPEN_S
    audit_log: Path = Path("logs/audit.jsonl")
    audit_max_bytes: Annotated[int, Field(ge=4096)] = 10 * 1024 * 1024
    audit_backups: Annotated[int, Field(ge=0)] = 5
    # Refusal lines per client IP and window before the rest become one summary line (noise cannot rotate the log).
    audit_refusals_per_ip: Annotated[int, Field(ge=1)] = 20
    # The window those refusals are counted in; a quiet IP's summary line is written at most this late.
    audit_refusal_window_s: Annotated[float, Field(gt=0)] = 60.0
    # Security events in a file of their own, so call lines cannot rotate them away; unset: security.jsonl next to
    # AUDIT_LOG. 11 x 32 MiB hold ~9 days of a busy gateway's (~160k lines, 40 MiB a day: docs/security.md).
    security_log: Path | None = None
    security_max_bytes: Annotated[int, Field(ge=4096)] = 32 * 1024 * 1024
    security_backups: Annotated[int, Field(ge=0)] = 10
    session_ttl_s: Annotated[float, Field(gt=0)] = 86_400.0
    # How soon a token revoked elsewhere (the CLI, another instance) ends the sessions and streams it opened.
    revocation_check_s: Annotated[float, Field(gt=0)] = 2.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Plain HTTP off loopback is refused unless this says a proxy in front terminates TLS (tokens stay encrypted).
    allow_plaintext: bool = False
    # Loopback only, loudly warned: for the conformance suite and local experiments, never for a deploy.
    insecure_no_auth: bool = False

    # --- OAuth 2.1 resource server (Issue 13): access tokens from an identity provider, next to named tokens ---
    # The gateway's external base URL: only an identifier (resources are PUBLIC_URL and PUBLIC_URL/mcp/NAME).
    public_url: str | None = None
    oauth_issuer: str | None = None  # exact `iss`; discovery (RFC 8414 / OpenID) finds the JWKS when it is unset
    oauth_jwks_url: str | None = None
    oauth_audience: str | None = None  # unset: the resource identifier itself (RFC 8707 audience binding)
    oauth_scope_prefix: str = ""  # stripped from the token's scopes before they are read with the scope grammar
    oauth_principal_claim: str = "sub"
    oauth_client_id: str | None = None  # the gateway's own credentials at the introspection endpoint
    oauth_client_secret: SecretStr | None = None
    oauth_introspection_url: str | None = None  # RFC 7662, for opaque tokens
    # Clock skew tolerated on exp / nbf / iat; 5 minutes is the most any IdP's documentation asks for.
    oauth_leeway_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    # An IdP scope `admin` makes a gateway admin only with this opt-in: users may be able to ask their IdP for it.
    oauth_allow_admin_scope: bool = False

    @field_validator("public_url", "oauth_issuer", "oauth_jwks_url", "oauth_introspection_url")
    @classmethod
    def _oauth_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        problem = url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        if info.field_name != "public_url" and info.data.get("public_url") is None:
            raise ValueError("needs PUBLIC_URL (the resource identifiers derive from it)")
        if info.field_name == "oauth_introspection_url":
            if not info.data.get("oauth_client_id") or info.data.get("oauth_client_secret") is None:
                raise ValueError("needs OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET")
        return value.rstrip("/") if info.field_name == "public_url" else value

    @field_validator("oauth_principal_claim")
    @classmethod
    def _claim_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
            raise ValueError("a claim name is 1-64 characters of A-Z a-z 0-9 _ . : -")
        return value

    # --- cluster (Issue 12): on when REDIS_URL is set ---
    # Seals session ids and signs forwarded hops between instances; required (>= 32 chars) in cluster mode.
    cluster_secret: SecretStr | None = None
    # The base URL other instances reach this one at; defaults to http://127.0.0.1:PORT for a loopback bind.
    cluster_advertise_url: str | None = None
    # This instance's name in audit lines, /health and `status`; generated at start when unset.
    instance_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = Field(
        default_factory=lambda: secrets.token_hex(4)
    )
    # How often an instance renews its record in Redis; a dead one's sessions answer 404 within 2 x this.
    cluster_heartbeat_s: Annotated[float, Field(gt=0, le=60)] = 1.0

    # --- built-in OAuth 2.1 authorization server (Issue 14): AUTHORIZATION_SERVER=builtin, needs PUBLIC_URL ---
    authorization_server: Literal["", "builtin"] = ""
    # An access token it issues lives this long: a leaked one is bounded by it, and a refresh is cheap.
    oauth_access_token_ttl_s: Annotated[float, Field(ge=60, le=86_400)] = 3600.0
    # A grant (and every refresh token of its family) ends this long after consent: the operator approves again.
    oauth_grant_ttl_s: Annotated[float, Field(ge=3600, le=366 * 86_400)] = 30 * 86_400.0
    # A dynamically registered client that completes no grant within this is forgotten (registration spam).
    oauth_client_unused_ttl_s: Annotated[float, Field(ge=60, le=366 * 86_400)] = 86_400.0
    # Registrations accepted per OAUTH_CLIENT_UNUSED_TTL_S from all addresses together: what unapproved ones can
    # pile up to (a few KiB each) when registrations come from many addresses; real clients number in the tens.
    oauth_unapproved_clients_max: Annotated[int, Field(ge=1)] = 10_000
    # The signing keys (0600); instances behind one balancer share the file, as they share the TLS key.
    oauth_signing_key_file: Path = Path("data/oauth-signing-keys.json")
    # Tests only: Client ID Metadata Documents may be fetched from loopback addresses (never private ones).
    oauth_cimd_allow_loopback: bool = False

    @field_validator("authorization_server")
    @classmethod
    def _builtin_needs_public_url(cls, value: str, info: ValidationInfo) -> str:
        if value == "builtin" and not info.data.get("public_url"):
            raise ValueError("AUTHORIZATION_SERVER=builtin needs PUBLIC_URL (the issuer and resources derive from it)")
        return value

    @property
    def security_audit_log(self) -> Path:
        """Where security events are written: SECURITY_LOG, else next to AUDIT_LOG (Issue 9 item 8)."""
        return self.security_log or security_log_for(self.audit_log)

    @property
    def tls(self) -> bool:
        """Whether the gateway serves HTTPS itself."""
        return self.tls_cert_file is not None and self.tls_key_file is not None


def security_log_for(audit_log: Path) -> Path:
    """The default security file of an audit log: `security.jsonl` in the same directory (never the log itself)."""
    beside = audit_log.with_name(SECURITY_LOG_NAME)
    return beside if beside != audit_log else audit_log.with_name(f"{audit_log.stem}.security{audit_log.suffix}")


def url_problem(url: str) -> str | None:
    """Why `url` cannot name an issuer, a JWKS, an introspection endpoint or the public URL, or None: https only
    (tokens and keys must not travel in clear), plain http on loopback only (tests), no query, fragment or userinfo."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{url!r} is not an absolute http(s) URL"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return f"{url!r} must use https:// (plain http only on a loopback address)"
    if parts.query or parts.fragment or parts.username is not None:
        return f"{url!r} may not carry a query, a fragment or credentials"
    return None


def split_list(value: str) -> list[str]:
    """A comma-separated setting as a list (blanks dropped)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def default_store_url(env_file: Path | None) -> str:
    """The SQLite file next to the .env in use, so `serve` and every CLI command run there share it."""
    base = (env_file.parent if env_file is not None else Path(".")).resolve()
    return f"sqlite://{base / 'data' / 'bastion.db'}"


PER_MINUTE_MAX = 1_000_000  # a `perMinute` above this is a typo, not a limit


class ToolRateLimit(BaseModel):
    """`rateLimit.tools.NAME` of a server: calls of one tool per principal per minute (Issue 10 item 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    per_minute: int = Field(ge=1, le=PER_MINUTE_MAX, alias="perMinute")


class ServerRateLimit(BaseModel):
    """`rateLimit` of a server (Issue 10 item 1): `perMinute` caps every request of one principal to the server;
    `tools` caps the calls of single tools (on top of the server's cap)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    per_minute: int | None = Field(default=None, ge=1, le=PER_MINUTE_MAX, alias="perMinute")
    tools: dict[str, ToolRateLimit] = Field(default_factory=dict)


class ServerSpec(BaseModel):
    """One entry of `mcpServers`: Claude Desktop's keys plus our per-server extensions."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    type: Literal["stdio"] = "stdio"
    disabled: bool = False
    description: str | None = None
    isolation: Literal["shared", "per-session"] = "shared"
    auto_start: bool = Field(default=True, alias="autoStart")
    timeout_seconds: float | None = Field(default=None, gt=0, alias="timeoutSeconds")
    max_total_seconds: float | None = Field(default=None, gt=0, alias="maxTotalSeconds")
    allowed_tools: tuple[str, ...] | None = Field(default=None, alias="allowedTools")
    # Once any of the three is set, a kind it leaves out is closed (access.scopes.ServerLimits).
    allowed_resources: tuple[str, ...] | None = Field(default=None, alias="allowedResources")
    allowed_prompts: tuple[str, ...] | None = Field(default=None, alias="allowedPrompts")
    rate_limit: ServerRateLimit | None = Field(default=None, alias="rateLimit")
    # A shared child's log messages go only to the client they provably belong to; true sends every one to everyone.
    share_logs: bool = Field(default=False, alias="shareLogs")

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_names_tools(cls, value: ServerRateLimit | None, info: ValidationInfo) -> ServerRateLimit | None:
        if value is None:
            return None
        if value.per_minute is None and not value.tools:
            raise ValueError('set "perMinute" or "tools" (or remove rateLimit)')
        allowed = info.data.get("allowed_tools")
        for tool in value.tools:
            if not tool:
                raise ValueError("a tool name in tools is empty")
            if allowed is not None and tool not in allowed:
                raise ValueError(f"tool {tool!r} is not in allowedTools, so it can never be called")
        return value


def load_settings(env_file: Path | None, **flags: Any) -> Settings:
    """Build the frozen Settings: flags (non-None) > environment > env_file > defaults.

    Raises:
        ConfigError: a value has the wrong type or range; the message names the setting.
    """
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return Settings(_env_file=env_file if env_file and env_file.exists() else None, **given)  # type: ignore[call-arg]
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]).upper() if first["loc"] else "?"
        raise ConfigError(f"setting {key}: {first['msg'].removeprefix('Value error, ')}") from None


def variables(env_file: Path | None) -> dict[str, str]:
    """The values `${VAR}` may take: the `.env` file, overridden by the process environment."""
    found: dict[str, str] = {}
    if env_file is not None and env_file.exists():
        found.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    found.update(os.environ)
    return found


def load_servers(path: Path, variables: dict[str, str]) -> dict[str, ServerSpec]:
    """Read an `mcpServers` file, substitute `${VAR}`, validate every entry.

    Raises:
        ConfigError: one line naming the file, the server and the key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the server file ({exc.strerror})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(document, dict) or not isinstance(document.get("mcpServers"), dict):
        raise ConfigError(f'{path}: expected an object with an "mcpServers" object')
    unknown = set(document) - {"mcpServers", "$schema"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}")
    servers: dict[str, ServerSpec] = {}
    for name, entry in document["mcpServers"].items():
        spec = _server_spec(path, name, entry, variables)
        if not spec.disabled:
            servers[name] = spec
    return servers


def _server_spec(path: Path, name: str, entry: Any, variables: dict[str, str]) -> ServerSpec:
    where = f"{path}: server {name!r}"
    if not SERVER_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{where}: the name must be 1-64 characters of A-Z a-z 0-9 _ . -")
    if name in RESERVED_SERVER_NAMES:
        raise ConfigError(f"{where}: the name is reserved (it is a route: /mcp/{name})")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object")
    if "url" in entry:
        raise ConfigError(f"{where}: key 'url': remote servers are not hosted; only stdio servers (command)")
    entry = {key: _substitute(value, variables, f"{where}: key {key!r}") for key, value in entry.items()}
    try:
        spec = ServerSpec.model_validate({**entry, "name": name})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "?"
        reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: key {key!r}: {reason}") from None
    _check_command(where, spec)
    return spec


def _substitute(value: Any, variables: dict[str, str], where: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in variables:
                return variables[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: variable ${{{name}}} is not set in the environment or .env")

        return _VAR.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(item, variables, where) for item in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, where) for k, v in value.items()}
    return value


def _check_command(where: str, spec: ServerSpec) -> None:
    if spec.disabled:
        return
    search_path = spec.env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(spec.command, path=search_path) is None:
        raise ConfigError(f"{where}: key 'command': {spec.command!r} is not found or not executable")


def is_loopback(host: str) -> bool:
    """True when `host` is this machine only: `localhost` or a loopback address, never a name that starts like one
    (`127.0.0.1.nip.io` resolves anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# What a child inherits from the gateway's environment: enough to find programs and speak a locale,
# never a credential. Everything else a child needs it declares in its `env`.
CHILD_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR")


def child_base_env() -> dict[str, str]:
    """The allowlisted part of the gateway's environment that every child starts from."""
    return {key: os.environ[key] for key in CHILD_ENV_ALLOWLIST if key in os.environ}
