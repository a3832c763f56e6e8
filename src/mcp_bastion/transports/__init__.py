"""The MCP HTTP transports, all on one server; the era is chosen per request.

http        raw ASGI request/response helpers shared by every transport (no framework on the hot path)
sse         HTTP+SSE, 2024-11-05: GET .../sse then POST .../messages?session_id=
streamable  Streamable HTTP with sessions, 2025-03-26 … 2025-11-25: POST/GET/DELETE with Mcp-Session-Id
modern      stateless Streamable HTTP, 2026-07-28: one self-contained POST per request
"""
