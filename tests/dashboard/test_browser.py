"""The dashboard in a real headless Chromium against a real gateway (auth on, two toolbox servers).

Chromium is Debian's /usr/bin/chromium (scripts/install-browser), driven by Playwright for Python; no browser is
ever downloaded. A missing Chromium fails these tests unless BASTION_SKIP_BROWSER=1. Every test also checks that
the page logged no CSP violation, threw no error and opened no dialog. Screenshots go to docs/screenshots/ with
UPDATE_SCREENSHOTS=1.
"""

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import RunningGateway, spec
from tests.security.support import add_token, admin_token, bearer, modern_call, secure_gateway

CHROMIUM = Path(os.environ.get("BASTION_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The committed screenshots are refreshed only on request (UPDATE_SCREENSHOTS=1), so a test run leaves the
# work tree clean; otherwise they go to a scratch folder under the system temp dir.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "mcp-bastion-screenshots"
)
TIMEOUT_MS = 15_000
DESKTOP = {"width": 1180, "height": 720}
PHONE = {"width": 390, "height": 844}
XSS = "<img src=x onerror=alert(1)>"


def _require_browser() -> Any:
    """The Playwright sync API, or a clear failure (a skip only with BASTION_SKIP_BROWSER=1)."""
    if os.environ.get("BASTION_SKIP_BROWSER") == "1":
        pytest.skip("BASTION_SKIP_BROWSER=1")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser (or set BASTION_SKIP_BROWSER=1)", False)
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("the playwright package is missing: scripts/install --dev", False)
    return sync_api


@dataclass
class Gateway:
    gw: RunningGateway
    admin: str
    logs: Path

    @property
    def url(self) -> str:
        return self.gw.url

    def pid(self, name: str) -> int | None:
        return self.gw.app.gateway.handles[name].pid


@dataclass
class Watched:
    """A page with everything it logged: console lines, uncaught errors, dialogs."""

    page: Any
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        csp = [m for m in self.console if "content security policy" in m.lower() or "content-security-policy" in m]
        assert not csp, csp
        assert not self.errors, self.errors
        assert not self.dialogs, self.dialogs


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    return _require_browser()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, playwright_api: Any) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("dashboard")
    admin = admin_token()
    with secure_gateway([spec("toolbox"), spec("spare")], tmp, auth_token=admin) as gw:
        yield Gateway(gw, admin, tmp)


@pytest.fixture(scope="module")
def browser(playwright_api: Any) -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_page(browser: Any, gateway: Gateway) -> Iterator[Any]:
    """open_page(**context_options) → Watched; every page is checked for CSP violations when the test ends."""
    contexts: list[Any] = []
    pages: list[Watched] = []

    def make(**options: Any) -> Watched:
        context = browser.new_context(base_url=gateway.url, viewport=options.pop("viewport", DESKTOP), **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        watched = Watched(page)
        page.on("console", lambda m: watched.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: watched.errors.append(str(e)))

        def on_dialog(dialog: Any) -> None:
            watched.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        pages.append(watched)
        return watched

    yield make
    for context in contexts:
        context.close()
    for watched in pages:
        watched.assert_clean()


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=TIMEOUT_MS)
    return pw_expect(target)


def login(w: Watched, token: str, view: str = "servers") -> None:
    page = w.page
    page.goto(f"/#{view}")
    expect(page.locator("#view-login")).to_be_visible()
    page.fill("#login-token", token)
    page.click("#login-submit")
    expect(page.locator(f"#view-{view}")).to_be_visible()
    expect(page.locator("#who-name")).to_contain_text("admin")


