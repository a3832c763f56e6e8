"""Opaque access tokens: RFC 7662 introspection at the issuer, answers cached for the token's remaining life
capped at `INTROSPECTION_CACHE_MAX_S` (a token revoked at the IdP stops working within that).

The cache is keyed by the token's hash, never the token. An inactive answer is cached too (for the same cap), so a
client retrying a dead token does not turn each retry into a call to the IdP.
"""

import time
from collections.abc import Callable
from typing import Any

from mcp_bastion.oauth.http import JsonFetcher

INTROSPECTION_CACHE_MAX_S = 60.0  # a revocation at the IdP takes effect here within a minute
INTROSPECTION_CACHE_MAX_ENTRIES = 10_000  # tokens remembered; past it the oldest are forgotten (they re-introspect)


class Introspector:
    """Asks the issuer about opaque tokens (`active`, `exp`, `aud`, `scope`, `sub`...) and caches the answers."""

    def __init__(
        self,
        fetcher: JsonFetcher,
        *,
        url: str,
        client_id: str,
        client_secret: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fetcher = fetcher
        self.url = url
        self._credentials = (client_id, client_secret)
        self.clock = clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self.calls = 0  # introspection requests made (tests read it)

    async def introspect(self, token: str, digest: str) -> dict[str, Any]:
        """The issuer's answer about `token` (cached by `digest`); `{"active": False}` when it is not active.

        Raises:
            OAuthFetchError: the endpoint cannot be reached or answered nonsense (the caller fails closed).
        """
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and now < cached[0]:
            return cached[1]
        self.calls += 1
        form = {"token": token, "token_type_hint": "access_token"}
        answer = (await self.fetcher.post_form(self.url, "introspection", form, self._credentials)).document
        if answer.get("active") is not True:
            answer = {"active": False}
        self._remember(digest, answer, now)
        return answer

    def _remember(self, digest: str, answer: dict[str, Any], now: float) -> None:
        exp = answer.get("exp")
        until = now + INTROSPECTION_CACHE_MAX_S
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            until = min(until, float(exp))
        if len(self._cache) >= INTROSPECTION_CACHE_MAX_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= INTROSPECTION_CACHE_MAX_ENTRIES:
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = (until, answer)
