"""MCP protocol constants and pure helpers for picking the era of a request. No I/O."""

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION: Final = HANDSHAKE_VERSIONS[-1]
MODERN_VERSIONS: Final = ("2026-07-28",)
ALL_VERSIONS: Final = HANDSHAKE_VERSIONS + MODERN_VERSIONS

PROTOCOL_VERSION_META: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META: Final = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_META: Final = "io.modelcontextprotocol/logLevel"
SERVER_INFO_META: Final = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_ID_META: Final = "io.modelcontextprotocol/subscriptionId"
MODERN_META_KEYS: Final = (PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META, CLIENT_INFO_META, LOG_LEVEL_META)

# Methods whose name/uri is mirrored in the Mcp-Name header (2026-07-28).
NAME_BEARING: Final[Mapping[str, str]] = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
# Results that carry ttlMs/cacheScope in 2026-07-28.
CACHEABLE: Final = frozenset(
    {"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read", "server/discover"}
)
# Methods a 2026-07-28 client may call on a gateway; the rest (initialize, ping, logging/setLevel,
# resources/subscribe ...) were removed from that revision.
MODERN_METHODS: Final = frozenset(
    {
        "server/discover",
        "subscriptions/listen",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "completion/complete",
    }
)
LIST_CHANGED: Final[Mapping[str, str]] = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}

_B64_SENTINEL = re.compile(r"=\?base64\?(?P<payload>[A-Za-z0-9+/=]*)\?=")


def negotiate_version(requested: Any) -> str:
    """The handshake version to answer an `initialize` with: theirs if we speak it, else our latest."""
    return requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE_VERSION


def is_modern_header(version_header: str | None) -> bool:
    """A version header that is present and not a handshake revision selects the stateless era."""
    return version_header is not None and version_header not in HANDSHAKE_VERSIONS


def decode_header_value(value: str | None) -> str | None:
    """Undo the `=?base64?...?=` wrapping of a 2026-07-28 header; a corrupt wrapping gives None."""
    if value is None or not value.startswith("=?"):
        return value
    match = _B64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    payload = match.group("payload")
    try:
        decoded = base64.b64decode(payload, validate=True)
        if base64.b64encode(decoded).decode("ascii") != payload:
            return None
        return decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
