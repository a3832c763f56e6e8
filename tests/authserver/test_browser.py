"""The consent flow in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): the login form,
the consent page under the strict CSP (no script; its form's redirect to the client allowed by form-action), a
scope narrowed by unchecking it, the redirect back with code, state and iss; then the dashboard's token list shows
the grant as oauth:<client name> and its Revoke button ends it (Issue 14). No CSP violation, error or dialog."""

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.authserver.support import REDIRECT, Builtin, authorize_params, builtin_gateway, pkce, query_of, redeem
from tests.authserver.support import register as register_client
from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, Watched, _require_browser, expect
from tests.security.support import modern_call


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    return _require_browser()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, playwright_api: Any) -> Iterator[Builtin]:
    with builtin_gateway(tmp_path_factory.mktemp("authserver-browser")) as running:
        yield running


@pytest.fixture
def watched(playwright_api: Any, env: Builtin) -> Iterator[Watched]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = chromium.new_context(base_url=env.url)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            seen = Watched(page)
            page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))
            yield seen
            context.close()
        finally:
            chromium.close()
        seen.assert_clean()


def test_a_browser_logs_in_narrows_a_scope_approves_and_revokes_from_the_dashboard(
    watched: Watched, env: Builtin
) -> None:
    page = watched.page
    client_id = register_client(env, name="Browser Client")
    verifier, challenge = pkce()
    params = authorize_params(client_id, challenge, resource=env.url, scope="server:*")
    landed: list[str] = []

    def callback(route: Any) -> None:  # the client's loopback redirect, answered without a listener
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="done")

    page.route(REDIRECT + "?*", callback)
    page.goto("/oauth/authorize?" + urlencode(params))
    expect(page.locator("input[name=token]")).to_be_visible()  # the meta refresh led to the login form
    page.fill("input[name=token]", env.admin)
    page.click("button[type=submit]")
    expect(page.locator("#client-name")).to_have_text("Browser Client")
    expect(page.locator("#first-seen")).to_be_visible()
    expect(page.locator("#redirect-host")).to_have_text("127.0.0.1:33418")
    page.uncheck("input[name=scope][value='server:other']")
    page.click("button[name=decision][value=approve]")
    page.wait_for_url(REDIRECT + "?*")
    back = query_of(landed[0])
    assert (back["state"], back["iss"]) == (params["state"], env.url)
    tokens = redeem(env, client_id, back["code"], verifier).json()
    assert tokens["scope"] == "server:toolbox"

    page.goto("/#tokens")  # the login session the consent flow opened is the dashboard's
    row = page.locator('#tokens-table tbody tr[data-token="oauth:Browser Client"]')
    expect(row).to_contain_text("server:toolbox")
    row.locator("button").click()
    expect(row).to_have_count(0)
    with httpx.Client(timeout=10) as client:
        assert modern_call(client, env.gw.mcp("toolbox"), tokens["access_token"], "tools/list").status_code == 401


def test_a_logged_in_operator_arriving_from_the_clients_site_goes_straight_to_consent(
    watched: Watched, env: Builtin
) -> None:
    """The SameSite=Strict login cookie is not sent on the cross-site navigation from the client; the page that
    moves the browser on (a same-site navigation) gets it sent, so no second login is asked for."""
    page = watched.page
    client_id = register_client(env, name="Cross Site")
    _, challenge = pkce()
    page.goto("/oauth/authorize?" + urlencode(authorize_params(client_id, challenge, resource=env.resource())))
    page.fill("input[name=token]", env.admin)
    page.click("button[type=submit]")
    expect(page.locator("#client-name")).to_have_text("Cross Site")  # logged in now

    target = f"{env.url}/oauth/authorize?" + urlencode(authorize_params(client_id, pkce()[1], resource=env.resource()))
    link = f'<a id="connect" href="{target}">Connect</a>'
    page.route("https://client.example.test/start", lambda route: route.fulfill(content_type="text/html", body=link))
    sent: dict[str, bool] = {}
    page.on("request", lambda r: sent.setdefault(r.url.split("?")[0], "cookie" in r.all_headers()))
    page.goto("https://client.example.test/start")
    page.click("#connect")
    expect(page.locator("#client-name")).to_have_text("Cross Site")
    expect(page.locator("input[name=token]")).to_have_count(0)
    assert sent[f"{env.url}/oauth/authorize"] is False  # cross-site: the Strict cookie withheld
    assert sent[f"{env.url}/oauth/consent"] is True  # the onward page's own navigation: sent
