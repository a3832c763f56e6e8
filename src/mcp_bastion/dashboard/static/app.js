// mcp-bastion dashboard: plain ES2020, no framework, no build step, no inline script (strict CSP).
// Every value from the server is rendered with textContent / createElement, never innerHTML.
"use strict";

(() => {
  const VIEWS = ["servers", "sessions", "audit", "tokens"];
  const SERVERS_POLL_MS = 5000;
  const AUDIT_POLL_MS = 2000;
  const AUDIT_MAX_ROWS = 500;
  const AUDIT_KNOWN = new Set(["time", "event", "outcome", "reason", "ip", "principal", "server", "method", "tool", "line"]);

  const state = {
    me: null, // {principal, scopes, via, id?}
    csrf: null, // from the login response; the csrf_token cookie is preferred
    view: null,
    timer: null,
    audit: { events: [], keys: new Set(), cursor: null, busy: false, generation: 0 },
    servers: [],
    instances: null, // {instance, source, instances: [...]} from the overview (admins only)
  };

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers (text only) -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const cell = (value, className) => el("td", { className }, value === null || value === undefined ? "—" : value);

  function setStatus(message, kind) {
    const box = $("status");
    box.textContent = message || "";
    box.className = "status" + (kind ? " " + kind : "");
  }

  // ---- formatting --------------------------------------------------------------------------------------

  function toDate(value) {
    if (value === null || value === undefined || value === "") return null;
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  const pad = (n) => String(n).padStart(2, "0");

  function fmtTime(value) {
    const d = toDate(value);
    if (!d) return value ? String(value) : "—";
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "—";
    let s = Math.max(0, Math.floor(Number(seconds)));
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  function fmtNumber(value, digits) {
    if (value === null || value === undefined || value === "") return "—";
    const n = Number(value);
    if (Number.isNaN(n)) return String(value);
    return digits ? n.toFixed(digits) : String(n);
  }

  function badge(text, tone) {
    return el("span", { className: `badge ${tone}` }, text);
  }

  function stateTone(s) {
    switch (s) {
      case "running": return "good";
      case "starting": case "restarting": case "stopping": case "backoff": return "warn";
      case "failed": case "crashed": case "unresponsive": return "bad";
      case "per-session": return "info";
      default: return "muted";
    }
  }

  function outcomeTone(o) {
    if (o === "ok") return "good";
    if (o === "denied" || o === "forbidden" || o === "error" || o === "failed") return "bad";
    if (o === "cancelled" || o === "timeout") return "warn";
    return "muted";
  }

  // ---- HTTP --------------------------------------------------------------------------------------------

  function csrfToken() {
    for (const part of document.cookie.split(";")) {
      const [name, ...rest] = part.trim().split("=");
      if (name === "csrf_token" && rest.length) return decodeURIComponent(rest.join("="));
    }
    return state.csrf;
  }

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method, credentials: "same-origin", headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET" && method !== "HEAD") {
      const token = csrfToken();
      if (token) headers["X-CSRF-Token"] = token;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new HttpError(0, "The gateway is unreachable");
    }
    let data = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) {
      try { data = await response.json(); } catch (err) { data = null; }
    }
    if (!response.ok) {
      const message = (data && (data.message || data.error)) || `${response.status} ${response.statusText}`;
      const error = new HttpError(response.status, String(message));
      if (response.status === 401 && path !== "/auth/login") sessionEnded();
      throw error;
    }
    return data || {};
  }

  function report(err, what) {
    if (err instanceof HttpError && err.status === 401) return; // sessionEnded() already said so
    const message = err && err.message ? err.message : String(err);
    setStatus(`${what}: ${message}`, "error");
  }

  // ---- session -----------------------------------------------------------------------------------------

  const isAdmin = () => Boolean(state.me && (state.me.scopes || []).includes("admin"));

  function sessionEnded() {
    if (!state.me) return;
    state.me = null;
    state.csrf = null;
    setStatus("Your session has ended; log in again.", "error");
    render();
  }

  async function loadSession() {
    try {
      const me = await fetch("/auth/session", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      state.me = me.ok ? await me.json() : null;
    } catch (err) {
      state.me = null;
      setStatus("The gateway is unreachable", "error");
    }
  }

  async function login(event) {
    event.preventDefault();
    const input = $("login-token");
    const token = input.value.trim();
    if (!token) {
      setStatus("Enter a token.", "error");
      input.focus();
      return;
    }
    const button = $("login-submit");
    button.disabled = true;
    setStatus("Logging in…");
    try {
      const data = await api("POST", "/auth/login", { token });
      input.value = "";
      state.csrf = data.csrf_token || null;
      state.me = { principal: data.principal, scopes: data.scopes || [], via: "cookie", expires: data.expires };
      await loadSession(); // the session id, to mark it in the sessions list
      setStatus(`Logged in as ${data.principal}.`, "ok");
      if (!VIEWS.includes(location.hash.slice(1))) location.hash = "#servers";
      render();
      const heading = document.querySelector(".view:not([hidden]) h1");
      if (heading) { heading.tabIndex = -1; heading.focus(); }
    } catch (err) {
      setStatus(err.status === 401 ? "Login failed: invalid or expired token." : `Login failed: ${err.message}`, "error");
      input.select();
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try {
      await api("POST", "/auth/logout");
    } catch (err) {
      // the session may be gone already; log out locally regardless
    }
    state.me = null;
    state.csrf = null;
    clearNewToken();
    setStatus("Logged out.", "ok");
    render();
  }

  // ---- rendering and navigation ------------------------------------------------------------------------

  function stopTimer() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  function schedule(fn, ms) {
    stopTimer();
    state.timer = setTimeout(fn, ms);
  }

  function render() {
    stopTimer();
    const loggedIn = Boolean(state.me);
    const wanted = location.hash.slice(1);
    const view = loggedIn ? (VIEWS.includes(wanted) ? wanted : "servers") : "login";
    if (view !== "tokens") clearNewToken();
    state.view = view;
    for (const name of ["login", ...VIEWS]) $(`view-${name}`).hidden = name !== view;
    $("nav").hidden = !loggedIn;
    $("who").hidden = !loggedIn;
    document.body.classList.toggle("admin", isAdmin());
    $("who-name").textContent = loggedIn ? `${state.me.principal}${isAdmin() ? " (admin)" : ""}` : "";
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${view[0].toUpperCase()}${view.slice(1)} · mcp-bastion`;
    if (view === "login") {
      $("login-token").focus();
    } else if (view === "servers") {
      refreshServers();
    } else if (view === "sessions") {
      refreshSessions();
    } else if (view === "audit") {
      resetAudit();
    } else if (view === "tokens") {
      refreshTokens();
    }
  }

  // ---- servers -----------------------------------------------------------------------------------------

  async function fetchOverview() {
    try {
      return await api("GET", "/api/overview");
    } catch (err) {
      if (err.status !== 404) throw err;
      // Older gateways: no /api yet; /mcp/servers has the same server views (without calls per minute).
      const data = await api("GET", "/mcp/servers");
      return { servers: data.servers || [] };
    }
  }

  async function refreshServers() {
    try {
      const data = await fetchOverview();
      if (state.view !== "servers") return;
      state.servers = data.servers || [];
      if (data.version) $("version").textContent = `v${data.version}`;
      const parts = [];
      if (data.status) parts.push(`status ${data.status}`);
      parts.push(`${state.servers.length} server${state.servers.length === 1 ? "" : "s"}`);
      $("servers-summary").textContent = parts.join(" · ");
      renderServers();
      renderInstances(data);
    } catch (err) {
      report(err, "Servers");
    }
    if (state.view === "servers" && state.me) schedule(refreshServers, SERVERS_POLL_MS);
  }

  function renderServers() {
    const body = $("servers-table").tBodies[0];
    const rows = state.servers.map((s) => {
      const shared = s.isolation !== "per-session" && s.state !== "per-session";
      const actions = el("td", { className: "admin-only actions" });
      if (shared) {
        for (const action of ["start", "stop", "restart"]) {
          const label = action[0].toUpperCase() + action.slice(1);
          actions.append(el("button", {
            type: "button",
            className: `btn small${action === "stop" ? " danger" : ""}`,
            "data-action": action,
            "aria-label": `${label} ${s.name}`,
            onclick: (e) => manage(s.name, action, e.currentTarget),
          }, label));
        }
      } else {
        actions.append(el("span", { className: "hint" }, "one child per session"));
      }
      return el("tr", { "data-server": s.name },
        el("th", { scope: "row" }, s.name),
        el("td", { className: "state" }, badge(s.state || "unknown", stateTone(s.state))),
        cell(s.pid, "num pid"),
        cell(fmtDuration(s.uptime_s), "uptime"),
        cell(fmtNumber(s.restarts), "num restarts"),
        cell(fmtNumber(s.sessions), "num clients"),
        cell(fmtNumber(s.calls_per_minute, s.calls_per_minute % 1 ? 1 : 0), "num cpm"),
        cell(fmtNumber(s.calls), "num calls"),
        cell(s.last_error || "—", "error-line"),
        actions,
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 10, className: "empty" }, "No servers configured.")));
    body.replaceChildren(...rows);
  }

  const SOURCES = {
    local: "one instance (no cluster)",
    cluster: "from the cluster registry",
    "cluster unavailable": "the cluster registry is unreachable: this instance only",
  };

  function renderInstances(data) {
    const list = Array.isArray(data.instances) ? data.instances : [];
    $("instances-summary").textContent = list.length
      ? `${list.length} instance${list.length === 1 ? "" : "s"} · ${SOURCES[data.source] || data.source || ""}`
      : "";
    const rows = list.map((i) => el("tr", { "data-instance": i.id },
      el("th", { scope: "row" }, i.id, i.this ? el("span", { className: "you" }, " (this one)") : null),
      el("td", { className: "url" }, el("code", {}, i.advertise_url)),
      cell(fmtDuration(i.uptime_s), "uptime"),
      cell(fmtNumber(i.sessions), "num sessions"),
      cell(fmtNumber(i.children), "num children"),
      cell(`${fmtDuration(i.heartbeat_age_s)} ago`, "heartbeat"),
      el("td", { className: "state" }, badge(i.draining ? "draining" : "serving", i.draining ? "warn" : "good")),
    ));
    // Only admins get instances; for anyone else the (hidden) table stays empty.
    if (!rows.length && Array.isArray(data.instances)) {
      rows.push(el("tr", {}, el("td", { colspan: 7, className: "empty" }, "No instance information.")));
    }
    $("instances-table").tBodies[0].replaceChildren(...rows);
  }

  async function manage(name, action, button) {
    button.disabled = true;
    setStatus(`${action} ${name}…`);
    try {
      const view = await api("POST", `/mcp/${encodeURIComponent(name)}/${action}`);
      setStatus(`${name}: ${action} done, now ${view.state || "unknown"}${view.pid ? ` (pid ${view.pid})` : ""}.`, "ok");
      const index = state.servers.findIndex((s) => s.name === name);
      if (index >= 0) state.servers[index] = { ...state.servers[index], ...view };
      renderServers();
    } catch (err) {
      report(err, `${action} ${name}`);
    } finally {
      button.disabled = false;
    }
    if (state.view === "servers") schedule(refreshServers, 800);
  }

  // ---- sessions ----------------------------------------------------------------------------------------

  async function refreshSessions() {
    try {
      const data = await api("GET", "/admin/sessions");
      if (state.view !== "sessions") return;
      renderSessions(data.sessions || []);
    } catch (err) {
      if (err.status === 403) {
        $("sessions-table").tBodies[0].replaceChildren(
          el("tr", {}, el("td", { colspan: 7, className: "empty" }, "Sessions are for admins only.")));
        return;
      }
      report(err, "Sessions");
    }
  }

  function renderSessions(sessions) {
    const mine = state.me && state.me.id;
    const logins = sessions.filter((s) => s.kind === "login").length;
    $("sessions-summary").textContent = `${logins} login · ${sessions.length - logins} MCP client`;
    const rows = sessions.map((s) => {
      const where = s.kind === "mcp" ? [s.server, s.era, s.client].filter(Boolean).join(" · ") : s.client_ip;
      const own = mine && s.id === mine;
      return el("tr", { "data-session": s.id, "data-kind": s.kind },
        el("td", {}, badge(s.kind === "mcp" ? "MCP client" : "login", s.kind === "mcp" ? "info" : "muted")),
        el("th", { scope: "row" }, s.principal || "—", own ? el("span", { className: "you" }, " (you)") : null),
        cell(where || "—"),
        cell(fmtDuration(s.age_s), "num"),
        cell(s.expires ? fmtTime(s.expires) : "—"),
        el("td", {}, el("code", {}, s.id)),
        el("td", { className: "actions" }, el("button", {
          type: "button",
          className: "btn small danger",
          "aria-label": `Revoke ${s.kind} session of ${s.principal || "unknown"} (${s.id})`,
          onclick: (e) => revokeSession(s, e.currentTarget),
        }, "Revoke")),
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, className: "empty" }, "No sessions.")));
    $("sessions-table").tBodies[0].replaceChildren(...rows);
  }

  async function revokeSession(session, button) {
    button.disabled = true;
    try {
      await api("DELETE", `/admin/sessions/${encodeURIComponent(session.id)}`);
      setStatus(`Revoked the ${session.kind} session of ${session.principal || "unknown"}.`, "ok");
    } catch (err) {
      button.disabled = false;
      report(err, "Revoke");
      return;
    }
    if (state.me && state.me.id === session.id) {
      sessionEnded();
      return;
    }
    refreshSessions();
  }

  // ---- audit -------------------------------------------------------------------------------------------

  function auditFilters() {
    const params = new URLSearchParams();
    for (const [id, key] of [["f-event", "event"], ["f-outcome", "outcome"], ["f-server", "server"], ["f-principal", "principal"]]) {
      const value = $(id).value.trim();
      if (value) params.set(key, value);
    }
    return params;
  }

  function auditKey(e) {
    return e.line !== undefined && e.line !== null ? `l:${e.line}` : `j:${JSON.stringify(e)}`;
  }

  function resetAudit() {
    const a = state.audit;
    a.generation += 1;
    a.events = [];
    a.keys = new Set();
    a.cursor = null;
    $("audit-table").tBodies[0].replaceChildren();
    pollAudit(a.generation, true);
  }

  async function pollAudit(generation, first) {
    const a = state.audit;
    if (generation !== a.generation || state.view !== "audit" || !state.me) return;
    const params = auditFilters();
    if (first) params.set("limit", "200");
    else if (a.cursor) params.set("after", a.cursor);
    let added = 0;
    try {
      const data = await api("GET", `/api/audit?${params}`);
      if (generation !== a.generation) return;
      if (data.cursor !== undefined && data.cursor !== null) a.cursor = String(data.cursor);
      // The API answers oldest first; the table shows newest first (new lines go on top).
      const fresh = [];
      for (const event of data.events || []) {
        if (!event || typeof event !== "object") continue;
        const key = auditKey(event);
        if (a.keys.has(key)) continue;
        a.keys.add(key);
        fresh.push(event);
      }
      added = fresh.length;
      if (added || first) {
        a.events = fresh.reverse().concat(a.events);
        if (a.events.length > AUDIT_MAX_ROWS) {
          for (const gone of a.events.splice(AUDIT_MAX_ROWS)) a.keys.delete(auditKey(gone));
        }
        renderAudit();
      }
      $("audit-summary").textContent = `${a.events.length} event${a.events.length === 1 ? "" : "s"} shown` +
        ($("f-live").checked ? " · live" : " · paused");
    } catch (err) {
      if (generation !== a.generation) return;
      report(err, "Audit");
    }
    if (generation === a.generation && state.view === "audit" && state.me && $("f-live").checked) {
      schedule(() => pollAudit(generation, false), AUDIT_POLL_MS);
    }
  }

  function renderAudit() {
    const a = state.audit;
    const events = new Set();
    const servers = new Set(state.servers.map((s) => s.name));
    const rows = a.events.map((e) => {
      if (e.event) events.add(String(e.event));
      if (e.server) servers.add(String(e.server));
      const extra = {};
      for (const [k, v] of Object.entries(e)) if (!AUDIT_KNOWN.has(k)) extra[k] = v;
      const details = Object.keys(extra).length ? JSON.stringify(extra) : "";
      const what = [e.method, e.tool].filter((v) => v !== undefined && v !== null && v !== "").join(" · ");
      return el("tr", { "data-event": e.event },
        el("td", { className: "nowrap" }, el("time", { datetime: e.time }, fmtTime(e.time))),
        el("td", { className: "nowrap" }, e.event === undefined ? "—" : String(e.event)),
        el("td", {}, e.outcome ? badge(String(e.outcome), outcomeTone(e.outcome)) : "—"),
        cell(e.principal === undefined ? null : String(e.principal)),
        cell(e.ip === undefined ? null : String(e.ip), "nowrap"),
        cell(e.server === undefined ? null : String(e.server)),
        cell(what || null, "tool"),
        cell(e.reason === undefined ? null : String(e.reason), "reason"),
        el("td", { className: "details" }, details ? el("code", {}, details) : "—"),
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 9, className: "empty" }, "No matching events yet.")));
    $("audit-table").tBodies[0].replaceChildren(...rows);
    fillDatalist("audit-events", events);
    fillDatalist("audit-servers", servers);
  }

  function fillDatalist(id, values) {
    const list = $(id);
    const known = new Set(Array.from(list.options, (o) => o.value));
    for (const value of [...values].sort()) if (!known.has(value)) list.append(el("option", { value }));
  }

  // ---- tokens ------------------------------------------------------------------------------------------

  async function refreshTokens() {
    try {
      const data = await api("GET", "/api/tokens");
      const grants = await oauthGrants();
      if (state.view !== "tokens") return;
      renderTokens([...(data.tokens || []), ...grants]);
    } catch (err) {
      if (err.status === 403) {
        $("tokens-table").tBodies[0].replaceChildren(
          el("tr", {}, el("td", { colspan: 6, className: "empty" }, "Tokens are for admins only.")));
        return;
      }
      report(err, "Tokens");
    }
  }

  // Grants of the built-in OAuth authorization server, shown as oauth:<client name> (none when it is off: 404).
  async function oauthGrants() {
    try {
      const data = await api("GET", "/api/grants");
      return (data.grants || []).map((g) => ({ ...g, grant: g.id }));
    } catch (err) {
      if (err.status === 404) return [];
      throw err;
    }
  }

  function renderTokens(tokens) {
    $("tokens-summary").textContent = `${tokens.length} token${tokens.length === 1 ? "" : "s"}`;
    const rows = tokens.map((t) => el("tr", { "data-token": t.name },
      el("th", { scope: "row" }, t.name),
      el("td", {}, ...(t.scopes && t.scopes.length ? t.scopes.map((s) => el("span", { className: "scope" }, s)) : ["(none)"])),
      cell(fmtTime(t.created), "nowrap"),
      cell(t.last_used ? fmtTime(t.last_used) : "never", "nowrap"),
      cell(t.expires ? fmtTime(t.expires) : "never", "nowrap"),
      el("td", { className: "actions" }, el("button", {
        type: "button",
        className: "btn small danger",
        "aria-label": `Revoke token ${t.name}`,
        onclick: (e) => revokeToken(t.name, e.currentTarget,
          t.grant ? `/api/grants/${encodeURIComponent(t.grant)}` : `/api/tokens/${encodeURIComponent(t.name)}`),
      }, "Revoke")),
    ));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, className: "empty" }, "No named tokens yet.")));
    $("tokens-table").tBodies[0].replaceChildren(...rows);
  }

  async function createToken(event) {
    event.preventDefault();
    const name = $("t-name").value.trim();
    const scopes = $("t-scopes").value.split(/[\s,]+/).filter(Boolean);
    const days = $("t-expires").value.trim();
    const body = { name, scopes };
    if (days) body.expires_days = Number(days);
    const button = $("t-create");
    button.disabled = true;
    try {
      const data = await api("POST", "/api/tokens", body);
      $("token-form").reset();
      showNewToken(data.name || name, data.token || "");
      setStatus(`Created token ${data.name || name}. Copy its value now; it is not shown again.`, "ok");
      refreshTokens();
    } catch (err) {
      report(err, "Create token");
    } finally {
      button.disabled = false;
    }
  }

  function showNewToken(name, value) {
    $("new-token-name").textContent = name;
    $("new-token-value").textContent = value;
    $("new-token").hidden = false;
    $("new-token-copy").focus();
  }

  function clearNewToken() {
    $("new-token-value").textContent = "";
    $("new-token-name").textContent = "";
    $("new-token").hidden = true;
  }

  async function copyNewToken() {
    const value = $("new-token-value").textContent;
    try {
      await navigator.clipboard.writeText(value);
      setStatus("Token copied to the clipboard.", "ok");
    } catch (err) {
      // No clipboard permission: select the text so the user can copy it by hand.
      const range = document.createRange();
      range.selectNodeContents($("new-token-value"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      setStatus("Copying is not allowed here; the value is selected, press Ctrl+C.", "error");
    }
  }

  async function revokeToken(name, button, path) {
    button.disabled = true;
    try {
      await api("DELETE", path);
      setStatus(`Revoked token ${name}.`, "ok");
    } catch (err) {
      button.disabled = false;
      report(err, "Revoke token");
      return;
    }
    refreshTokens();
  }

  // ---- wiring ------------------------------------------------------------------------------------------

  async function start() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("servers-refresh").addEventListener("click", () => refreshServers());
    $("sessions-refresh").addEventListener("click", () => refreshSessions());
    $("tokens-refresh").addEventListener("click", () => refreshTokens());
    $("token-form").addEventListener("submit", createToken);
    $("new-token-copy").addEventListener("click", copyNewToken);
    $("new-token-done").addEventListener("click", () => { clearNewToken(); $("t-name").focus(); });
    const filters = $("audit-filters");
    filters.addEventListener("submit", (e) => { e.preventDefault(); resetAudit(); });
    filters.addEventListener("reset", () => setTimeout(resetAudit, 0));
    $("f-outcome").addEventListener("change", resetAudit);
    $("f-live").addEventListener("change", () => {
      if ($("f-live").checked) pollAudit(state.audit.generation, false);
      else stopTimer();
      setStatus($("f-live").checked ? "Live audit updates on." : "Live audit updates paused.");
    });
    window.addEventListener("hashchange", render);
    await loadSession();
    render();
    document.body.dataset.ready = "1";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
