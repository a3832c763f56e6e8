// One scenario of Issue 11's feature matrix, run by a real TypeScript SDK client (1.x or the v2 client).
//
// Usage: node matrix_client.cjs SCENARIO CONFIG_JSON   (NODE_PATH=.tools/node_modules)
// CONFIG_JSON: {"sdk": "v1"|"v2", "negotiation": "auto"|null, "target": TARGET, ...scenario fields}; TARGET is
// {"url": ..., "auth": NAME|null, "refuseGet": bool} or {"command": [...], "envFrom": [variable names]}.
// Credentials come from the environment only, never from argv: MATRIX_AUTH_<NAME> holds a whole Authorization
// header value; a stdio target gets the variables named in envFrom (e.g. MCP_BASTION_TOKEN for `connect`).
// Prints one JSON object (what the client saw) on stdout; exits 1 with the error on stderr otherwise.
"use strict";

const WAIT_MS = 15000; // any single expected event; the Python side bounds the whole process too

function loadSdk(version) {
  if (version === "v1") {
    const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
    const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
    const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");
    const types = require("@modelcontextprotocol/sdk/types.js");
    const requests = {
      "sampling/createMessage": types.CreateMessageRequestSchema,
      "elicitation/create": types.ElicitRequestSchema,
      "roots/list": types.ListRootsRequestSchema,
    };
    const notes = {
      "notifications/message": types.LoggingMessageNotificationSchema,
      "notifications/resources/updated": types.ResourceUpdatedNotificationSchema,
    };
    return {
      Client,
      Http: StreamableHTTPClientTransport,
      Stdio: StdioClientTransport,
      onRequest: (client, method, handler) => client.setRequestHandler(requests[method], handler),
      onNote: (client, method, handler) => client.setNotificationHandler(notes[method], handler),
      callTool: (client, params, options) => client.callTool(params, undefined, options),
    };
  }
  const v2 = require("@modelcontextprotocol/client");
  const { StdioClientTransport } = require("@modelcontextprotocol/client/stdio");
  return {
    Client: v2.Client,
    Http: v2.StreamableHTTPClientTransport,
    Stdio: StdioClientTransport,
    onRequest: (client, method, handler) => client.setRequestHandler(method, handler),
    onNote: (client, method, handler) => client.setNotificationHandler(method, handler),
    callTool: (client, params, options) => client.callTool(params, options),
  };
}

const config = JSON.parse(process.argv[3]);
const sdk = loadSdk(config.sdk);
const refusedGets = { count: 0 };

function transportFor(target) {
  if (target.command) {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, LANG: "C.UTF-8" };
    for (const name of target.envFrom || []) env[name] = process.env[name];
    return new sdk.Stdio({ command: target.command[0], args: target.command.slice(1), env, stderr: "inherit" });
  }
  const headers = {};
  if (target.auth) headers.Authorization = process.env[`MATRIX_AUTH_${target.auth}`];
  const options = {
    requestInit: { headers },
    // Resumption after a dropped stream: retry soon, and not forever.
    reconnectionOptions: {
      initialReconnectionDelay: 100,
      maxReconnectionDelay: 1000,
      reconnectionDelayGrowFactor: 1.5,
      maxRetries: 3,
    },
  };
  if (target.refuseGet) {
    // A client that never opens the optional GET stream: the SDK is told "405, no such stream" without asking.
    options.fetch = async (url, init) => {
      if ((init?.method || "GET").toUpperCase() === "GET") {
        refusedGets.count += 1;
        return new Response(null, { status: 405 });
      }
      return fetch(url, init);
    };
  }
  return new sdk.Http(new URL(target.url), options);
}

