"""A small stdio MCP server shipped for the demo and the benchmark: tools echo/add/now, a resource, a prompt.

Standalone on purpose (standard library only, no import of the gateway): it is what a child looks like.
Run it as `python -m mcp_bastion.demo_server`.
"""

import json
import os
import time
from collections.abc import Callable
from typing import Any

PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
TOOLS = [
    {
        "name": "echo",
        "description": "Return the text you send.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
    {"name": "now", "description": "The server's current UTC time.", "inputSchema": {"type": "object"}},
]
RESOURCE = {"uri": "demo://readme", "name": "readme", "mimeType": "text/plain", "description": "About this demo."}
README = "This is the mcp-bastion demo server. Try the echo, add and now tools."
PROMPT = {
    "name": "greet",
    "description": "Greet someone by name.",
    "arguments": [{"name": "name", "description": "Who to greet", "required": True}],
}


def text(value: str) -> dict[str, Any]:
    """A tool result holding one text item."""
    return {"content": [{"type": "text", "text": value}], "isError": False}


def call_tool(params: dict[str, Any]) -> dict[str, Any]:
    """Run one of the demo tools."""
    args = params.get("arguments") or {}
    name = params.get("name")
    if name == "echo":
        return text(str(args.get("text", "")))
    if name == "add":
        return text(str(args.get("a", 0) + args.get("b", 0)))
    if name == "now":
        return text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return {"content": [{"type": "text", "text": f"unknown tool {name!r}"}], "isError": True}


def greet(params: dict[str, Any]) -> dict[str, Any]:
    """The greet prompt."""
    who = (params.get("arguments") or {}).get("name", "you")
    return {"messages": [{"role": "user", "content": {"type": "text", "text": f"Say hello to {who}."}}]}


def answer(method: str, params: dict[str, Any]) -> Any:
    """The result of a request, or raise KeyError for an unknown method."""
    if method == "initialize":
        asked = params.get("protocolVersion")
        return {
            "protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1],
            "capabilities": {"tools": {"listChanged": False}, "resources": {}, "prompts": {}},
            "serverInfo": {"name": "bastion-demo", "version": "1.0.0"},
            "instructions": "A demo server: echo, add, now; one resource; one prompt.",
        }
    handlers: dict[str, Callable[[], Any]] = {
        "ping": lambda: {},
        "tools/list": lambda: {"tools": TOOLS},
        "tools/call": lambda: call_tool(params),
        "resources/list": lambda: {"resources": [RESOURCE]},
        "resources/templates/list": lambda: {"resourceTemplates": []},
        "resources/read": lambda: {"contents": [{"uri": RESOURCE["uri"], "mimeType": "text/plain", "text": README}]},
        "prompts/list": lambda: {"prompts": [PROMPT]},
        "prompts/get": lambda: greet(params),
    }
    return handlers[method]()


def reply_to(line: bytes) -> bytes:
    """The answer line to one request line (empty for notifications, responses and garbage)."""
    try:
        message = json.loads(line)
    except ValueError:
        return b""
    if not isinstance(message, dict) or "id" not in message or "method" not in message:
        return b""  # notifications and responses need no answer here
    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
    try:
        reply["result"] = answer(message["method"], message.get("params") or {})
    except KeyError:
        reply["error"] = {"code": -32601, "message": f"Method not found: {message['method']}"}
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


def main() -> None:
    """Serve MCP over stdin/stdout until stdin closes: everything that arrived together is answered in one write."""
    pending = b""
    while chunk := os.read(0, 1 << 16):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(reply_to(line) for line in lines if line.strip())
        while out:
            out = out[os.write(1, out) :]


if __name__ == "__main__":
    main()
