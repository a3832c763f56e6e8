"""The one judgement of settings before start: what `serve` refuses, what it warns about, what is fine.

`serve` refuses to start on any "refuse" finding and prints the warnings; `check-config` prints the same findings
and exits 2 on a refusal; `doctor` shows each as a row of its table (refuse FAIL, warn WARN, ok PASS). One list of
checks, so the three never disagree about a setting (Issue 10 item 5).
"""

import asyncio
import ipaddress
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.text import Text

from mcp_bastion.cli.base import EXIT_CONFIG, err
from mcp_bastion.config import Settings, default_store_url, is_loopback, split_list
from mcp_bastion.errors import ConfigError, GatewayError
from mcp_bastion.middleware.ip_allowlist import Network, parse_networks
from mcp_bastion.security import weakness
from mcp_bastion.store import Store, open_store

Level = Literal["refuse", "warn", "ok"]
STORE_TIMEOUT_S = 5.0  # a store that does not answer by then is judged as holding no tokens
StoredTokens = Callable[[], int]  # how many named tokens the store holds (asked only when AUTH_TOKEN is unset)

GENERATE = "replace AUTH_TOKEN with the output of `mcp-bastion token generate`"
CREATE_ADMIN = "set AUTH_TOKEN (`mcp-bastion token generate`) or `mcp-bastion token create NAME --scope admin`"
NO_AUTH_FIX = "remove INSECURE_NO_AUTH and set AUTH_TOKEN (`mcp-bastion token generate`)"
LIST_CLIENTS = "list your clients in ALLOWED_IPS (addresses or CIDR ranges) instead of 0.0.0.0"
PROXY_FIX = "list only your proxy's address, e.g. TRUSTED_PROXIES=127.0.0.1"
TLS_FIX = "set TLS_CERT_FILE and TLS_KEY_FILE, or set ALLOW_PLAINTEXT=1 if a proxy in front terminates TLS"


@dataclass(frozen=True)
class Finding:
    """One verdict on the settings: its level, what it is about, what was found, how to fix it."""

    level: Level
    name: str
    message: str
    fix: str = ""

    def line(self) -> str:
        """The message with its fix, as one sentence (an error or warning line)."""
        return f"{self.message}; {self.fix}" if self.fix else self.message


def findings(settings: Settings, env_file: Path, stored_tokens: StoredTokens) -> list[Finding]:
    """Every verdict, in a stable order (one per subject, TLS may give several)."""
    return [
        env_file_finding(env_file),
        auth_finding(settings, stored_tokens),
        bind_finding(settings),
        allowed_ips_finding(settings),
        trusted_proxies_finding(settings),
        cors_finding(settings),
        *tls_findings(settings),
    ]


def refusals(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.level == "refuse"]


def warnings(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.level == "warn"]


def verdict(settings: Settings, env_file: Path, stored_tokens: StoredTokens) -> list[str]:
    """The warnings to print loudly, after refusing dangerous settings (what `serve` does).

    Raises:
        ConfigError: the first refusal, with its fix.
    """
    found = findings(settings, env_file, stored_tokens)
    for refusal in refusals(found):
        raise ConfigError(refusal.line())
    return [f.line() for f in warnings(found)]


def stored_token_count(settings: Settings, env_file: Path) -> int:
    """How many named tokens the store holds, for a command that must not create it (0 when it does not exist
    or does not answer: judged as if it held none, which matters only when AUTH_TOKEN is unset)."""
    url = settings.store_url.get_secret_value() if settings.store_url else default_store_url(env_file)
    if url.startswith("sqlite://") and not Path(url.removeprefix("sqlite://")).exists():
        return 0
    try:
        return asyncio.run(_count(open_store(url)))
    except (GatewayError, OSError, TimeoutError):
        return 0


async def _count(store: Store) -> int:
    try:
        return len(await asyncio.wait_for(store.list_tokens(), STORE_TIMEOUT_S))
    finally:
        await store.close()