class Seen {
  constructor() {
    this.logs = [];
    this.updates = [];
    this.waiters = [];
  }
  push(kind, value) {
    this[kind].push(value);
    for (const wake of this.waiters.splice(0)) wake();
  }
  async until(kind, predicate, what) {
    const deadline = Date.now() + WAIT_MS;
    while (!this[kind].some(predicate)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; ${kind} so far: ${JSON.stringify(this[kind])}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

const rootsAsked = { count: 0 };

async function connect(target, seen) {
  const capabilities = { sampling: {}, elicitation: {} };
  if (config.roots) capabilities.roots = {};
  const options = { capabilities };
  // The v2 client speaks 2025-era sessions unless told to negotiate (server/discover first, 2026-07-28 if offered).
  if (config.negotiation) options.versionNegotiation = { mode: config.negotiation };
  const client = new sdk.Client({ name: `matrix-${config.sdk}`, version: "1.0.0" }, options);
  sdk.onRequest(client, "sampling/createMessage", async (request) => ({
    role: "assistant",
    content: { type: "text", text: `reply to ${request.params.messages[0].content.text}` },
    model: `ts-${config.sdk}`,
  }));
  sdk.onRequest(client, "elicitation/create", async () => ({ action: "accept", content: { name: "Ada Lovelace" } }));
  if (config.roots) {
    sdk.onRequest(client, "roots/list", async () => {
      rootsAsked.count += 1;
      return { roots: config.roots };
    });
  }
  if (seen) {
    sdk.onNote(client, "notifications/message", (note) => seen.push("logs", note.params.data));
    sdk.onNote(client, "notifications/resources/updated", (note) => seen.push("updates", note.params.uri));
  }
  const transport = transportFor(target);
  await client.connect(transport);
  transports.set(client, transport);
  closers.set(client, async () => {
    // End the session (DELETE) as a well-behaved client does, so the gateway drops its subscriptions and level now.
    if (target.url) await transport.terminateSession().catch(() => undefined);
    await client.close();
  });
  return client;
}

const closers = new Map();
const transports = new Map();

function versionOf(client) {
  // v2 reports what it negotiated; the 1.x client's HTTP transport carries the version it sends.
  return client.getNegotiatedProtocolVersion?.() ?? transports.get(client).protocolVersion ?? null;
}

async function finish(...clients) {
  for (const client of clients) await closers.get(client)();
}

function texts(result) {
  return result.content.filter((block) => block.type === "text").map((block) => block.text);
}

async function callError(promise) {
  try {
    return { result: texts(await promise) };
  } catch (error) {
    return { code: error.code, message: String(error.message) };
  }
}

const LONG = "trigger-long-running-operation";

async function progress() {
  const client = await connect(config.target);
  const out = await longCall(client);
  await finish(client);
  return out;
}

async function longCall(client) {
  const seen = [];
  const options = { onprogress: (p) => seen.push(p.progress), resetTimeoutOnProgress: true, timeout: WAIT_MS };
  const calls = [sdk.callTool(client, { name: LONG, arguments: config.args }, options)];
  if (config.silentArgs) {
    // The same tool at the same time, asked without a progress token: the server reports nothing for it.
    calls.push(callError(sdk.callTool(client, { name: LONG, arguments: config.silentArgs }, { timeout: WAIT_MS })));
  }
  const [answer, silent] = await Promise.all(calls);
  const out = { progress: seen, text: texts(answer), version: versionOf(client) };
  if (silent) out.silent = silent;
  return out;
}

// server-everything's toggle-subscriber-updates flips one switch per child (all stdio clients are one session to it):
// "Started ..." sends one round of updates at once (then one every 5 s), "Stopped ..." ends them. These two set the
// state whatever it was, so a scenario never depends on how an earlier one left the shared child.
async function updatesRestart(client) {
  const toggle = () => sdk.callTool(client, { name: "toggle-subscriber-updates", arguments: {} });
  if (texts(await toggle())[0].startsWith("Stopped")) await toggle();
}

async function updatesStop(client) {
  const toggle = () => sdk.callTool(client, { name: "toggle-subscriber-updates", arguments: {} });
  if (texts(await toggle())[0].startsWith("Started")) await toggle();
}

async function subscriptions() {
  const [x, y] = config.uris;
  const aSeen = new Seen();
  const bSeen = new Seen();
  const a = await connect(config.target, aSeen);
  const b = await connect(config.target, bSeen);
  await a.subscribeResource({ uri: x });
  await b.subscribeResource({ uri: x });
  await a.unsubscribeResource({ uri: x });
  await updatesRestart(b); // one round at once: x, still held by B
  await bSeen.until("updates", (u) => u === x, `B's update for ${x}`);
  await a.subscribeResource({ uri: y });
  await updatesRestart(a); // one more round: x (for B) and y (for A)
  await aSeen.until("updates", (u) => u === y, `A's update for ${y}`);
  await updatesStop(a);
  await finish(a, b);
  return { a: aSeen.updates, b: bSeen.updates };
}

async function subscriptionsDirect() {
  const [x, y] = config.uris;
  const seen = new Seen();
  const client = await connect(config.target, seen);
  await client.subscribeResource({ uri: x });
  await updatesRestart(client);
  await seen.until("updates", (u) => u === x, `the update for ${x}`);
  await client.unsubscribeResource({ uri: x });
  await client.subscribeResource({ uri: y });
  await updatesRestart(client);
  await seen.until("updates", (u) => u === y, `the update for ${y}`);
  await updatesStop(client);
  await finish(client);
  return { updates: seen.updates };
}

async function logs() {
  const [b1, a1, a2, b2] = config.uris;
  const aSeen = new Seen();
  const bSeen = new Seen();
  const a = await connect({ ...config.target, auth: "A" }, aSeen);
  const b = await connect({ ...config.target, auth: "B" }, bSeen);
  const about = (uri) => (line) => String(line).includes(uri);
  await b.setLoggingLevel("info");
  await a.setLoggingLevel("error"); // the last to ask: a child told directly would now drop B's info lines
  await b.subscribeResource({ uri: b1 }); // the child logs the subscription at info, during B's only call
  await bSeen.until("logs", about(b1), `B's line about ${b1}`);
  await a.subscribeResource({ uri: a1 }); // info: below the error level A asked for
  await a.setLoggingLevel("info");
  await a.subscribeResource({ uri: a2 });
  await aSeen.until("logs", about(a2), `A's line about ${a2}`);
  await b.subscribeResource({ uri: b2 });
  await bSeen.until("logs", about(b2), `B's line about ${b2}`);
  await finish(a, b);
  return { a: aSeen.logs, b: bSeen.logs };
}

async function logsDirect() {
  const [, a1, a2] = config.uris;
  const seen = new Seen();
  const client = await connect(config.target, seen);
  await client.setLoggingLevel("error");
  await client.subscribeResource({ uri: a1 });
  await client.setLoggingLevel("info");
  await client.subscribeResource({ uri: a2 });
  await seen.until("logs", (line) => String(line).includes(a2), `the line about ${a2}`);
  await finish(client);
  return { logs: seen.logs };
}

async function serverRequests() {
  const client = await connect(config.target);
  const out = await askedBack(client);
  await finish(client);
  return out;
}

async function askedBack(client) {
  const sampled = await sdk.callTool(client, { name: "trigger-sampling-request", arguments: { prompt: config.prompt } });
  const elicited = await sdk.callTool(client, { name: "trigger-elicitation-request", arguments: {} });
  return { sampling: texts(sampled), elicitation: texts(elicited), refusedGets: refusedGets.count };
}

// server-everything asks a client that has roots for them 350 ms after the handshake, outside any call: through a
// gateway that request can only travel on the GET stream. Its log line says it stored the answer; then read them back.
async function rootsOutsideACall() {
  const seen = new Seen();
  const client = await connect(config.target, seen);
  await seen.until("logs", (line) => String(line).startsWith("Roots updated"), "the server's roots log line");
  const listed = await sdk.callTool(client, { name: "get-roots-list", arguments: {} });
  const out = { listed: texts(listed), asked: rootsAsked.count };
  await finish(client);
  return out;
}

async function progressAndServerRequests() {
  const client = await connect(config.target);
  const out = { long: await longCall(client), asked: await askedBack(client) };
  await finish(client);
  return out;
}

const scenarios = {
  progress,
  subscriptions,
  subscriptionsDirect,
  logs,
  logsDirect,
  serverRequests,
  progressAndServerRequests,
  rootsOutsideACall,
};

scenarios[process.argv[2]]()
  .then((out) => {
    process.stdout.write(JSON.stringify(out) + "\n");
    process.exit(0);
  })
  .catch((error) => {
    process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
    process.exit(1);
  });
