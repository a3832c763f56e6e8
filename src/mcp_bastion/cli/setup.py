"""`init`: interactive and scripted first-time setup (.env, mcp.json, TLS), replacing the old setup-secure.sh.

Secrets typed by the operator go to `.env` (mode 0600) and are referenced from `mcp.json` as `${VAR}`; they are
never echoed or printed. The one value printed is the admin token generated here, once.
"""

import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from dotenv import dotenv_values
from rich.console import Console
from rich.markup import escape
from rich.prompt import Confirm, IntPrompt, Prompt
from rich.text import Text

from mcp_bastion.cli.base import JsonFlag, cli, err, fail, out
from mcp_bastion.config import Settings, is_loopback, split_list, variables
from mcp_bastion.files import write_private
from mcp_bastion.security import new_token

LOOPBACK = ["127.0.0.1", "::1"]
EVERYONE = frozenset({"0.0.0.0", "0.0.0.0/0", "::/0", "*", "::"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::"})
# `ip -j addr` answers in milliseconds; a hung one must not hang the setup.
IP_COMMAND_TIMEOUT_S = 3.0
# The opt-in public-address lookup: one small HTTPS request, abandoned quickly when offline.
PUBLIC_LOOKUP_URL = "https://api.ipify.org"
PUBLIC_LOOKUP_TIMEOUT_S = 3.0
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIAL|AUTH|PAT\b", re.IGNORECASE)
_SECRET_PREFIXES = ("sk-", "sk_", "ghp_", "gho_", "github_pat_", "glpat-", "xoxb-", "xoxp-", "AKIA", "AIza", "pplx-")
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.,:/@+=%-]*")
DEMO_DOCUMENT = {"mcpServers": {"demo": {"command": sys.executable, "args": ["-m", "mcp_bastion.demo_server"]}}}
# The questions' console: rich's prompts read their question and their own "invalid answer" lines as markup, so
# this one keeps markup on and every question escapes the data it shows; everything else prints through `err`.
ask = Console(stderr=True, highlight=False)


class TlsMode(StrEnum):
    """How the gateway gets its certificate."""

    none = "none"
    self_signed = "self-signed"
    files = "files"


@dataclass
class SecretRef:
    """One secret a server needs: a `${var}` missing from .env, or a literal (`literal`) to move into .env."""

    server: str
    key: str
    var: str
    literal: str | None = None


@dataclass
class Answers:
    """Everything init writes, gathered from flags or prompts before any file is touched."""

    host: str
    port: int
    allowed_ips: list[str]
    allowed_origins: list[str]
    window_ms: int
    max_requests: int
    tls: TlsMode
    tls_cert: Path | None
    tls_key: Path | None
    secrets: dict[str, str] = field(default_factory=dict)
    document: dict[str, Any] | None = None  # mcp.json to write, or None to leave it as it is
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def addresses_from_ip_json(text: str) -> list[str]:
    """Global and site addresses from `ip -j addr` output (loopback and link-local left out)."""
    found: list[str] = []
    try:
        interfaces = json.loads(text)
    except json.JSONDecodeError:
        return found
    for interface in interfaces if isinstance(interfaces, list) else []:
        for info in interface.get("addr_info", []) if isinstance(interface, dict) else []:
            local = info.get("local") if isinstance(info, dict) else None
            if isinstance(local, str) and _usable(local):
                found.append(local)
    return list(dict.fromkeys(found))


def detect_addresses() -> list[str]:
    """This machine's interface addresses: `ip -j addr` when available, else what the socket module can tell."""
    ip = shutil.which("ip")
    if ip is not None:
        try:
            done = subprocess.run(
                [ip, "-j", "addr"], capture_output=True, text=True, timeout=IP_COMMAND_TIMEOUT_S, check=False
            )
            if done.returncode == 0 and (found := addresses_from_ip_json(done.stdout)):
                return found
        except (OSError, subprocess.TimeoutExpired):
            pass
    return _socket_addresses()


def _socket_addresses() -> list[str]:
    found: list[str] = []
    try:
        found += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    # Connecting a UDP socket sends nothing; it only asks the kernel which source address the default route uses.
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                found.append(str(sock.getsockname()[0]))
        except OSError:
            pass
    return list(dict.fromkeys(a for a in found if _usable(a)))


def _usable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def lookup_public_address() -> str | None:
    """This machine's address as the internet sees it (opt-in; None when offline or the answer is not an IP)."""
    try:
        with urllib.request.urlopen(PUBLIC_LOOKUP_URL, timeout=PUBLIC_LOOKUP_TIMEOUT_S) as reply:
            text = reply.read(64).decode("ascii", "replace").strip()
        return str(ipaddress.ip_address(text))
    except (OSError, ValueError):
        return None


def looks_secret(key: str, value: str) -> bool:
    """Whether a literal env value in mcp.json looks like a credential that belongs in .env."""
    if not value or _REFERENCE.search(value):
        return False
    if _SECRET_NAME.search(key) or value.startswith(_SECRET_PREFIXES):
        return True
    if "://" in value and "@" in value.partition("://")[2]:
        return True  # a URL with user:password
    return len(value) >= 24 and " " not in value and "/" not in value and any(c.isdigit() for c in value)


def find_secrets(document: dict[str, Any], present: dict[str, str]) -> tuple[list[SecretRef], list[str]]:
    """Secrets mcp.json needs: literals to move and `${VAR}`s missing from .env; plus warnings to print."""
    refs: list[SecretRef] = []
    warnings: list[str] = []
    taken = set(present) | SETTING_NAMES
    servers = document.get("mcpServers", {})
    for server, entry in servers.items() if isinstance(servers, dict) else []:
        if not isinstance(entry, dict):
            continue
        env: dict[str, Any] = entry["env"] if isinstance(entry.get("env"), dict) else {}
        args: list[Any] = entry["args"] if isinstance(entry.get("args"), list) else []
        places = [*((key, value, True) for key, value in env.items()), *(("args", arg, False) for arg in args)]
        for key, value, in_env in places:
            if not isinstance(value, str):
                continue
            if in_env and looks_secret(key, value):
                var = _var_name(server, key, taken)
                taken.add(var)
                refs.append(SecretRef(server, key, var, literal=value))
            for match in _REFERENCE.finditer(value):
                name, has_default = match.group(1), match.group(2) is not None
                if name.upper() in SETTING_NAMES:
                    warnings.append(f"server {server!r} references ${{{name}}}, a gateway setting: it would see it")
                elif not has_default and name not in present and all(r.var != name for r in refs):
                    refs.append(SecretRef(server, key, name))
    return refs, warnings


def _var_name(server: str, key: str, taken: set[str]) -> str:
    base = key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and key not in taken else f"{server}_{key}"
    base = re.sub(r"[^A-Za-z0-9_]", "_", base).upper()
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def with_references(document: dict[str, Any], refs: list[SecretRef]) -> dict[str, Any]:
    """A copy of the mcp.json document with every moved literal replaced by its `${VAR}`."""
    copy: dict[str, Any] = json.loads(json.dumps(document))
    for ref in refs:
        if ref.literal is not None:
            copy["mcpServers"][ref.server]["env"][ref.key] = f"${{{ref.var}}}"
    return copy


def render_env(values: dict[str, str]) -> str:
    """A .env file python-dotenv reads back exactly: plain values bare, anything else single-quoted."""
    lines = ["# mcp-bastion settings and secrets, written by `mcp-bastion init`. Keep this file mode 0600."]
    for key, value in values.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"{key}: a value cannot span lines")
        if not _PLAIN_VALUE.fullmatch(value):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def check_ips(values: list[str]) -> str | None:
    """Why an allowlist is invalid, or None."""
    if not values:
        return "the allowlist is empty: no client could connect (use 127.0.0.1 for this machine only)"
    for value in values:
        if value in EVERYONE:
            continue
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an IP address or CIDR range"
    return None


