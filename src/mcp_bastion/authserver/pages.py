"""The authorization server's pages: plain server-rendered HTML, no script, every value escaped.

They live under the gateway's strict CSP (no inline script or style); the consent page's policy also lets its one
form's answer redirect to the client's origin (browsers apply form-action to the redirect after a form post).
"""

import re
from collections.abc import Iterable
from html import escape
from string import Template
from urllib.parse import urlsplit

from mcp_bastion.middleware.headers import CSP

HTML = (b"content-type", b"text/html; charset=utf-8")
NO_STORE = (b"cache-control", b"no-store")
# With the gateway's `no-referrer`, a browser sends `Origin: null` on a form post, which the Origin check refuses;
# `same-origin` keeps the referrer from every other site (the client's included) and lets the form name its origin.
REFERRER = (b"referrer-policy", b"same-origin")
ORIGIN_SAFE = re.compile(r"[A-Za-z0-9.:\[\]-]+")  # what may follow a scheme in a CSP source: no `;`, no space

PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
$head<title>$title - mcp-bastion</title><link rel="stylesheet" href="/static/app.css"></head>
<body><main class="oauth"><h1>$title</h1>
$body
</main></body></html>
""")

CONSENT = Template("""<p><strong id="client-name">$client</strong> wants to use <strong id="resource">$resource</strong>
on your behalf.</p>
$flag<p>After your answer you will be sent to <strong id="redirect-host">$host</strong>.</p>
<form method="post" action="/oauth/consent">
<input type="hidden" name="request" value="$request">
<input type="hidden" name="csrf_token" value="$csrf">
<fieldset><legend>Allow access to</legend>
$scopes
</fieldset>
$tools
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
""")

SCOPE = Template(
    '<label><input type="checkbox" name="scope" value="$scope"$checked> <code>$scope</code> $meaning</label><br>'
)

LOGIN = Template("""<p>Log in to this gateway to answer <strong>$client</strong>'s request.</p>
$error<form method="post" action="/oauth/login">
<input type="hidden" name="request" value="$request">
<label>Admin token <input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form>
""")


def page(title: str, body: str, head: str = "") -> bytes:
    """A whole page around `body` (already escaped HTML)."""
    return PAGE.substitute(title=escape(title), body=body, head=head).encode("utf-8")


def message(title: str, text: str) -> bytes:
    """A page that only says something (errors, the end of a flow)."""
    return page(title, f'<p id="message">{escape(text)}</p>')


def onward(url: str) -> bytes:
    """A page that moves the browser on to a same-site URL by itself (no script): a navigation this page starts
    is same-site, so the SameSite=Strict login cookie is sent, which a redirect from the client's site would not."""
    target = escape(url, quote=True)
    head = f'<meta http-equiv="refresh" content="0;url={target}">'
    return page("Continue", f'<p><a id="continue" href="{target}">Continue</a></p>', head)


def login(client: str, request: str, error: str | None = None) -> bytes:
    """The login form, bound to one pending request."""
    shown = f'<p id="error">{escape(error)}</p>' if error else ""
    return page("Log in", LOGIN.substitute(client=escape(client), request=escape(request, quote=True), error=shown))


def consent(
    *,
    client: str,
    redirect_uri: str,
    resource: str,
    scopes: Iterable[str],
    tools: Iterable[str] = (),
    first_seen: bool,
    request: str,
    csrf: str,
) -> bytes:
    """The consent page: who asks, where the answer goes, for what, and the scopes to narrow (uncheck a whole
    server and check some of its tools instead)."""
    flag = (
        '<p id="first-seen" class="warning">This client has never been approved here before. '
        "Approve only if you just started connecting it yourself.</p>"
        if first_seen
        else ""
    )
    rows = _boxes(scopes, checked=True)
    narrower = _boxes(tools, checked=False)
    tool_rows = f"<fieldset><legend>Or only these tools</legend>\n{narrower}\n</fieldset>" if narrower else ""
    body = CONSENT.substitute(
        client=escape(client),
        resource=escape(resource),
        host=escape(urlsplit(redirect_uri).netloc),
        flag=flag,
        request=escape(request, quote=True),
        csrf=escape(csrf, quote=True),
        scopes=rows,
        tools=tool_rows,
    )
    return page("Allow access?", body)


def consent_policy(redirect_uri: str) -> tuple[bytes, bytes]:
    """The strict CSP with form-action widened to the client's origin only (the approve/deny redirect); unchanged
    if the origin is not plainly one (registration already refuses such URIs)."""
    parts = urlsplit(redirect_uri)
    origin = f"{parts.scheme}://{parts.netloc}"
    if parts.scheme not in ("http", "https") or not ORIGIN_SAFE.fullmatch(parts.netloc):
        return b"content-security-policy", CSP
    return b"content-security-policy", CSP.replace(b"form-action 'self'", b"form-action 'self' " + origin.encode())


def _boxes(scopes: Iterable[str], *, checked: bool) -> str:
    mark = " checked" if checked else ""
    return "\n".join(
        SCOPE.substitute(scope=escape(s, quote=True), meaning=escape(_meaning(s)), checked=mark) for s in scopes
    )


def _meaning(scope: str) -> str:
    kind, _, rest = scope.partition(":")
    return {
        "server": f"(every tool, resource and prompt of {rest})",
        "tool": f"(the tool {rest})",
        "resource": f"(the resources {rest})",
        "prompt": f"(the prompt {rest})",
    }.get(kind, "")
