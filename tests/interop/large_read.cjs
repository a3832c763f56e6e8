// Issue 11 item 1: a real TypeScript SDK 1.x client reads one file through server-filesystem's read_text_file.
//
// Usage: node large_read.cjs CONFIG_JSON   (NODE_PATH=.tools/node_modules)
// CONFIG_JSON: {"target": {"url": ...} | {"command": [...]}, "path": FILE, "out": OUTPUT_FILE}
// The text the client got is written to OUTPUT_FILE as UTF-8 (a 10 MiB answer does not go through stdout); stdout is
// one JSON object: {"ok": true, "chars": N, "structuredSame": bool} or {"ok": false, "code": ..., "message": ...}.
// Exits 1 with the error on stderr when the client itself fails (connect, timeout).
"use strict";

const fs = require("node:fs");
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

const CALL_TIMEOUT_MS = 60000; // one 10 MiB read takes well under a second; the Python side bounds the process too
// The SDK's stdio client drops the connection past a 10 MiB line by default (ReadBuffer, STDIO_DEFAULT_MAX_BUFFER_SIZE):
// the direct baseline raises it to the gateway's default line cap. Streamable HTTP has no such cap.
const STDIO_MAX_BUFFER_BYTES = 64 * 1024 * 1024;

function transportFor(target) {
  if (target.command) {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, LANG: "C.UTF-8" };
    const [command, ...args] = target.command;
    return new StdioClientTransport({ command, args, env, stderr: "ignore", maxBufferSize: STDIO_MAX_BUFFER_BYTES });
  }
  return new StreamableHTTPClientTransport(new URL(target.url));
}

async function main() {
  const config = JSON.parse(process.argv[2]);
  const client = new Client({ name: "large-read", version: "1.0.0" });
  await client.connect(transportFor(config.target));
  try {
    let answer;
    try {
      answer = await client.callTool({ name: "read_text_file", arguments: { path: config.path } }, undefined, {
        timeout: CALL_TIMEOUT_MS,
      });
    } catch (error) {
      process.stdout.write(JSON.stringify({ ok: false, code: error.code, message: String(error.message) }));
      return;
    }
    const text = answer.content[0].text;
    fs.writeFileSync(config.out, text, "utf8");
    const structuredSame = answer.structuredContent !== undefined && answer.structuredContent.content === text;
    process.stdout.write(JSON.stringify({ ok: true, chars: text.length, structuredSame }));
  } finally {
    await client.close();
  }
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exit(1);
});
