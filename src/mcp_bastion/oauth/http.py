"""The one HTTP seam of the OAuth package (httpx2, which the `mcp` runtime dependency brings): JSON documents from
the identity provider (discovery, JWKS, introspection), each bounded in time and size, never blocking the loop.

Every failure (connection, timeout, status, size, not JSON) is an `OAuthFetchError` naming the URL's purpose, never
the body (an introspection answer may echo a token).
"""

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson

FETCH_TIMEOUT_S = 5.0  # one whole fetch (connect + headers + body): an IdP slower than this is treated as down
DOCUMENT_MAX_BYTES = 256 * 1024  # a JWKS of a hundred RSA-4096 keys is ~80 KiB; more is not a key set
MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})", re.IGNORECASE)
NO_CACHE = re.compile(r"(?:^|[,\s])(no-store|no-cache)(?:$|[,\s=])", re.IGNORECASE)
USER_AGENT = "mcp-bastion (OAuth resource server)"


class OAuthFetchError(Exception):
    """A document could not be fetched or read (the caller fails closed)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A JSON object and how long it may be cached (None: the response said nothing; 0: do not cache)."""

    document: dict[str, Any]
    max_age_s: int | None


class JsonFetcher:
    """GETs and form POSTs returning JSON objects; one connection pool per gateway instance."""

    def __init__(self, *, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._client: httpx2.AsyncClient | None = None

    def _pool(self) -> httpx2.AsyncClient:
        if self._client is None:
            timeout = httpx2.Timeout(self.timeout_s)
            self._client = httpx2.AsyncClient(
                timeout=timeout, follow_redirects=False, headers={"user-agent": USER_AGENT}
            )
        return self._client

    async def get(self, url: str, what: str) -> Fetched:
        """GET a JSON object.

        Raises:
            OAuthFetchError: unreachable, slower than the bound, not 200, too large or not a JSON object.
        """
        return await self._fetch("GET", url, what, None, None)

    async def post_form(self, url: str, what: str, form: dict[str, str], basic: tuple[str, str]) -> Fetched:
        """POST a form with HTTP Basic client credentials (RFC 7662 section 2.1) and read the JSON object answered.

        Raises:
            OAuthFetchError: as `get`.
        """
        return await self._fetch("POST", url, what, form, basic)

    async def _fetch(
        self, method: str, url: str, what: str, form: dict[str, str] | None, basic: tuple[str, str] | None
    ) -> Fetched:
        try:
            async with asyncio.timeout(self.timeout_s):
                client = self._pool()
                request = client.build_request(method, url, data=form, headers={"accept": "application/json"})
                auth = httpx2.BasicAuth(*basic) if basic is not None else None
                response = await client.send(request, stream=True, auth=auth)
                try:
                    body = await _read_capped(response, what)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise OAuthFetchError(f"{what}: no answer within {self.timeout_s:g} s") from None
        except httpx2.HTTPError as exc:
            raise OAuthFetchError(f"{what}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise OAuthFetchError(f"{what}: HTTP {response.status_code}")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise OAuthFetchError(f"{what}: not JSON") from None
        if not isinstance(document, dict):
            raise OAuthFetchError(f"{what}: not a JSON object")
        return Fetched(document, cache_lifetime(response.headers.get("cache-control")))

    async def close(self) -> None:
        """Close the connection pool (the gateway's shutdown)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def _read_capped(response: httpx2.Response, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > DOCUMENT_MAX_BYTES:
            raise OAuthFetchError(f"{what}: larger than {DOCUMENT_MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def cache_lifetime(header: str | None) -> int | None:
    """Seconds a response may be reused per its Cache-Control (None: not said; 0: no-store / no-cache)."""
    if not header:
        return None
    if NO_CACHE.search(header):
        return 0
    found = MAX_AGE.search(header)
    return int(found.group(1)) if found else None