def check_origins(values: list[str]) -> str | None:
    """Why an origin list is invalid, or None: each origin is scheme://host[:port], never a wildcard."""
    for value in values:
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", value.rstrip("/")):
            return f"{value!r} is not an origin like https://app.example.com (no wildcards, no paths)"
    return None


def check_host(value: str) -> str | None:
    """Why a bind address is invalid, or None."""
    if _usable(value) or value in WILDCARD_BINDS or is_loopback(value):
        return None
    if re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})", value):
        return None
    return f"{value!r} is not an IP address or host name"


def check_tls_files(cert: Path | None, key: Path | None) -> str | None:
    """Why an existing certificate and key cannot serve, or None (they load together)."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is None:
            return f"--tls files needs {flag}"
        if not path.is_file() or not os.access(path, os.R_OK):
            return f"{flag} {path}: not a readable file"
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        return f"{cert} and {key} do not load as a certificate and its key ({exc.__class__.__name__})"
    return None


def everyone(ips: list[str]) -> bool:
    """Whether an allowlist admits every address."""
    return any(ip in EVERYONE for ip in ips)


def _ask(question: str, default: str, check: Callable[[str], str | None]) -> str:
    while True:
        answer = Prompt.ask(question, default=default, console=ask).strip()
        problem = check(answer)
        if problem is None:
            return str(answer)
        err.print(problem, style="red")


def _ask_int(question: str, default: int, low: int, high: int) -> int:
    while True:
        answer = IntPrompt.ask(question, default=default, console=ask)
        if low <= answer <= high:
            return answer
        err.print(f"enter a number from {low} to {high}", style="red")


def _ask_ips(default: list[str], host: str) -> list[str]:
    while True:
        ips = split_list(
            _ask("Allowed client IPs (ALLOWED_IPS)", ",".join(default), lambda a: check_ips(split_list(a)))
        )
        if not everyone(ips) or is_loopback(host):
            return ips
        if Confirm.ask(
            "[bold red]This lets EVERY address on the network connect.[/] Really allow everyone?",
            default=False,
            console=ask,
        ):
            return ips


def _ask_tls(default: TlsMode, cert: Path | None, key: Path | None) -> tuple[TlsMode, Path | None, Path | None]:
    choices = [mode.value for mode in TlsMode]
    mode = TlsMode(Prompt.ask("TLS (none, self-signed, files)", choices=choices, default=default.value, console=ask))
    while mode is TlsMode.files:
        cert = Path(_ask("Certificate file (PEM)", str(cert or ""), lambda a: None if a else "enter a path"))
        key = Path(_ask("Private key file (PEM)", str(key or ""), lambda a: None if a else "enter a path"))
        problem = check_tls_files(cert, key)
        if problem is None:
            break
        err.print(problem, style="red")
    return mode, cert, key


def ask_answers(flags: Answers, detected: list[str]) -> Answers:
    """Prompt for every setting, flags (or defaults) shown as the proposal."""
    err.print(f"Addresses of this machine: {', '.join(detected) or '(none found)'}")
    err.print("Bind 127.0.0.1 to serve this machine only, an address above to serve its network, 0.0.0.0 for all.")
    host = _ask("Bind address (HOST)", flags.host, check_host)
    port = _ask_int("Port (PORT)", flags.port, 1, 65535)
    ips = _ask_ips(flags.allowed_ips, host)
    origins = split_list(
        _ask(
            "Browser origins allowed to call it (ALLOWED_ORIGINS, comma-separated, '-' for none)",
            ",".join(flags.allowed_origins) or "-",
            lambda a: None if a == "-" else check_origins(split_list(a)),
        )
    )
    origins = [] if origins == ["-"] else origins
    window = _ask_int("Rate-limit window in milliseconds (RATE_LIMIT_WINDOW_MS)", flags.window_ms, 1000, 86_400_000)
    most = _ask_int("Requests per client IP per window (RATE_LIMIT_MAX_REQUESTS)", flags.max_requests, 1, 10_000_000)
    default_tls = flags.tls if flags.tls is not TlsMode.none or is_loopback(host) else TlsMode.self_signed
    tls, cert, key = _ask_tls(default_tls, flags.tls_cert, flags.tls_key)
    return Answers(host, port, ips, origins, window, most, tls, cert, key)


def validate_flags(answers: Answers, allow_any_ip: bool) -> None:
    """Refuse, with one line and exit 2, what the flags of a scripted run get wrong or make dangerous."""
    for problem, hint in (
        (check_host(answers.host), "use 127.0.0.1, an address of this machine, or 0.0.0.0"),
        (check_ips(answers.allowed_ips), "e.g. --allowed-ips 127.0.0.1,192.168.1.0/24"),
        (check_origins(answers.allowed_origins), "e.g. --allowed-origins https://app.example.com"),
    ):
        if problem is not None:
            fail(problem, hint)
    if everyone(answers.allowed_ips) and not is_loopback(answers.host) and not allow_any_ip:
        fail(
            f"--allowed-ips {','.join(answers.allowed_ips)} with --host {answers.host} lets every address on the "
            "network use the gateway",
            "list your clients (e.g. --allowed-ips 192.168.1.0/24), or add --allow-any-ip if you really mean it",
        )
    if answers.tls is TlsMode.files:
        if (problem := check_tls_files(answers.tls_cert, answers.tls_key)) is not None:
            fail(problem, "pass a readable PEM certificate and its key, or --tls self-signed")
    elif answers.tls_cert is not None or answers.tls_key is not None:
        fail(
            f"--tls-cert and --tls-key need --tls files (got --tls {answers.tls.value})",
            "add --tls files, or drop --tls-cert and --tls-key",
        )


def may_replace(path: Path, interactive: bool, yes: bool, what: str) -> bool:
    """Whether `path` may be written: it is new, `--yes` was given, or the operator confirms."""
    if not path.exists() and not path.is_symlink():
        return True
    return yes or (interactive and Confirm.ask(f"{escape(str(path))} exists. {what}?", default=False, console=ask))


def allowed_to_replace(path: Path, interactive: bool, yes: bool, what: str) -> None:
    """Go on if `path` may be written; otherwise exit 2 with nothing written."""
    if not may_replace(path, interactive, yes, what):
        fail(f"{path} exists; nothing was written", "answer y" if interactive else "rerun with --yes to replace it")


def read_env(path: Path) -> dict[str, str]:
    """An existing .env as written (no `${VAR}` expansion), so values init does not manage are kept verbatim."""
    if not path.exists():
        return {}
    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}


def read_config(path: Path) -> dict[str, Any] | None:
    """The mcp.json document, or None when there is none; invalid JSON exits 2."""
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"{path}: cannot read it as JSON ({exc.__class__.__name__})", "fix it, or move it away to start fresh")
    if not isinstance(document, dict) or not isinstance(document.get("mcpServers"), dict):
        fail(f'{path}: expected an object with an "mcpServers" object', "fix it, or move it away to start fresh")
    return dict(document)


def secret_problem(value: str) -> str | None:
    """Why a secret cannot be stored in .env as typed, or None."""
    if "\n" in value or "\r" in value:
        return "a secret must be one line"
    if "${" in value:
        return "a secret cannot contain '${': .env would expand it"
    return None


def gather_secrets(answers: Answers, refs: list[SecretRef], interactive: bool) -> None:
    """Fill answers.secrets: typed (hidden) when interactive; from the environment or the literal when scripted."""
    environment = variables(None)
    for ref in refs:
        if interactive:
            value = _ask_secret(ref)
        else:
            value = environment.get(ref.var, "") or ref.literal or ""
            if (problem := secret_problem(value)) is not None:
                fail(f"the value for {ref.var}: {problem}", f"set {ref.var} in the environment or .env yourself")
        if value:
            answers.secrets[ref.var] = value
        else:
            answers.missing.append(ref.var)
            answers.warnings.append(f"{ref.var} is not set: server {ref.server!r} cannot start until it is in .env")


def _ask_secret(ref: SecretRef) -> str:
    keep = " (Enter keeps the value now in mcp.json)" if ref.literal is not None else ""
    question = f"Secret for server [cyan]{escape(ref.server)}[/], {escape(ref.key)} → ${{{escape(ref.var)}}}{keep}"
    while True:
        typed = Prompt.ask(question, password=True, default="", show_default=False, console=ask).strip()
        value = typed or ref.literal or ""
        problem = secret_problem(value)
        if problem is None:
            return value
        err.print(problem, style="red")


def plan_config(answers: Answers, path: Path, present: dict[str, str], interactive: bool, flags: "Flags") -> None:
    """Decide what becomes of mcp.json: the demo when there is none, secrets moved out of it when there is one."""
    document = read_config(path)
    if document is None:
        question = f"No {escape(str(path))}. Write one that runs the bundled demo server?"
        if Confirm.ask(question, default=True, console=ask) if interactive else flags.demo:
            answers.document = DEMO_DOCUMENT
        else:
            answers.warnings.append(f"no {path}: write one before `mcp-bastion serve`")
        return
    refs, warnings = find_secrets(document, present)
    answers.warnings += warnings
    literals = [ref for ref in refs if ref.literal is not None]
    if literals:
        where = ", ".join(f"{r.server}.{r.key}" for r in literals)
        if interactive:
            err.print(f"{path} holds literal secrets ({where}): they move to .env as ${{VAR}}.")
        if interactive and not may_replace(path, interactive, flags.yes, "Rewrite it to reference them in .env"):
            answers.warnings.append(f"{path} still holds literal secrets ({where}); move them to .env yourself")
            refs = [ref for ref in refs if ref.literal is None]
        else:
            allowed_to_replace(path, interactive, flags.yes, "Rewrite it to reference the secrets in .env")
            answers.document = with_references(document, refs)
    gather_secrets(answers, refs, interactive)


def cert_names(host: str, detected: list[str]) -> list[str]:
    """Every name a client may use to reach the gateway: loopback, the bind address, this machine's addresses."""
    names = ["localhost", "127.0.0.1", "::1"]
    if host not in WILDCARD_BINDS:
        names.append(host)
    names += detected
    hostname = socket.gethostname()
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", hostname):
        names.append(hostname)
    return list(dict.fromkeys(names))


