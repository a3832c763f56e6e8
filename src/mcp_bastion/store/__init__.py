"""State behind one async interface: `open_store(url)` picks the backend by scheme.

memory://            in-process (tests)
sqlite:///abs/path   default: one file next to the .env, shared by the server and the CLI
redis://host:port/n  several gateway instances
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mcp_bastion.breaker import BREAKER_OPEN_S, DEPENDENCY_TIMEOUT_S, Breaker
from mcp_bastion.errors import ConfigError
from mcp_bastion.store.base import (
    DuplicateName,
    InvalidName,
    LoginSession,
    Store,
    StoreError,
    StoreUnavailable,
    TokenRecord,
)


@dataclass(frozen=True)
class Remote:
    """How a networked backend (Redis) bounds its calls: REDIS_TIMEOUT_S and REDIS_BREAKER_OPEN_S."""

    timeout_s: float = DEPENDENCY_TIMEOUT_S
    open_s: float = BREAKER_OPEN_S


def _memory(url: str, remote: Remote) -> Store:
    from mcp_bastion.store.memory import MemoryStore

    return MemoryStore()


def _sqlite(url: str, remote: Remote) -> Store:
    from mcp_bastion.store.sqlite import SqliteStore

    path = url.removeprefix("sqlite://")
    if not path.startswith("/"):
        raise ConfigError(f"STORE_URL {url!r}: use sqlite:///absolute/path or a path relative to the .env")
    return SqliteStore(Path(path))


def _redis(url: str, remote: Remote) -> Store:
    from mcp_bastion.store.redis import RedisStore

    return RedisStore(url, timeout_s=remote.timeout_s, open_s=remote.open_s)


BACKENDS: dict[str, Callable[[str, Remote], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
}


def open_store(url: str, remote: Remote | None = None) -> Store:
    """The store for a URL (`remote` bounds a networked backend's calls; the defaults otherwise).

    Raises:
        ConfigError: unknown scheme or unusable URL.
    """
    scheme = urlparse(url).scheme
    factory = BACKENDS.get(scheme)
    if factory is None:
        raise ConfigError(f"STORE_URL: unknown scheme {scheme!r} (use sqlite, redis or memory)")
    return factory(url, remote or Remote())


def breaker_of(store: Store) -> Breaker | None:
    """The circuit breaker guarding a networked store (None for the in-process ones)."""
    found = getattr(store, "breaker", None)
    return found if isinstance(found, Breaker) else None


__all__ = [
    "DuplicateName",
    "InvalidName",
    "LoginSession",
    "Remote",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TokenRecord",
    "breaker_of",
    "open_store",
]