def print_findings(found: list[Finding]) -> int:
    """Each refusal and warning as one line on stderr; the exit code of a check (2 on a refusal, else 0)."""
    for finding in [*refusals(found), *warnings(found)]:
        label = ("refused:", "bold red") if finding.level == "refuse" else ("warning:", "bold yellow")
        err.print(Text.assemble(label, " ", f"{finding.name}: {finding.line()}"), soft_wrap=True)
    return EXIT_CONFIG if refusals(found) else 0


def env_file_finding(env_file: Path) -> Finding:
    if not env_file.exists():
        return Finding("ok", "env file", f"{env_file} not found: settings come from the environment and defaults")
    mode = stat.S_IMODE(env_file.stat().st_mode)
    if mode & 0o077:
        return Finding(
            "warn", "env file", f"{env_file} is readable by group or others (mode {mode:04o})", f"chmod 600 {env_file}"
        )
    return Finding("ok", "env file", f"{env_file} is private (mode {mode:04o})")


def auth_finding(settings: Settings, stored_tokens: StoredTokens) -> Finding:
    """AUTH_TOKEN, INSECURE_NO_AUTH and the named tokens, against the bind address."""
    loopback = is_loopback(settings.host)
    if settings.insecure_no_auth:
        if split_list(settings.trusted_proxies):
            return Finding(
                "refuse",
                "auth token",
                "INSECURE_NO_AUTH cannot be used with TRUSTED_PROXIES: requests relayed by a proxy come from the "
                "network, and would use every server without a token",
                NO_AUTH_FIX,
            )
        if not loopback:
            message = f"INSECURE_NO_AUTH cannot be used with a non-loopback bind ({settings.host})"
            return Finding("refuse", "auth token", message, NO_AUTH_FIX)
        message = "INSECURE_NO_AUTH is on: every local process can use every server without a token"
        return Finding("warn", "auth token", message, NO_AUTH_FIX)
    if settings.auth_token is not None:
        reason = weakness(settings.auth_token.get_secret_value())
        if reason is not None:
            return Finding("refuse", "auth token", f"AUTH_TOKEN is too weak: {reason}", GENERATE)
        return Finding("ok", "auth token", "AUTH_TOKEN is set and strong")
    stored = stored_tokens()
    if stored:
        return Finding("ok", "auth token", f"no AUTH_TOKEN; {stored} named token(s) in the store")
    if settings.oauth_issuer is not None:  # Issue 13: the identity provider's access tokens authenticate
        return Finding("ok", "auth token", f"no AUTH_TOKEN; OAuth access tokens from {settings.oauth_issuer}")
    if not loopback:
        message = f"refusing to bind {settings.host} with no token configured"
        return Finding("refuse", "auth token", message, CREATE_ADMIN)
    message = "no AUTH_TOKEN and no stored tokens: every request will be refused (401)"
    return Finding("warn", "auth token", message, CREATE_ADMIN)