def env_values(answers: Answers, directory: Path, previous: dict[str, str], detected: list[str]) -> dict[str, str]:
    """The new .env: the settings init manages, the secrets, then every other setting the old file had."""
    values = {
        "HOST": answers.host,
        "PORT": str(answers.port),
        "MCP_CONFIG": str(directory / "mcp.json"),
        "AUTH_TOKEN": new_token(),
        "SESSION_SECRET": new_token(),
        "ALLOWED_IPS": ",".join(answers.allowed_ips),
        "ALLOWED_ORIGINS": ",".join(o.rstrip("/") for o in answers.allowed_origins),
        "RATE_LIMIT_WINDOW_MS": str(answers.window_ms),
        "RATE_LIMIT_MAX_REQUESTS": str(answers.max_requests),
    }
    if answers.host in WILDCARD_BINDS and detected:
        # Clients reach a wildcard bind through this machine's addresses: the Host check must accept them.
        hosts = [*split_list(previous.get("ALLOWED_HOSTS", "")), *(f"[{a}]" if ":" in a else a for a in detected)]
        values["ALLOWED_HOSTS"] = ",".join(dict.fromkeys(hosts))
    if answers.tls is not TlsMode.none and answers.tls_cert and answers.tls_key:
        values["TLS_CERT_FILE"] = str(answers.tls_cert.resolve())
        values["TLS_KEY_FILE"] = str(answers.tls_key.resolve())
    values.update(answers.secrets)
    managed = set(values) | {"TLS_CERT_FILE", "TLS_KEY_FILE"}
    values.update({k: v for k, v in previous.items() if k not in managed})
    return values