def shot(w: Watched, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    w.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def server_row(page: Any, name: str) -> Any:
    return page.locator(f'#servers-table tbody tr[data-server="{name}"]')


def test_login_shows_the_servers_table_and_logout_ends_the_session(open_page: Any, gateway: Gateway) -> None:
    w = open_page()
    page = w.page
    page.goto("/")
    expect(page.locator("#view-login")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    shot(w, "login")
    page.fill("#login-token", "wrong-" + "x" * 40)
    page.click("#login-submit")
    expect(page.locator("#status")).to_contain_text("Login failed")
    expect(page.locator("#view-login")).to_be_visible()

    login(w, gateway.admin)
    for name in ("toolbox", "spare"):
        row = server_row(page, name)
        expect(row.locator("td.state")).to_have_text("running")
        expect(row.locator("td.pid")).to_have_text(str(gateway.pid(name)))
        expect(row.locator("button[data-action=restart]")).to_be_visible()
    expect(page.locator("#servers-summary")).to_contain_text("2 servers")
    shot(w, "servers")

    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert "bastion_session" in cookies
    page.click("#logout")
    expect(page.locator("#view-login")).to_be_visible()
    gone = httpx.get(f"{gateway.url}/auth/session", headers={"Cookie": f"bastion_session={cookies['bastion_session']}"})
    assert gone.status_code == 401
    w.assert_clean()


def test_restart_from_the_table_changes_the_pid(open_page: Any, gateway: Gateway) -> None:
    w = open_page()
    page = w.page
    login(w, gateway.admin)
    row = server_row(page, "toolbox")
    expect(row.locator("td.state")).to_have_text("running")
    old_pid = row.locator("td.pid").inner_text()
    assert old_pid == str(gateway.pid("toolbox"))
    row.locator("button[data-action=restart]").click()
    expect(row.locator("td.pid")).not_to_have_text(old_pid)
    expect(row.locator("td.restarts")).to_have_text(re.compile(r"^\d+$"))  # crash restarts; a manual one resets
    expect(row.locator("td.state")).to_have_text("running")
    expect(row.locator("td.pid")).to_have_text(str(gateway.pid("toolbox")))
    expect(page.locator("#status")).to_contain_text("restart done")
    w.assert_clean()


def test_revoking_a_login_session_in_the_ui_ends_it(open_page: Any, gateway: Gateway) -> None:
    ops = add_token(gateway.gw, "ops", "admin")
    other = httpx.post(f"{gateway.url}/auth/login", json={"token": ops})
    assert other.status_code == 200, other.text
    jar = {"Cookie": f"bastion_session={other.cookies['bastion_session']}"}
    assert httpx.get(f"{gateway.url}/auth/session", headers=jar).status_code == 200

    w = open_page()
    page = w.page
    login(w, gateway.admin, "sessions")
    target = page.locator("#sessions-table tbody tr[data-kind=login]").filter(has_text="ops")
    expect(target).to_have_count(1)
    expect(page.locator("#sessions-table tbody tr").filter(has_text="(you)")).to_have_count(1)
    shot(w, "sessions")
    target.get_by_role("button", name=re.compile("^Revoke")).click()
    expect(target).to_have_count(0)
    expect(page.locator("#status")).to_contain_text("Revoked the login session of ops")
    assert httpx.get(f"{gateway.url}/auth/session", headers=jar).status_code == 401
    w.assert_clean()


def test_audit_rows_appear_live_without_a_reload(open_page: Any, gateway: Gateway) -> None:
    w = open_page()
    page = w.page
    login(w, gateway.admin, "audit")
    rows = page.locator("#audit-table tbody tr[data-event]")
    expect(rows.first).to_be_visible()
    page.evaluate("window.__no_reload = 1")
    failures = page.locator('#audit-table tbody tr[data-event="auth.failure"]')
    before = failures.count()

    refused = httpx.post(f"{gateway.url}/auth/login", json={"token": "not-a-token-" + "y" * 40})
    assert refused.status_code == 401
    expect(failures).to_have_count(before + 1, timeout=10_000)
    assert page.evaluate("window.__no_reload") == 1
    expect(rows.first).to_have_attribute("data-event", "auth.failure")  # newest on top
    expect(failures.first.locator("td").nth(2)).to_have_text("denied")

    page.select_option("#f-outcome", "denied")
    expect(page.locator('#audit-table tbody tr[data-event="session.login"]')).to_have_count(0)
    expect(failures.first).to_be_visible()
    page.select_option("#f-outcome", "")
    expect(page.locator('#audit-table tbody tr[data-event="session.login"]').first).to_be_visible()
    shot(w, "audit")
    w.assert_clean()


def test_create_a_token_shown_once_copied_and_revoked(open_page: Any, gateway: Gateway) -> None:
    w = open_page(permissions=["clipboard-read", "clipboard-write"])
    page = w.page
    login(w, gateway.admin, "tokens")
    page.fill("#t-name", "ci-bot")
    page.fill("#t-scopes", "server:toolbox, server:spare")
    page.fill("#t-expires", "30")
    page.click("#t-create")
    value_box = page.locator("#new-token-value")
    expect(value_box).to_be_visible()
    expect(value_box).not_to_be_empty()
    value = value_box.inner_text().strip()
    row = page.locator('#tokens-table tbody tr[data-token="ci-bot"]')
    expect(row).to_contain_text("server:toolbox")
    expect(row).to_contain_text("never")  # not used yet
    shot(w, "tokens")

    who = httpx.get(f"{gateway.url}/auth/session", headers=bearer(value))
    assert who.status_code == 200, who.text
    assert who.json()["principal"] == "ci-bot"

    page.click("#new-token-copy")
    expect(page.locator("#status")).to_contain_text("copied")
    assert page.evaluate("navigator.clipboard.readText()") == value
    page.click("#new-token-done")
    expect(page.locator("#new-token")).to_be_hidden()
    page.click("#tokens-refresh")
    expect(row).to_be_visible()
    assert value not in page.content()
    page.reload()
    expect(row).to_be_visible()
    assert value not in page.content()

    row.get_by_role("button", name="Revoke token ci-bot").click()
    expect(row).to_have_count(0)
    assert httpx.get(f"{gateway.url}/auth/session", headers=bearer(value)).status_code == 401
    w.assert_clean()


def test_html_in_audit_fields_is_shown_as_text(open_page: Any, gateway: Gateway) -> None:
    with httpx.Client(timeout=10) as client:
        call = modern_call(client, gateway.gw.mcp("toolbox"), gateway.admin, "tools/call", {"name": XSS})
    assert call.status_code in (200, 400, 404), call.text
    w = open_page()
    page = w.page
    login(w, gateway.admin, "audit")
    cell = page.locator("#audit-table tbody td.tool", has_text=XSS)
    expect(cell.first).to_be_visible()
    assert XSS in cell.first.inner_text()
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("#audit-table img").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert not w.dialogs
    w.assert_clean()


def test_phone_width_has_no_horizontal_overflow(open_page: Any, gateway: Gateway) -> None:
    w = open_page(viewport=PHONE, is_mobile=True, has_touch=True)
    page = w.page
    overflow = "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth"
    page.goto("/")
    expect(page.locator("#view-login")).to_be_visible()
    assert page.evaluate(overflow) <= 0
    login(w, gateway.admin)
    for view in ("servers", "sessions", "audit", "tokens"):
        page.locator(f'#nav a[data-view="{view}"]').click()
        expect(page.locator(f"#view-{view}")).to_be_visible()
        expect(page.locator(f"#{view}-table tbody tr").first).to_be_visible()
        assert page.evaluate(overflow) <= 0, view
        if view == "servers":
            shot(w, "phone-servers")
    wrap = page.locator("#view-tokens .table-wrap")
    assert wrap.evaluate("e => getComputedStyle(e).overflowX") == "auto"
    w.assert_clean()


def test_dark_mode_follows_the_system(open_page: Any, gateway: Gateway) -> None:
    colors = {}
    for scheme in ("light", "dark"):
        w = open_page(color_scheme=scheme)
        login(w, gateway.admin)
        colors[scheme] = w.page.evaluate("getComputedStyle(document.body).backgroundColor")
        if scheme == "dark":
            shot(w, "servers-dark")
        w.assert_clean()
    assert colors["light"] != colors["dark"], colors


def test_keyboard_alone_logs_in(open_page: Any, gateway: Gateway) -> None:
    w = open_page()
    page = w.page
    page.goto("/")
    expect(page.locator("#login-token")).to_be_focused()
    page.keyboard.type(gateway.admin)
    for _ in range(20):
        if page.evaluate("document.activeElement && document.activeElement.id") == "login-submit":
            break
        page.keyboard.press("Tab")
    expect(page.locator("#login-submit")).to_be_focused()
    outline = page.locator("#login-submit").evaluate("e => getComputedStyle(e).outlineStyle")
    assert outline != "none", "the focused button shows no focus ring"
    page.keyboard.press("Enter")
    expect(page.locator("#view-servers")).to_be_visible()
    expect(server_row(page, "toolbox").locator("td.state")).to_have_text("running")
    w.assert_clean()


def test_the_instances_table_shows_this_instance_to_admins_only(open_page: Any, gateway: Gateway) -> None:
    """Issue 12 item 6: one instance (no REDIS_URL) is listed from local state; a non-admin sees no instances."""
    me = gateway.gw.app.settings.instance_id
    w = open_page()
    page = w.page
    login(w, gateway.admin)
    row = page.locator(f'#instances-table tbody tr[data-instance="{me}"]')
    expect(row.locator("th")).to_contain_text(f"{me} (this one)")
    expect(row.locator("td.url")).to_have_text(gateway.url)
    expect(row.locator("td.children")).to_have_text("2")  # toolbox and spare
    expect(row.locator("td.heartbeat")).to_have_text(re.compile(r"^\d+s ago$"))
    expect(row.locator("td.state")).to_have_text("serving")
    expect(page.locator("#instances-summary")).to_contain_text("1 instance · one instance (no cluster)")
    w.assert_clean()

    reader = add_token(gateway.gw, "instances-reader", "server:toolbox")
    w = open_page()
    page = w.page
    page.goto("/#servers")
    page.fill("#login-token", reader)
    page.click("#login-submit")
    expect(server_row(page, "toolbox").locator("td.state")).to_have_text("running")
    expect(page.locator("#instances-table")).to_be_hidden()
    expect(page.locator("#instances-table tbody tr")).to_have_count(0)
    w.assert_clean()
