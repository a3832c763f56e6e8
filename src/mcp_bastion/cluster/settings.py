"""Cluster mode's settings, judged once at start: on when REDIS_URL is set, refused with one line when incomplete."""

from typing import NamedTuple
from urllib.parse import urlsplit

from pydantic import SecretStr

from mcp_bastion.config import Settings, is_loopback
from mcp_bastion.errors import ConfigError

SECRET_MIN_CHARS = 32  # CLUSTER_SECRET seals session ids and signs hops: at least 256 bits' worth of text


class ClusterSettings(NamedTuple):
    """What an instance needs to join a cluster (the secrets as SecretStr: a repr or a log line never shows them)."""

    redis_url: SecretStr
    secret: SecretStr
    instance_id: str
    advertise_url: str


def cluster_settings(settings: Settings) -> ClusterSettings | None:
    """The cluster settings, or None when REDIS_URL is unset (one instance).

    Raises:
        ConfigError: CLUSTER_SECRET missing or short, CLUSTER_ADVERTISE_URL missing off loopback or not http(s).
    """
    if settings.redis_url is None:
        return None
    secret = settings.cluster_secret.get_secret_value() if settings.cluster_secret else ""
    if len(secret) < SECRET_MIN_CHARS:
        raise ConfigError(
            f"cluster mode (REDIS_URL is set) needs CLUSTER_SECRET of at least {SECRET_MIN_CHARS} characters, the same "
            "on every instance; generate one with `mcp-bastion token generate`"
        )
    url = settings.cluster_advertise_url
    if url is None:
        if not is_loopback(settings.host):
            raise ConfigError(
                f"cluster mode with HOST={settings.host} needs CLUSTER_ADVERTISE_URL: the base URL other instances "
                "reach this one at, e.g. http://10.0.0.5:3001"
            )
        scheme = "https" if settings.tls else "http"
        url = f"{scheme}://127.0.0.1:{settings.port}"
    problem = advertise_problem(url)
    if problem is not None:
        raise ConfigError(f"CLUSTER_ADVERTISE_URL {problem}")
    return ClusterSettings(settings.redis_url, SecretStr(secret), settings.instance_id, url.rstrip("/"))


def advertise_problem(url: str) -> str | None:
    """What is wrong with an advertise URL, or None: http(s)://, a host, perhaps a port, and nothing else (at start,
    and again for every peer's record read from Redis)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "needs a host"
    if parts.username is not None or parts.password is not None:
        return "may not carry a user or password"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "may not have a path, query or fragment"
    return None


def secret_values(settings: Settings) -> list[str]:
    """The cluster's secrets as they could appear in a log line: CLUSTER_SECRET, and the passwords (and whole URLs)
    of REDIS_URL and STORE_URL (masked in the audit log)."""
    found = [settings.cluster_secret.get_secret_value()] if settings.cluster_secret else []
    for url in (settings.redis_url, settings.store_url):
        value = url.get_secret_value() if url is not None else ""
        try:
            password = urlsplit(value).password
        except ValueError:  # not a URL open_store accepts either: nothing to mask
            password = None
        if password:
            found += [password, value]
    return found