@dataclass
class Flags:
    """The scripted-run switches that are not settings."""

    yes: bool
    demo: bool


def write_all(answers: Answers, directory: Path, values: dict[str, str], detected: list[str]) -> list[Path]:
    """Write the certificate, mcp.json and .env (last, so a failure before leaves no half-configured .env)."""
    written: list[Path] = []
    if answers.tls is TlsMode.self_signed and answers.tls_cert and answers.tls_key:
        from mcp_bastion.certs import self_signed  # lazily: `cryptography` costs the server ~10 MiB it never uses

        cert_pem, key_pem = self_signed(cert_names(answers.host, detected))
        write_private(answers.tls_key, key_pem)
        write_private(answers.tls_cert, cert_pem)
        written += [answers.tls_cert, answers.tls_key]
    if answers.document is not None:
        write_private(directory / "mcp.json", json.dumps(answers.document, indent=2) + "\n")
        written.append(directory / "mcp.json")
    write_private(directory / ".env", render_env(values))
    written.append(directory / ".env")
    return written


@cli.command()
def init(
    directory: Annotated[Path, typer.Option("--dir", help="Where .env and mcp.json go.")] = Path("."),
    non_interactive: Annotated[bool, typer.Option("--non-interactive", help="Ask nothing; use the flags.")] = False,
    host: Annotated[str, typer.Option(help="Bind address (HOST).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (PORT).", min=1, max=65535)] = 3001,
    allowed_ips: Annotated[
        str | None,
        typer.Option(help="Client IPs/CIDRs, comma-separated (default: loopback + this machine's addresses)."),
    ] = None,
    allowed_origins: Annotated[str, typer.Option(help="Browser origins, comma-separated (default: none).")] = "",
    rate_limit_window_ms: Annotated[int, typer.Option(help="Rate-limit window.", min=1000)] = 900_000,
    rate_limit_max_requests: Annotated[int, typer.Option(help="Requests per IP per window.", min=1)] = 100,
    tls: Annotated[TlsMode, typer.Option(help="none, self-signed (made for this host) or files.")] = TlsMode.none,
    tls_cert: Annotated[Path | None, typer.Option(help="Certificate (PEM) for --tls files.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Private key (PEM) for --tls files.")] = None,
    demo: Annotated[bool, typer.Option(help="Write a demo-server mcp.json when there is none.")] = True,
    lookup_public_ip: Annotated[
        bool,
        typer.Option(
            "--lookup-public-ip", help=f"Ask {PUBLIC_LOOKUP_URL} for this machine's public address (network call)."
        ),
    ] = False,
    allow_any_ip: Annotated[
        bool,
        typer.Option(
            "--allow-any-ip", help="Confirm --allowed-ips 0.0.0.0 on a non-loopback --host (every address may connect)."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Replace existing files without asking.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Set up a gateway: .env (mode 0600) with a new admin token, mcp.json with its secrets moved to .env, TLS.

    Asks for each setting unless --non-interactive. Prints the admin token once.

    Example: mcp-bastion init --non-interactive --host 0.0.0.0 --allowed-ips 192.168.1.0/24 --tls self-signed
    """
    interactive = not non_interactive
    if interactive and not sys.stdin.isatty():
        fail("stdin is not a terminal, so init cannot ask", "pass --non-interactive and the settings as flags")
    if not directory.is_dir():
        fail(f"--dir {directory}: not a directory", "create it first, or pass an existing directory")
    directory = directory.resolve()
    env_path = directory / ".env"
    allowed_to_replace(env_path, interactive, yes, "Replace it (settings init does not manage are kept)")
    detected = this_machines_addresses(lookup_public_ip)
    answers = Answers(
        host,
        port,
        split_list(allowed_ips) if allowed_ips is not None else [*LOOPBACK, *detected],
        split_list(allowed_origins),
        rate_limit_window_ms,
        rate_limit_max_requests,
        tls,
        tls_cert,
        tls_key,
    )
    previous = read_env(env_path)
    try:
        answers = settle(answers, directory, previous, detected, interactive, Flags(yes=yes, demo=demo), allow_any_ip)
    except (EOFError, KeyboardInterrupt):
        fail("setup interrupted; nothing was written", "run `mcp-bastion init` again when ready")
    if not is_loopback(answers.host) and answers.tls is TlsMode.none:
        answers.warnings.append(f"{answers.host} is served over plain HTTP: tokens cross the network in clear text")
    if everyone(answers.allowed_ips):
        answers.warnings.append("ALLOWED_IPS admits every address; list your clients instead")
    values = env_values(answers, directory, previous, detected)
    try:
        written = write_all(answers, directory, values, detected)
    except OSError as exc:
        fail(f"cannot write: {exc}", "files written before this one are complete; .env is written last")
        return
    report(answers, values, written, env_path, as_json)


def this_machines_addresses(lookup_public_ip: bool) -> list[str]:
    """This machine's addresses, and its public one when asked for (a network call; skipped with a warning)."""
    detected = detect_addresses()
    if lookup_public_ip:
        public = lookup_public_address()
        if public is None:
            err.print(Text.assemble(("warning:", "yellow"), " the public address lookup failed (offline?); skipped"))
        elif public not in detected:
            detected.append(public)
    return detected


def settle(
    answers: Answers,
    directory: Path,
    previous: dict[str, str],
    detected: list[str],
    interactive: bool,
    flags: Flags,
    allow_any_ip: bool,
) -> Answers:
    """The answers asked for (or the flags checked), the TLS files to make, and the mcp.json plan.

    Raises:
        EOFError, KeyboardInterrupt: the person stopped answering (nothing is written).
    """
    if interactive:
        answers = ask_answers(answers, detected)
    else:
        validate_flags(answers, allow_any_ip)
    if answers.tls is TlsMode.self_signed:
        answers.tls_cert, answers.tls_key = directory / "tls" / "bastion.crt", directory / "tls" / "bastion.key"
        for path in (answers.tls_cert, answers.tls_key):
            allowed_to_replace(path, interactive, flags.yes, "Replace it with a new self-signed certificate")
    plan_config(answers, directory / "mcp.json", previous, interactive, flags)
    return answers


def report(answers: Answers, values: dict[str, str], written: list[Path], env_path: Path, as_json: bool) -> None:
    """Say what was written and print the admin token, once (JSON for scripts)."""
    scheme = "http" if answers.tls is TlsMode.none else "https"
    shown = "127.0.0.1" if answers.host in WILDCARD_BINDS else answers.host
    url = f"{scheme}://{f'[{shown}]' if ':' in shown else shown}:{answers.port}"
    token = values["AUTH_TOKEN"]
    for warning in answers.warnings:
        err.print(Text.assemble(("warning:", "bold yellow"), " ", warning), soft_wrap=True)
    if as_json:
        document = {
            "token": token,
            "env_file": str(env_path),
            "config": values["MCP_CONFIG"],
            "tls_cert": values.get("TLS_CERT_FILE"),
            "tls_key": values.get("TLS_KEY_FILE"),
            "url": url,
            "allowed_ips": answers.allowed_ips,
            "written": [str(path) for path in written],
            "stored_secrets": sorted(answers.secrets),
            "missing_secrets": answers.missing,
            "warnings": answers.warnings,
        }
        typer.echo(json.dumps(document, indent=2))
        return
    for path in written:
        out.print(f"wrote {path} (mode {path.stat().st_mode & 0o777:04o})", soft_wrap=True)
    if answers.secrets:
        out.print(f"stored in .env: {', '.join(sorted(answers.secrets))}", soft_wrap=True)
    out.print("Admin token (AUTH_TOKEN). Copy it now: init prints it this once.", style="bold")
    out.print(token, markup=False, highlight=False, soft_wrap=True)
    out.print(f"Start the gateway: mcp-bastion serve --env-file {env_path}   ({url})", soft_wrap=True)
    if answers.tls is TlsMode.self_signed:
        out.print(
            f"Clients trust the certificate file: curl --cacert {values['TLS_CERT_FILE']} {url}/livez",
            soft_wrap=True,
        )
