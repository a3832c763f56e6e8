"""What the authorization server keeps in the store, one record kind each; values are stored hashed where they are
credentials (codes, refresh tokens, consent CSRF tokens), never as they were handed out."""

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

CLIENT = "oauth-client"  # a dynamically registered client, by client_id
SEEN = "oauth-seen"  # a client (CIMD URL or registered id) once approved: not flagged "first seen" again
PENDING = "oauth-pending"  # an authorization request waiting for consent, by its random id
CODE = "oauth-code"  # an authorization code, by its hash
CODE_USED = "oauth-code-used"  # the claim of a redeemed code, by its hash (a second redemption is a replay)
GRANT = "oauth-grant"  # a grant (the consent, its scopes, the refresh family), by id
GRANT_USED = "oauth-grant-used"  # when a grant's tokens were last used, by grant id
REFRESH = "oauth-refresh"  # a refresh token, by its hash
REFRESH_USED = "oauth-refresh-used"  # the claim of a rotated refresh token, by its hash

T = TypeVar("T")


@dataclass(frozen=True)
class Client:
    """A client as the consent page and the checks see it: registered (RFC 7591) or a metadata document's (CIMD)."""

    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    created: float
    metadata_document: bool = False


@dataclass(frozen=True)
class Pending:
    """An authorization request that passed every check, waiting for the operator's decision."""

    id: str
    client_id: str
    client_name: str
    redirect_uri: str
    state: str | None
    code_challenge: str
    resource: str
    scopes: tuple[str, ...]  # what the consent page offers (the request, narrowed to the resource)
    first_seen: bool
    csrf_hash: str = ""  # set when the consent page is shown to a logged-in operator
    login: str = ""  # the login session (its id hash) the consent page was shown to
    tools: tuple[str, ...] = ()  # narrower choices the page also offers, unchecked: single tools of those servers


@dataclass(frozen=True)
class Code:
    """An authorization code: one use, bound to its client, redirect URI, PKCE challenge and resource."""

    grant_id: str
    client_id: str
    client_name: str
    redirect_uri: str
    code_challenge: str
    resource: str
    scopes: tuple[str, ...]
    approved_by: str
    expires: float
    digest: str = ""  # the code's hash, its key in the store (so `lockdown` can find and delete it)


@dataclass(frozen=True)
class Grant:
    """What the operator approved: one client, one resource, these scopes, until `expires`; its refresh tokens are
    one family (a replayed one ends the grant)."""

    id: str
    client_id: str
    client_name: str
    resource: str
    scopes: tuple[str, ...]
    approved_by: str
    created: float
    expires: float
    last_used: float | None = None


@dataclass(frozen=True)
class Refresh:
    """A refresh token (by hash): which grant it renews, and when it stops working."""

    grant_id: str
    expires: float


def to_record(value: Any) -> dict[str, Any]:
    """A record's JSON object."""
    return dataclasses.asdict(value)


def from_record(kind: type[T], data: dict[str, Any]) -> T:
    """A record read back (tuples restored; unknown keys of a newer version ignored)."""
    names = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return kind(**values)
