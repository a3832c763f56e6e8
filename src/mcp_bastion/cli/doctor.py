"""`doctor`: static checks of the installation, and `--live` security tests against a running server.

Static checks read the settings, the `.env`, the `mcpServers` file, the TLS files, the audit log directory and
the store, and call `serve`'s own preflight, so doctor and serve never disagree about what is refused. Live checks
replace the security guide's curl tests by hand. Neither prints a secret: a suspicious argument is named by its
server and index, a token never appears in the output.

HTTP goes through `httpx2`, which `mcp` (a runtime dependency) requires, so it is present wherever
`pip install mcp-bastion` ran; `httpx` is only a test dependency.
"""

import asyncio
import json
import math
import os
import re
import ssl
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import typer
from rich.text import Text

if TYPE_CHECKING:
    import httpx2

from mcp_bastion.cli.authserver import check_authserver
from mcp_bastion.cli.base import ConfigFile, EnvFile, JsonFlag, cli, fail, out
from mcp_bastion.cli.output import Col, listing
from mcp_bastion.cli.preflight import Finding, env_file_finding, findings, refusals, warnings
from mcp_bastion.config import (
    ServerSpec,
    Settings,
    default_store_url,
    is_loopback,
    load_servers,
    load_settings,
    variables,
)
from mcp_bastion.errors import ConfigError, GatewayError
from mcp_bastion.oauth import oauth_config
from mcp_bastion.oauth.probe import probe_issuer
from mcp_bastion.store import Store, open_store

Status = Literal["PASS", "WARN", "FAIL"]
STYLE = {"PASS": "bold green", "WARN": "bold yellow", "FAIL": "bold red"}
STATUS_OF: dict[str, Status] = {"refuse": "FAIL", "warn": "WARN", "ok": "PASS"}
STORE_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 10.0
RATE_LIMIT_BOUND = 1000  # requests sent at most while looking for the 429
RATE_LIMIT_TIME_CAP_S = 60.0
FOREIGN_ORIGIN = "https://doctor.foreign-origin.invalid"
WRONG_TOKEN = "mcpb_doctor-wrong-token-" + "x" * 24  # deliberately not a valid token
NO_TOKEN, WRONG, GOOD, ORIGIN = "no token → 401", "wrong token → 401", "good token → 200", "foreign Origin → 403"
HEADERS, RATE_LIMIT = "security headers", "rate limit → 429"
SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy")

