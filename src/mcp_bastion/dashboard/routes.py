"""The dashboard's server side: the static shell (/, /static/*) and its JSON API (/api/*).

Everything the browser shows comes from JSON (the page renders it with textContent) or from files of the
`static` folder next to this module; nothing is ever rendered into HTML here. The security pipeline has already
authenticated every /api/* request (bearer token or login cookie with CSRF header); the admin scope of the token
routes is checked here, since /api/* is not an admin path for the pipeline.
"""

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mcp_bastion import __version__
from mcp_bastion.access import Principal, context_of, may_see_server, redact_view, valid_scope
from mcp_bastion.audit import AuditLog
from mcp_bastion.audit_reader import Cursor, Filter, Matcher, end_of, read_page
from mcp_bastion.dashboard.instances import Instances
from mcp_bastion.relay import Gateway
from mcp_bastion.security import ADMIN_SCOPE, new_token, token_hash, token_name_problem
from mcp_bastion.store import DuplicateName, Store, TokenRecord
from mcp_bastion.transports.http import Request, send_bytes, send_json

STATIC_DIR = Path(__file__).parent / "static"
STATIC_NAME = re.compile(r"[A-Za-z0-9_.-]+")
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"application/javascript",
    ".css": b"text/css",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
    ".woff2": b"font/woff2",
}
NO_CACHE = (b"cache-control", b"no-cache")
NO_STORE = (b"cache-control", b"no-store")

RATE_WINDOW_S = 60.0  # calls_per_minute looks back this far
RATE_MIN_SPAN_S = 10.0  # a younger history is scaled as if it were this long (no wild extrapolation)
SAMPLE_EVERY_S = 10.0  # the background sampler's period
HISTORY_KEEP_S = 2 * RATE_WINDOW_S
HISTORY_MAX = 256  # snapshots kept per server, whatever the request rate
SAMPLE_MIN_GAP_S = 0.5  # overview requests closer than this replace the newest snapshot instead of adding one

AUDIT_DEFAULT = 100
AUDIT_MAX = 500
AUDIT_FILTERS = ("event", "outcome", "server", "principal")
CURSOR = re.compile(r"v[12]((?:\.\d{1,20}\.\d{1,20}){1,2})")  # v2: (inode, offset) per file, calls log first

TOKEN_BODY_MAX_BYTES = 8192
TOKEN_MAX_SCOPES = 64
EXPIRES_MAX_DAYS = 3650
DAY_S = 86400


