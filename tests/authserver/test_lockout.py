"""A grant's access token keeps its exception to an address lockout (Issue 9 item 10) like any credential: a few
bad tokens from a shared egress address must not lock out every connector behind it (review 2)."""

from pathlib import Path

import httpx

from tests.authserver.support import Browser, builtin_gateway, issue_tokens
from tests.security.support import bearer

FAILURES = 3  # the lockout threshold of this test's gateway


def test_a_grant_token_that_worked_from_an_address_still_works_after_it_is_locked_out(tmp_path: Path) -> None:
    with builtin_gateway(tmp_path, auth_failure_limit=FAILURES) as env, httpx.Client(timeout=10) as http:
        browser = Browser(env)
        try:
            client_id, tokens = issue_tokens(env, browser)
        finally:
            browser.close()
        grant = tokens["access_token"]
        health = f"{env.url}/health"
        assert http.get(health, headers=bearer(grant)).status_code == 200
        assert http.get(health, headers=bearer(env.admin)).status_code == 200
        for attempt in range(FAILURES + 2):
            http.get(health, headers=bearer(f"wrong-token-{attempt}"))
        assert http.get(health, headers=bearer("never-seen-token")).status_code == 429
        assert http.get(health, headers=bearer(env.admin)).status_code == 200
        assert http.get(health, headers=bearer(grant)).status_code == 200
        # The connector refreshes during the lockout: its new access token (signed by the gateway, so no guess) of
        # the same grant passes too; a forged one does not.
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
        refreshed = http.post(f"{env.url}/oauth/token", data=form)
        assert refreshed.status_code == 200, refreshed.text
        assert http.get(health, headers=bearer(refreshed.json()["access_token"])).status_code == 200
        head, body, _ = grant.split(".")
        assert http.get(health, headers=bearer(f"{head}.{body}.forged")).status_code == 429