def _networks(value: str, setting: str) -> list[Network]:
    """The addresses and ranges of a setting, collapsed (halves adding up to everything count as everything)."""
    parsed = parse_networks(split_list(value), setting)
    v4 = [n for n in parsed if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in parsed if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def _everyone(value: str, setting: str) -> bool:
    return any(n.prefixlen == 0 for n in _networks(value, setting))


def allowed_ips_finding(settings: Settings) -> Finding:
    values = split_list(settings.allowed_ips)
    try:
        everyone = _everyone(settings.allowed_ips, "ALLOWED_IPS")
    except ConfigError as exc:
        return Finding("refuse", "allowed IPs", exc.message, "use addresses or CIDR ranges, e.g. 127.0.0.1,10.0.0.0/24")
    if everyone:
        return Finding(
            "warn", "allowed IPs", "ALLOWED_IPS=0.0.0.0 lets EVERY address on the network connect", LIST_CLIENTS
        )
    return Finding("ok", "allowed IPs", f"ALLOWED_IPS={','.join(values) or '(empty: nobody)'}")


def bind_finding(settings: Settings) -> Finding:
    host = settings.host
    if is_loopback(host):
        return Finding("ok", "bind address", f"{host} (this machine only)")
    values = split_list(settings.allowed_ips)
    try:
        everyone = _everyone(settings.allowed_ips, "ALLOWED_IPS")
    except ConfigError:
        everyone = False  # refused by the ALLOWED_IPS finding
    if everyone:
        message = f"{host} is exposed to the network and ALLOWED_IPS admits every address"
        return Finding("warn", "bind address", message, "list your clients in ALLOWED_IPS, or bind HOST=127.0.0.1")
    if not values:
        message = f"{host} is exposed but ALLOWED_IPS is empty: every client gets 403"
        return Finding("warn", "bind address", message, "list your clients' addresses in ALLOWED_IPS")
    if all(is_loopback(v.split("/")[0]) for v in values):
        message = f"{host} is exposed but ALLOWED_IPS admits loopback only: remote clients get 403"
        return Finding(
            "warn", "bind address", message, "add your clients' addresses to ALLOWED_IPS, or bind HOST=127.0.0.1"
        )
    return Finding("ok", "bind address", f"{host}, restricted to ALLOWED_IPS")


def trusted_proxies_finding(settings: Settings) -> Finding:
    try:
        everyone = _everyone(settings.trusted_proxies, "TRUSTED_PROXIES")
    except ConfigError as exc:
        return Finding("refuse", "trusted proxies", exc.message, PROXY_FIX)
    if everyone:
        message = (
            "TRUSTED_PROXIES covers every address, so any client could forge its address with a forwarded header "
            "(IP allowlist, rate limits, audit trail)"
        )
        return Finding("refuse", "trusted proxies", message, PROXY_FIX)
    proxies = split_list(settings.trusted_proxies)
    return Finding("ok", "trusted proxies", f"TRUSTED_PROXIES={','.join(proxies)}" if proxies else "none")


def cors_finding(settings: Settings) -> Finding:
    origins = split_list(settings.allowed_origins)
    bad = [o for o in origins if o in ("*", "null")]
    if bad:
        message = f"ALLOWED_ORIGINS may not contain {bad[0]}: credentials are sent"
        return Finding(
            "refuse", "CORS origins", message, "list exact origins, e.g. ALLOWED_ORIGINS=https://app.example.com"
        )
    return Finding("ok", "CORS origins", f"{len(origins)} exact origin(s)" if origins else "none (same-origin only)")


def tls_findings(settings: Settings) -> list[Finding]:
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        if is_loopback(settings.host):
            return [Finding("ok", "TLS", "plain HTTP on a loopback bind")]
        if not settings.allow_plaintext:
            message = f"refusing to serve plain HTTP on {settings.host}: tokens would cross the network in clear text"
            return [Finding("refuse", "TLS", message, TLS_FIX)]
        return [
            Finding("ok", "TLS", f"plain HTTP on {settings.host}; ALLOW_PLAINTEXT=1: a proxy in front terminates TLS")
        ]
    if cert is None or key is None:
        missing = "TLS_CERT_FILE" if cert is None else "TLS_KEY_FILE"
        return [Finding("refuse", "TLS", f"{missing} is not set: TLS needs both files", f"set {missing}")]
    found: list[Finding] = []
    for label, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            found.append(Finding("refuse", "TLS", f"the {label} {path} does not exist", f"fix the path of the {label}"))
        elif not os.access(path, os.R_OK):
            found.append(Finding("refuse", "TLS", f"the {label} {path} is not readable", f"chmod u+r {path}"))
    if key.is_file() and (mode := stat.S_IMODE(key.stat().st_mode)) & 0o077:
        message = f"the key {key} is readable by group or others (mode {mode:04o})"
        found.append(Finding("refuse", "TLS", message, f"chmod 600 {key}"))
    return found or [Finding("ok", "TLS", "certificate and key present; the key is private")]