class _Refused(Exception):
    """A request the API answers with {"error", "message"} and a status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def _bad(message: str) -> _Refused:
    return _Refused(400, "Bad request", message)


@dataclass
class AuditPage:
    """What one /api/audit request returns."""

    events: list[dict[str, Any]]
    cursor: str


class DashboardRoutes:
    """Handlers of /, /static/{name} and /api/*; `app.BastionApp` routes to them."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        store: Store,
        audit: AuditLog,
        static_dir: Path = STATIC_DIR,
        on_revoked: Callable[[], Awaitable[object]] | None = None,
        instances: Instances | None = None,
    ) -> None:
        self.gateway = gateway
        self.instances = instances  # every instance of the cluster, for admins (Issue 12 item 6)
        self.on_revoked = on_revoked  # ends what the revoked token opened, at once
        self.store = store
        self.audit = audit
        self.static_dir = static_dir
        now = time.monotonic()
        # Every backend counts from 0 when it is built, just before this: the first snapshot is exact.
        self._history: dict[str, deque[tuple[float, int]]] = {
            name: deque([(now, 0)], maxlen=HISTORY_MAX) for name in gateway.specs
        }
        self._sampler: asyncio.Task[None] | None = None

    # ---- static shell -------------------------------------------------------------------------------------

    async def index(self, req: Request) -> None:
        """GET /: the dashboard page (public: it holds no data, the API behind it needs credentials)."""
        await self.static(req, "index.html")

    async def static(self, req: Request, name: str) -> None:
        """GET /static/{name}: one file of the static folder, or 404 (no sub-folders, no traversal)."""
        path = self._static_file(name)
        if path is None:
            await _refuse(req, _Refused(404, "Not found", "no such file"))
            return
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError:
            await _refuse(req, _Refused(404, "Not found", "no such file"))
            return
        await send_bytes(req.send, 200, body, [(b"content-type", CONTENT_TYPES[path.suffix.lower()]), NO_CACHE])

    def _static_file(self, name: str) -> Path | None:
        if not STATIC_NAME.fullmatch(name) or name.startswith(".") or Path(name).suffix.lower() not in CONTENT_TYPES:
            return None
        try:
            root = self.static_dir.resolve(strict=True)
            path = (root / name).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if path.parent != root or not path.is_file():
            return None
        return path

    # ---- overview -----------------------------------------------------------------------------------------

    async def overview(self, req: Request) -> None:
        """GET /api/overview: version, status, the caller, and every server's state and call rate."""
        self._ensure_sampler()
        self.sample()
        principal = _principal(req)
        servers = []
        for name in self.gateway.specs:
            if not may_see_server(principal.scopes, name):
                continue
            view = redact_view(self.gateway.server_view(name), principal.scopes)
            servers.append(
                {
                    "name": view["name"],
                    "state": view["state"],
                    "isolation": view["isolation"],
                    "pid": view.get("pid"),
                    "restarts": view["restarts"],
                    "uptime_s": view["uptime_s"],
                    "sessions": view["sessions"],
                    "pending": view["pending"],
                    "calls": view["calls"],
                    "calls_per_minute": self.calls_per_minute(name, view["calls"]),
                    "last_error": view.get("last_error"),
                }
            )
        shared = [s for s in servers if s["isolation"] == "shared"]
        body = {
            "version": __version__,
            "status": "degraded" if any(s["state"] != "running" for s in shared) else "ok",
            "principal": principal.name,
            "scopes": list(principal.scopes),
            "servers": servers,
        }
        if self.instances is not None and ADMIN_SCOPE in principal.scopes:
            body.update(await self.instances.document())
        await send_json(req.send, 200, body, [NO_STORE])

    def sample(self) -> None:
        """Take a (monotonic time, calls) snapshot of every server: reads counters, never touches the relay."""
        now = time.monotonic()
        for name, backend in self.gateway.backends.items():
            history = self._history.setdefault(name, deque(maxlen=HISTORY_MAX))
            if history and backend.calls < history[-1][1]:
                history.clear()  # a counter that went back: start over rather than report nonsense
            while len(history) > 1 and history[1][0] <= now - HISTORY_KEEP_S:
                history.popleft()
            if history and now - history[-1][0] < SAMPLE_MIN_GAP_S and len(history) > 1:
                history[-1] = (now, backend.calls)
            else:
                history.append((now, backend.calls))

    def calls_per_minute(self, name: str, calls: int) -> float:
        """Calls in the last 60 s; with a younger history, its count scaled to a minute (at least 10 s span)."""
        history = self._history.get(name)
        if not history:
            return 0.0
        now = time.monotonic()
        base = history[0]
        for stamp in history:
            if stamp[0] <= now - RATE_WINDOW_S:
                base = stamp  # the newest snapshot at least a window old
            else:
                break
        span = now - base[0]
        delta = max(calls - base[1], 0)
        if span >= RATE_WINDOW_S:
            return round(delta * RATE_WINDOW_S / span, 1)
        return round(delta * RATE_WINDOW_S / max(span, RATE_MIN_SPAN_S), 1)

    def _ensure_sampler(self) -> None:
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.get_running_loop().create_task(self._sample_every(), name="dashboard-sampler")

    async def _sample_every(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            self.sample()

    async def close(self) -> None:
        """Stop the background sampler (lifespan shutdown)."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    # ---- audit --------------------------------------------------------------------------------------------

    async def audit_events(self, req: Request) -> None:
        """GET /api/audit: the last N matching audit lines, oldest first, and a cursor for the next poll.

        A caller without the admin scope sees only the lines about itself (its own principal).
        """
        try:
            limit = _limit(req.query_param("limit"))
            after = _cursor(req.query_param("after"))
            filters = {key: value for key in AUDIT_FILTERS if (value := req.query_param(key)) is not None}
        except _Refused as refused:
            await _refuse(req, refused)
            return
        principal = _principal(req)
        if ADMIN_SCOPE not in principal.scopes:
            if filters.get("principal", principal.name) != principal.name:
                await send_json(req.send, 200, {"events": [], "cursor": _encode([end_of(p) for p in self.audit.paths])})
                return
            filters["principal_id"] = Filter.exact(principal.id)  # by stable id: a name can be re-used, not an id
        page = await asyncio.to_thread(read_audit, self.audit.paths, limit, after, _filter(filters))
        await send_json(req.send, 200, {"events": page.events, "cursor": page.cursor}, [NO_STORE])

    # ---- tokens -------------------------------------------------------------------------------------------

    async def list_tokens(self, req: Request) -> None:
        """GET /api/tokens (admin): names, scopes and times, never values or hashes."""
        if not await self._admin(req):
            return
        records = await self.store.list_tokens()
        rows = [
            {
                "name": r.name,
                "scopes": list(r.scopes),
                "created": r.created,
                "last_used": r.last_used,
                "expires": r.expires,
            }
            for r in records
        ]
        await send_json(req.send, 200, {"tokens": rows}, [NO_STORE])

    async def create_token(self, req: Request) -> None:
        """POST /api/tokens (admin) {"name", "scopes", "expires_days"}: 201 with the value, shown this once."""
        if not await self._admin(req):
            return
        try:
            name, scopes, expires_days = _token_request(await req.body(TOKEN_BODY_MAX_BYTES))
        except _Refused as refused:
            await _refuse(req, refused)
            return
        value = new_token()
        now = time.time()
        expires = now + expires_days * DAY_S if expires_days is not None else None
        try:
            await self.store.create_token(TokenRecord(name, token_hash(value), scopes, now, expires))
        except DuplicateName:
            await _refuse(req, _Refused(409, "Conflict", f"a token named {name!r} exists"))
            return
        self._record(req, "token.created", token=name, scopes=list(scopes), expires=expires)
        body = {"name": name, "token": value, "scopes": list(scopes), "expires": expires}
        await send_json(req.send, 201, body, [NO_STORE])

    async def revoke_token(self, req: Request, name: str) -> None:
        """DELETE /api/tokens/{name} (admin): the token is refused from the next request on."""
        if not await self._admin(req):
            return
        if not await self.store.revoke_token(name):
            await _refuse(req, _Refused(404, "Not found", "no token of that name"))
            return
        self._record(req, "token.revoked", token=name)
        if self.on_revoked is not None:
            await self.on_revoked()
        await send_json(req.send, 200, {"revoked": name})

    async def not_found(self, req: Request) -> None:
        """Any other /api/* path."""
        await _refuse(req, _Refused(404, "Not found", "no such API route"))

    async def _admin(self, req: Request) -> bool:
        """Defence in depth: the route table already requires admin for the token routes."""
        if ADMIN_SCOPE in _principal(req).scopes:
            return True
        who = context_of(req.scope).who()
        self.audit.record(
            "auth.forbidden", outcome="denied", reason=f"needs {ADMIN_SCOPE}", path=req.scope.get("path"), **who
        )
        await _refuse(req, _Refused(403, "Forbidden", f"This token lacks the {ADMIN_SCOPE!r} scope"))
        return False

    def _record(self, req: Request, event: str, **fields: Any) -> None:
        self.audit.record(event, outcome="ok", **context_of(req.scope).who(), **fields)


def _principal(req: Request) -> Principal:
    """The caller (every /api/* route requires one; fail closed if the pipeline did not place it)."""
    principal = context_of(req.scope).principal
    if principal is None:
        raise _Refused(401, "Unauthorized", "Authentication required")
    return principal


async def _refuse(req: Request, refused: _Refused) -> None:
    await send_json(req.send, refused.status, {"error": refused.error, "message": refused.message})


def _token_request(raw: bytes) -> tuple[str, tuple[str, ...], int | None]:
    """Validated (name, scopes, expires_days) of a POST /api/tokens body.

    Raises:
        _Refused: 400 with the reason.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise _bad("the body must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str):
        raise _bad("name: a string")
    problem = token_name_problem(name)
    if problem is not None:
        raise _bad(f"name: {problem}")
    scopes = data.get("scopes")
    if scopes is None:
        scopes = ["server:*"]
    if not isinstance(scopes, list) or not scopes or len(scopes) > TOKEN_MAX_SCOPES:
        raise _bad(f"scopes: a list of 1-{TOKEN_MAX_SCOPES} scopes")
    for scope in scopes:
        if not isinstance(scope, str) or len(scope) > 256 or not valid_scope(scope):
            raise _bad("scopes: use admin, server:NAME, tool:SERVER/TOOL, resource:SERVER/URI or prompt:SERVER/PROMPT")
    days = data.get("expires_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= EXPIRES_MAX_DAYS):
        raise _bad(f"expires_days: a whole number of days from 1 to {EXPIRES_MAX_DAYS}, or null")
    return name, tuple(dict.fromkeys(scopes)), days


def _limit(text: str | None) -> int:
    if text is None:
        return AUDIT_DEFAULT
    if not text.isdigit() or int(text) < 1:
        raise _bad("limit: a positive whole number")
    return min(int(text), AUDIT_MAX)


def _cursor(text: str | None) -> list[Cursor] | None:
    if text is None:
        return None
    match = CURSOR.fullmatch(text)
    if match is None:
        raise _bad("after: use the cursor of a previous answer")
    numbers = [int(part) for part in match[1].split(".")[1:]]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def _encode(ends: Sequence[Cursor]) -> str:
    return "v2" + "".join(f".{inode}.{offset}" for inode, offset in ends)


def _filter(params: dict[str, str]) -> Filter:
    """The query's filters in the audit reader's language: each value is a glob (an exact name is one too), and an
    event ending in a dot is the prefix it was before globs (`auth.` = `auth.*`)."""
    event = params.get("event")
    if event is not None and event.endswith("."):
        params = {**params, "event": event + "*"}
    return Filter({key: [value] for key, value in params.items()})


def read_audit(paths: Sequence[Path], limit: int, after: Sequence[Cursor] | None, wanted: Matcher) -> AuditPage:
    """The last `limit` wanted events of the audit files (the calls log, then the security log: Issue 9 item 8),
    merged by time, oldest first, and the cursor after them (audit_reader.read_page)."""
    events, ends = read_page(paths, limit, after, wanted)
    return AuditPage(events, _encode(ends))