# --- secrets in `args` -------------------------------------------------------------------------------------------
KNOWN_PREFIX = re.compile(
    r"(?:^|[^A-Za-z0-9])(?:sk-[A-Za-z0-9_-]{16,}|sk_(?:live|test)_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{16,}"
    r"|AIza[0-9A-Za-z_-]{30,}|mcpb_[A-Za-z0-9_-]{20,})"
)
SECRET_FLAG = re.compile(
    r"^--?(?:[a-z0-9]+[-_])*(?:token|api[-_]?key|apikey|secret|password|passwd|pwd|auth|credentials?|access[-_]?key"
    r"|private[-_]?key|client[-_]?secret|bearer)$",
    re.IGNORECASE,
)
SECRET_VAR = re.compile(
    r"\$\{[A-Za-z0-9_]*(?:TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|PAT)[A-Za-z0-9_]*(?::-[^}]*)?\}"
)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@:\s]*:[^/@\s]+@", re.IGNORECASE)
OPAQUE = re.compile(r"[A-Za-z0-9_+=-]{24,}")
MIN_ENTROPY_BITS = 3.5


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, what was found, how to fix it."""

    check: str
    status: Status
    detail: str
    hint: str = ""


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _opaque(value: str) -> bool:
    """A long random-looking string: letters and digits mixed, high Shannon entropy, not a word or a path."""
    return (
        OPAQUE.fullmatch(value) is not None
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and _entropy(value) >= MIN_ENTROPY_BITS
    )


def secret_args(args: list[str]) -> list[tuple[int, str, Status]]:
    """(index, why, severity) of every argument that looks like a secret. The value itself is never returned."""
    found: dict[int, tuple[str, Status]] = {}
    for index, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if SECRET_VAR.search(arg):
            found.setdefault(index, ("a secret-named ${VAR} passed as an argument", "FAIL"))
        elif KNOWN_PREFIX.search(arg):
            found.setdefault(index, ("a known API key or token format", "FAIL"))
        elif URL_PASSWORD.search(arg):
            found.setdefault(index, ("a URL with a password in it", "FAIL"))
        elif SECRET_FLAG.fullmatch(flag) and sep and value:
            found.setdefault(index, (f"the value of {flag}", "FAIL"))
        elif _opaque(value if sep else arg):
            found.setdefault(index, ("a long high-entropy string", "WARN"))
        if not sep and SECRET_FLAG.fullmatch(arg) and index + 1 < len(args) and not args[index + 1].startswith("-"):
            found[index + 1] = (f"the value of {arg}", "FAIL")
    return [(index, why, level) for index, (why, level) in sorted(found.items())]


def _raw_args(path: Path) -> dict[str, list[str]]:
    """Every server's `args` as written in the file (before ${VAR} substitution), whatever else is wrong with it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = document["mcpServers"]
        return {
            str(name): [str(a) for a in entry.get("args", [])]
            for name, entry in entries.items()
            if isinstance(entry, dict) and isinstance(entry.get("args", []), list)
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


# --- static checks -------------------------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def row(finding: Finding) -> Check:
    """A preflight finding as a row of the report (refuse FAIL, warn WARN, ok PASS)."""
    return Check(finding.name, STATUS_OF[finding.level], finding.message, finding.fix)


def check_servers(settings: Settings, env_file: Path) -> tuple[Check, dict[str, ServerSpec]]:
    try:
        servers = load_servers(settings.mcp_config, variables(env_file))
    except ConfigError as exc:
        return Check("servers", "FAIL", exc.message, "fix that entry; `mcp-bastion check-config` re-checks it"), {}
    names = ", ".join(servers) or "(none)"
    return Check("servers", "PASS", f"{len(servers)} server(s), every command found: {names}"), servers


def check_secrets_in_args(path: Path, servers: dict[str, ServerSpec]) -> list[Check]:
    hint = 'move it into the server\'s "env" (e.g. "env": {"API_KEY": "${API_KEY}"}): arguments are visible in `ps`'
    flagged: dict[tuple[str, int], tuple[str, Status]] = {}
    sources = [_raw_args(path), {name: list(s.args) for name, s in servers.items()}]
    for source in sources:
        for name, args in source.items():
            for index, why, level in secret_args(args):
                flagged.setdefault((name, index), (why, level))
    if not flagged:
        return [Check("secrets in args", "PASS", "no argument looks like a secret")]
    return [
        Check("secrets in args", level, f"server {name!r} args[{index}]: {why}", hint)
        for (name, index), (why, level) in sorted(flagged.items())
    ]


def check_audit_log(settings: Settings) -> Check:
    log = settings.audit_log
    directory = log.parent
    if log.exists():
        if not os.access(log, os.W_OK):
            return Check("audit log", "FAIL", f"{log} is not writable", f"chown/chmod {log} for the gateway's user")
        if _mode(log) & 0o077:
            return Check("audit log", "WARN", f"{log} is readable by group or others", f"chmod 600 {log}")
        return Check("audit log", "PASS", f"{log} is writable and private")
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check(
            "audit log",
            "FAIL",
            f"cannot create {log}: {existing} is not a writable directory",
            f"create {directory} writable by the gateway's user, or set AUDIT_LOG",
        )
    return Check("audit log", "PASS", f"{directory} is writable ({log.name} is created at start)")


async def _count_tokens(store: Store) -> int:
    try:
        return len(await asyncio.wait_for(store.list_tokens(), STORE_TIMEOUT_S))
    finally:
        await store.close()


def check_store(settings: Settings, env_file: Path) -> tuple[Check, int | None]:
    """Whether the store answers, and how many tokens it holds (None when it is unusable); never creates it."""
    url = settings.store_url.get_secret_value() if settings.store_url else default_store_url(env_file)
    scheme = url.split("://", 1)[0]
    hint = "set STORE_URL to sqlite:///absolute/path, redis://host:port/0 or memory://"
    if scheme == "sqlite":
        path = Path(url.removeprefix("sqlite://"))
        if path.is_absolute() and not path.exists():
            existing = path.parent
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if not os.access(existing, os.W_OK | os.X_OK):
                return Check("store", "FAIL", f"cannot create {path}: {existing} is not writable", hint), None
            return Check("store", "PASS", f"sqlite: {path} is created at first start"), 0  # holding nothing
    try:
        count = asyncio.run(_count_tokens(open_store(url)))
    except (GatewayError, OSError, TimeoutError) as exc:
        reason = exc.message if isinstance(exc, GatewayError) else (str(exc) or type(exc).__name__)
        return Check("store", "FAIL", f"{scheme} store unreachable: {reason}", hint), None
    if scheme == "sqlite":
        path = Path(url.removeprefix("sqlite://"))
        if _mode(path) & 0o077:
            warn = Check("store", "WARN", f"{path} is readable by group or others", f"chmod 600 {path}")
            return warn, count
    return Check("store", "PASS", f"{scheme} store answers ({count} named token(s))"), count


def check_start(found: list[Finding], store_usable: bool) -> Check:
    """Whether `serve` would start: the verdict of the same findings (cli/preflight.py) shown above."""
    note = "" if store_usable else " (store unusable: judged as if it held no tokens)"
    if refused := refusals(found):
        return Check(
            "serve start-up", "FAIL", f"serve refuses to start: {refused[0].line()}{note}", "fix the setting named"
        )
    if warned := warnings(found):
        return Check("serve start-up", "PASS", f"serve starts, with {len(warned)} warning(s) (see above){note}")
    return Check("serve start-up", "PASS", f"serve starts without warnings{note}")


def check_oauth(settings: Settings) -> list[Check]:
    """With OAUTH_ISSUER set (Issue 13): the issuer's metadata and signing keys are reachable and usable."""
    config = oauth_config(settings)
    if config is None or settings.oauth_issuer is None:
        return []
    hint = "check OAUTH_ISSUER (exactly the `iss` of its tokens) / OAUTH_JWKS_URL and that this host reaches them"
    probes = asyncio.run(probe_issuer(config))
    return [Check(p.check, "PASS" if p.ok else "FAIL", p.detail, "" if p.ok else hint) for p in probes]


def static_checks(env_file: Path, config: Path | None) -> list[Check]:
    checks = [row(env_file_finding(env_file))]
    try:
        settings = load_settings(env_file, mcp_config=config)
    except ConfigError as exc:
        checks.append(Check("settings", "FAIL", exc.message, "fix that value in the environment or the .env"))
        return checks
    checks.append(Check("settings", "PASS", "every setting is valid"))
    store_check, stored = check_store(settings, env_file)
    found = findings(settings, env_file, lambda: stored or 0)
    checks += [row(f) for f in found[1:]]  # the env file's finding is the first row already
    servers_check, servers = check_servers(settings, env_file)
    checks.append(servers_check)
    checks += check_secrets_in_args(settings.mcp_config, servers)
    checks.append(check_audit_log(settings))
    checks += check_oauth(settings)
    checks += [Check(*row) for row in check_authserver(settings)]  # Issue 14: the built-in authorization server
    checks.append(store_check)
    checks.append(check_start(found, store_usable=stored is not None))
    return checks


# --- live checks ---------------------------------------------------------------------------------------------------
def _missing_headers(response: "httpx2.Response", tls: bool) -> list[str]:
    wanted = [*SECURITY_HEADERS, "strict-transport-security"] if tls else list(SECURITY_HEADERS)
    return [name for name in wanted if name not in response.headers]


def _status(response: "httpx2.Response") -> str:
    return f"got {response.status_code}"


@dataclass
class Live:
    """What the live probes share: the client, the server's base URL, the token, and the responses to inspect."""

    client: "httpx2.Client"
    base: str
    token: str
    responses: dict[str, "httpx2.Response"] = field(default_factory=dict)

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def tls(self) -> bool:
        return self.base.lower().startswith("https://")

    def get_health(self, **headers: str) -> "httpx2.Response":
        return self.client.get(self.health, headers=headers)


def probe_no_token(live: Live) -> Check:
    r = live.responses["401"] = live.get_health()
    if r.status_code != 401:
        detail = f"{_status(r)}: the server answers without a token"
        return Check(NO_TOKEN, "FAIL", detail, "turn authentication on: set AUTH_TOKEN and remove INSECURE_NO_AUTH")
    if "bearer" not in r.headers.get("www-authenticate", "").lower():
        return Check(NO_TOKEN, "FAIL", "401 without WWW-Authenticate: Bearer", "upgrade the gateway")
    return Check(NO_TOKEN, "PASS", "401 with WWW-Authenticate: Bearer")


def probe_wrong_token(live: Live) -> Check:
    r = live.get_health(Authorization=f"Bearer {WRONG_TOKEN}")
    if r.status_code != 401:
        detail = f"{_status(r)}: a wrong token is accepted"
        return Check(WRONG, "FAIL", detail, "turn authentication on: set AUTH_TOKEN and remove INSECURE_NO_AUTH")
    return Check(WRONG, "PASS", "401")


def probe_good_token(live: Live) -> Check:
    r = live.responses["200"] = live.get_health(Authorization=f"Bearer {live.token}")
    if r.status_code != 200:
        hint = "check the token (AUTH_TOKEN, or a named token with the admin scope) and ALLOWED_IPS"
        return Check(GOOD, "FAIL", f"{_status(r)} for GET /health with the token", hint)
    return Check(GOOD, "PASS", "200 for GET /health")


def probe_foreign_origin(live: Live) -> Check:
    r = live.get_health(Authorization=f"Bearer {live.token}", Origin=FOREIGN_ORIGIN)
    if r.status_code != 403:
        hint = "the Origin check is off: is a proxy stripping or rewriting Origin?"
        return Check(ORIGIN, "FAIL", f"{_status(r)} for Origin: {FOREIGN_ORIGIN}", hint)
    return Check(ORIGIN, "PASS", "403")


def probe_headers(live: Live) -> Check:
    """The security headers on the answers the probes before kept (200 and 401)."""
    if not live.responses:
        return Check(HEADERS, "FAIL", "no response to inspect", "see the server's log")
    missing = sorted({name for r in live.responses.values() for name in _missing_headers(r, live.tls)})
    if missing:
        return Check(
            HEADERS, "FAIL", f"missing: {', '.join(missing)}", "a proxy may be stripping them; pass them through"
        )
    names = "CSP, X-Content-Type-Options, X-Frame-Options, Referrer-Policy" + (", HSTS" if live.tls else "")
    return Check(HEADERS, "PASS", f"{names} on 200 and 401")


def probe_rate_limit(live: Live) -> Check:
    return _rate_limit(live.client, f"{live.base}/.well-known/oauth-protected-resource")


# The live checks, run in this order (the headers probe inspects what the token probes kept).
PROBES: list[tuple[str, Callable[[Live], Check]]] = [
    (NO_TOKEN, probe_no_token),
    (WRONG, probe_wrong_token),
    (GOOD, probe_good_token),
    (ORIGIN, probe_foreign_origin),
    (HEADERS, probe_headers),
    (RATE_LIMIT, probe_rate_limit),
]


def live_checks(url: str, token: str, *, skip_rate_limit: bool, verify: bool | ssl.SSLContext) -> list[Check]:
    """Whether the server answers, then each probe of PROBES in order (a failed request fails only its probe)."""
    import httpx2  # lazily: only `doctor --live` needs an HTTP client, the server never does

    with httpx2.Client(timeout=HTTP_TIMEOUT_S, verify=verify, follow_redirects=False) as client:
        live = Live(client, url.rstrip("/"), token)
        try:
            answer = client.get(f"{live.base}/livez")
        except httpx2.HTTPError as exc:
            hint = "is the server running, and is the URL (scheme, host, port) right?"
            return [Check("reachable", "FAIL", f"cannot reach {live.base}: {type(exc).__name__}", hint)]
        checks = [
            Check("reachable", "PASS", f"GET /livez answered {answer.status_code}")
            if answer.status_code < 500
            else Check("reachable", "FAIL", f"GET /livez answered {answer.status_code}", "see the server's log")
        ]
        for name, probe in PROBES:
            if skip_rate_limit and name == RATE_LIMIT:
                continue
            try:
                checks.append(probe(live))
            except httpx2.HTTPError as exc:
                checks.append(Check(name, "FAIL", f"request failed: {type(exc).__name__}", "see the server's log"))
    return checks


def _rate_limit(client: "httpx2.Client", public: str) -> Check:
    """Unauthenticated requests to a public route until a 429: what the per-address limit counts (Issue 10 item 1:
    an authenticated request never counts there), in every mode, without work for the store."""
    name = "rate limit → 429"
    deadline = time.monotonic() + RATE_LIMIT_TIME_CAP_S
    for sent in range(1, RATE_LIMIT_BOUND + 1):
        try:
            r = client.get(public)
        except httpx2.HTTPError as exc:
            return Check(name, "FAIL", f"request {sent} failed: {type(exc).__name__}", "see the server's log")
        if r.status_code == 429:
            if "retry-after" not in r.headers:
                return Check(name, "FAIL", f"429 after {sent} request(s) but no Retry-After", "upgrade the gateway")
            return Check(name, "PASS", f"429 after {sent} request(s), Retry-After: {r.headers['retry-after']}s")
        if time.monotonic() > deadline:
            return Check(
                name,
                "FAIL",
                f"no 429 after {sent} request(s) in {RATE_LIMIT_TIME_CAP_S:.0f}s",
                "lower RATE_LIMIT_MAX_REQUESTS (per address and RATE_LIMIT_WINDOW_MS)",
            )
    return Check(
        name,
        "FAIL",
        f"no 429 after {RATE_LIMIT_BOUND} requests",
        "set RATE_LIMIT_MAX_REQUESTS (per address and RATE_LIMIT_WINDOW_MS) below 1000",
    )


# --- output --------------------------------------------------------------------------------------------------------
def report(checks: list[Check], *, as_json: bool, mode: str, strict: bool) -> int:
    failed = any(c.status == "FAIL" for c in checks) or (strict and any(c.status == "WARN" for c in checks))
    counts = Counter(c.status for c in checks)
    document: dict[str, Any] = {
        "mode": mode,
        "ok": not failed,
        "counts": {s: counts.get(s, 0) for s in ("PASS", "WARN", "FAIL")},
        "checks": [asdict(c) for c in checks],
    }
    columns = [
        Col("status", lambda row: Text(row["status"], style=STYLE[row["status"]]), no_wrap=True),
        Col("check", "check", no_wrap=True),
        Col("detail", "detail"),
        Col("fix", "hint"),
    ]
    listing(document["checks"], columns, as_json=as_json, document=document, title=f"mcp-bastion doctor ({mode})")
    if not as_json:
        out.print(
            f"{counts.get('PASS', 0)} passed, {counts.get('WARN', 0)} warning(s), {counts.get('FAIL', 0)} failed",
            style="bold red" if failed else "bold green",
        )
    return 1 if failed else 0


def check_live_url(url: str) -> None:
    """Exit 2 (nothing sent) unless `url` is https, or http to this machine: --live sends the admin token."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        fail(f"--live {url!r} is not a URL", "e.g. --live http://127.0.0.1:3001")
        return
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        fail(f"--live {url!r}: expected an http:// or https:// URL", "e.g. --live http://127.0.0.1:3001")
    if scheme == "http" and not is_loopback(parts.hostname or ""):
        fail(
            f"--live {url}: refusing to send the admin token in clear text off this machine",
            "use https://, or an SSH tunnel to loopback: ssh -L 3001:127.0.0.1:3001 HOST, then --live "
            "http://127.0.0.1:3001",
        )


@cli.command()
def doctor(
    env_file: EnvFile = Path(".env"),
    config: ConfigFile = None,
    as_json: JsonFlag = False,
    live: Annotated[
        str | None,
        typer.Option(
            "--live",
            metavar="URL",
            help="Instead of the static checks, run the security tests against the server at URL.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Token for --live (default: AUTH_TOKEN from --env-file or the environment). "
            "On the command line it is visible in `ps`; prefer the .env."
        ),
    ] = None,
    skip_rate_limit: Annotated[
        bool,
        typer.Option(
            "--skip-rate-limit",
            help="With --live, do not test the rate limit (the test uses up this address's request budget until "
            "RATE_LIMIT_WINDOW_MS passes).",
        ),
    ] = False,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="With --live over https, trust this CA bundle (self-signed).")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on warnings too.")] = False,
) -> None:
    """Check the installation for unsafe settings, or (--live) test a running server's defences.

    Static checks: .env mode, AUTH_TOKEN, bind address and ALLOWED_IPS, CORS, TLS files, the servers' commands,
    secrets written into args, the audit log directory, the store, and whether serve would start.

    Live checks: no token 401, wrong token 401, good token 200, foreign Origin 403, security headers,
    rate limit 429.

    Exit code 1 when a check fails (with --strict, also when one warns), 0 otherwise.

    Example: mcp-bastion doctor --env-file .env --config mcp.json

    Example: mcp-bastion doctor --live http://127.0.0.1:3001 --skip-rate-limit --json
    """
    if live is None:
        checks = static_checks(env_file, config)
        raise typer.Exit(report(checks, as_json=as_json, mode="static", strict=strict))
    check_live_url(live)
    if token is None:
        try:
            settings = load_settings(env_file)
        except ConfigError as exc:
            fail(exc.message, "fix the setting, or pass --token")
            return
        if settings.auth_token is None:
            fail("--live needs a token", f"pass --token or set AUTH_TOKEN in {env_file}")
            return
        token = settings.auth_token.get_secret_value()
    if ca_file is not None and not ca_file.is_file():
        fail(f"--ca-file {ca_file}: no such file", "pass the PEM file of the CA that signed the gateway's certificate")
    checks = live_checks(
        live,
        token,
        skip_rate_limit=skip_rate_limit,
        verify=ssl.create_default_context(cafile=str(ca_file)) if ca_file else True,
    )
    raise typer.Exit(report(checks, as_json=as_json, mode="live", strict=strict))
