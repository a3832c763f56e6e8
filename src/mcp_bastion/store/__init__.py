"""State behind one async interface: `open_store(url)` picks the backend by scheme.

memory://            in-process (tests)
sqlite:///abs/path   default: one file next to the .env, shared by the server and the CLI
redis://host:port/n  several gateway instances
"""

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from mcp_bastion.errors import ConfigError
from mcp_bastion.store.base import DuplicateName, InvalidName, LoginSession, Store, StoreError, TokenRecord


def _memory(url: str) -> Store:
    from mcp_bastion.store.memory import MemoryStore

    return MemoryStore()


def _sqlite(url: str) -> Store:
    from mcp_bastion.store.sqlite import SqliteStore

    path = url.removeprefix("sqlite://")
    if not path.startswith("/"):
        raise ConfigError(f"STORE_URL {url!r}: use sqlite:///absolute/path or a path relative to the .env")
    return SqliteStore(Path(path))


def _redis(url: str) -> Store:
    from mcp_bastion.store.redis import RedisStore

    return RedisStore(url)


BACKENDS: dict[str, Callable[[str], Store]] = {"memory": _memory, "sqlite": _sqlite, "redis": _redis, "rediss": _redis}


def open_store(url: str) -> Store:
    """The store for a URL.

    Raises:
        ConfigError: unknown scheme or unusable URL.
    """
    scheme = urlparse(url).scheme
    factory = BACKENDS.get(scheme)
    if factory is None:
        raise ConfigError(f"STORE_URL: unknown scheme {scheme!r} (use sqlite, redis or memory)")
    return factory(url)


__all__ = ["DuplicateName", "InvalidName", "LoginSession", "Store", "StoreError", "TokenRecord", "open_store"]
